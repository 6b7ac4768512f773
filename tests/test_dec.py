"""Tests for hemoe_sk.cluster.DECClusterer (DEC / IDEC)."""

import io
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from _helpers import DivergingAutoEncoder, diverging_autoencoder
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import normalized_mutual_info_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from hemoe_sk.cluster import DECClusterer
from hemoe_sk.cluster import dec as dec_module
from hemoe_sk.cluster._autoencoder import _ArrayBatches
from hemoe_sk.nn.training import DivergenceError, torch_seed


def tiny(**params):
    """A configuration that fits in a few tens of milliseconds."""
    base = dict(
        n_clusters=2,
        hidden_dims=(8,),
        embedding_dim=2,
        pretrain_epochs=3,
        max_iter=20,
        update_interval=5,
        batch_size=16,
        n_init=2,
        random_state=0,
    )
    base.update(params)
    return DECClusterer(**base)


def clustering_accuracy(y_true, y_pred):
    """Best one-to-one matching of clusters to classes (Hungarian)."""
    k = int(max(y_true.max(), y_pred.max())) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(y_true)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=120, centers=3, n_features=5, random_state=0)
    return MinMaxScaler().fit_transform(X).astype(np.float64), y


def test_clustering_attributes_and_shapes(blobs):
    X, y = blobs
    dec = tiny(n_clusters=3, max_iter=60).fit(X)
    q = dec.transform(X)
    assert q.shape == (len(X), 3)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(q > 0)
    np.testing.assert_array_equal(dec.predict_proba(X), q)
    np.testing.assert_array_equal(dec.labels_, dec.predict(X))
    np.testing.assert_array_equal(dec.labels_, q.argmax(axis=1))
    assert dec.labels_.dtype == np.int64
    assert dec.cluster_centers_.shape == (3, 2)
    assert dec.embed(X).shape == (len(X), 2)
    assert 1 <= dec.n_iter_ <= 60
    hist = dec.history_
    assert len(hist["pretrain_loss"]) == 3
    n_updates = len(hist["iteration"])
    assert n_updates >= 2
    for key in ("delta_label", "loss", "kl", "reconstruction"):
        assert len(hist[key]) == n_updates
    assert hist["iteration"][-1] == dec.n_iter_
    # Three well separated blobs are found.
    assert normalized_mutual_info_score(y, dec.labels_) > 0.8


def test_stops_early_on_tol(blobs):
    X, _ = blobs
    # tol=1: any label change fraction < 1 stops at the second update.
    dec = tiny(n_clusters=3, max_iter=500, update_interval=5, tol=1.0).fit(X)
    assert dec.n_iter_ == 5
    dec = tiny(n_clusters=3, max_iter=23, update_interval=5, tol=0.0).fit(X)
    assert dec.n_iter_ == 23


def test_max_iter_zero_is_kmeans_on_codes(blobs):
    X, _ = blobs
    dec = tiny(n_clusters=3, max_iter=0).fit(X)
    assert dec.n_iter_ == 0
    codes = dec.embed(X)
    seeds = dec._seeds()
    km = KMeans(3, n_init=2, random_state=seeds[1]).fit(codes)
    np.testing.assert_allclose(
        dec.cluster_centers_, km.cluster_centers_.astype(np.float32), rtol=1e-6
    )


def test_same_random_state_same_result(blobs):
    X, _ = blobs
    a = tiny(n_clusters=3, gamma=0.1).fit(X)
    b = tiny(n_clusters=3, gamma=0.1).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = tiny(n_clusters=3, gamma=0.1, random_state=2).fit(X)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_global_rng_unchanged(blobs):
    X, _ = blobs
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    tiny(n_clusters=3).fit(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0]
    np.testing.assert_array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


def test_random_state_none_leaves_numpy_global_rng_alone(blobs):
    X, _ = blobs
    np.random.seed(7)
    expected = np.random.get_state()[1].copy()
    a = tiny(n_clusters=3, random_state=None).fit(X)
    np.testing.assert_array_equal(np.random.get_state()[1], expected)
    assert a.transform(X).shape == (len(X), 3)


def test_failed_fit_keeps_previous_model(blobs):
    X, _ = blobs
    dec = tiny(n_clusters=3).fit(X)
    q = dec.transform(X)
    with pytest.raises(ValueError, match="n_samples=2"):
        dec.fit(X[:2])
    np.testing.assert_array_equal(dec.transform(X), q)
    assert dec.n_features_in_ == X.shape[1]


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_round_trip(blobs, dump):
    X, _ = blobs

    def round_trip(obj):
        if dump == "pickle":
            return pickle.loads(pickle.dumps(obj))
        buf = io.BytesIO()
        joblib.dump(obj, buf)
        buf.seek(0)
        return joblib.load(buf)

    unfitted = round_trip(tiny(n_clusters=3))
    fitted = tiny(n_clusters=3).fit(X)
    np.testing.assert_array_equal(unfitted.fit(X).transform(X), fitted.transform(X))
    restored = round_trip(fitted)
    np.testing.assert_array_equal(restored.transform(X), fitted.transform(X))
    np.testing.assert_array_equal(restored.embed(X), fitted.embed(X))
    np.testing.assert_array_equal(restored.labels_, fitted.labels_)


def test_pipeline_with_scaler(blobs):
    X, y = blobs
    X = X * 50 - 7
    pipe = make_pipeline(MinMaxScaler(), tiny(n_clusters=3, max_iter=60))
    labels = pipe.fit_predict(X)
    assert normalized_mutual_info_score(y, labels) > 0.8
    np.testing.assert_array_equal(pipe.predict(X), labels)
    q = pipe.transform(X)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_set_output_pandas_and_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    X, _ = blobs
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    dec = tiny(n_clusters=3).set_output(transform="pandas").fit(df)
    np.testing.assert_array_equal(dec.feature_names_in_, df.columns)
    names = ["decclusterer0", "decclusterer1", "decclusterer2"]
    np.testing.assert_array_equal(dec.get_feature_names_out(), names)
    out = dec.transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == names
    np.testing.assert_allclose(out.to_numpy().sum(axis=1), 1.0, atol=1e-12)
    # Like GaussianMixture, predict and predict_proba stay numpy arrays.
    proba = dec.predict_proba(df)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_array_equal(proba, out.to_numpy())
    labels = dec.predict(df)
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, dec.labels_)
    assert isinstance(dec.fit_transform(df), pd.DataFrame)


def _state(net):
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def test_pretrain_reuse_hook(blobs):
    X, _ = blobs
    dec = tiny(n_clusters=3, gamma=0.1)
    full = clone(dec).fit(X)

    base = clone(dec).pretrain(X)
    assert hasattr(base, "autoencoder_")
    assert not hasattr(base, "cluster_centers_")
    assert base.embed(X).shape == (len(X), 2)
    before = _state(base.autoencoder_)
    n_epochs = len(base.autoencoder_.history)

    reused = clone(dec).fit(X, autoencoder=base.autoencoder_)
    # Pretraining did not run again: the refined autoencoder is a copy of the
    # given one, whose skorch history is the given one's, epoch by epoch, to
    # the timings (a new pretraining would have recorded its own).
    assert reused.history_["pretrain_loss"] == []
    assert reused.autoencoder_ is not base.autoencoder_
    assert reused.autoencoder_.history.to_list() == base.autoencoder_.history.to_list()
    # Same seeds: identical to a fit that pretrained itself.
    np.testing.assert_array_equal(reused.labels_, full.labels_)
    np.testing.assert_allclose(reused.transform(X), full.transform(X), rtol=1e-6)

    for k in (2, 4):
        other = clone(dec).set_params(n_clusters=k)
        other.fit(X, autoencoder=base.autoencoder_)
        assert other.transform(X).shape == (len(X), k)
    labels = clone(dec).fit_predict(X, autoencoder=base.autoencoder_)
    np.testing.assert_array_equal(labels, full.labels_)

    # The passed net is never modified.
    after = _state(base.autoencoder_)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert len(base.autoencoder_.history) == n_epochs
    # ... while the refined copy did change.
    refined = _state(reused.autoencoder_)
    assert any(not torch.equal(before[k], refined[k]) for k in before)


def test_reuse_hook_accepts_fitted_autoencoder(blobs):
    X, _ = blobs
    first = tiny(n_clusters=3).fit(X)
    second = tiny(n_clusters=2).fit(X, autoencoder=first.autoencoder_)
    assert second.cluster_centers_.shape == (2, 2)


def test_reuse_hook_validates_autoencoder(blobs):
    X, _ = blobs
    base = tiny().pretrain(X)
    with pytest.raises(ValueError, match="expects 5 input features, but X has 3"):
        tiny().fit(X[:, :3], autoencoder=base.autoencoder_)
    unfitted = tiny()._build_autoencoder(X.shape[1], "cpu")
    with pytest.raises(ValueError, match="not fitted"):
        tiny().fit(X, autoencoder=unfitted)
    with pytest.raises(TypeError, match="fitted skorch net"):
        tiny().fit(X, autoencoder=base)


def test_too_few_samples():
    X = np.random.RandomState(0).rand(4, 3)
    with pytest.raises(ValueError, match="n_samples=4 should be >= n_clusters=5"):
        tiny(n_clusters=5).fit(X)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), ValueError, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]]), ValueError, "infinity"),
        (np.zeros((4, 2, 2)), ValueError, "dim"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.ones((4, 2)) + 1j, ValueError, "[Cc]omplex"),
        (np.arange(5.0), ValueError, "2D array"),
    ],
)
def test_bad_input(X, error, match):
    with pytest.raises(error, match=match):
        tiny().fit(X)


def test_bad_hidden_dims(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="hidden_dims"):
        tiny(hidden_dims=(8, 0)).fit(X)
    with pytest.raises(ValueError, match="hidden_dims"):
        tiny(hidden_dims="8").fit(X)


def test_empty_clusters_are_reported_not_nan():
    # Three distinct points and five clusters: some must be empty.
    X = np.repeat(np.eye(3), 10, axis=0)
    with pytest.warns(ConvergenceWarning, match="no training sample"):
        dec = tiny(n_clusters=5).fit(X)
    q = dec.transform(X)
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    assert np.unique(dec.labels_).size <= 3


def test_constant_data_does_not_crash():
    X = np.ones((12, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dec = tiny(n_clusters=3).fit(X)
    assert np.all(np.isfinite(dec.transform(X)))


def test_pretraining_divergence_names_stage():
    # Finite inputs whose squared error overflows float32.
    X = np.full((20, 3), 1e25)
    X[::2] *= -1
    with pytest.warns(RuntimeWarning, match="pretraining"):
        with pytest.raises(RuntimeError, match="DECClusterer pretraining.*diverged"):
            tiny().fit(X)


def test_refinement_divergence_retry_then_error(blobs):
    X, _ = blobs
    # An autoencoder whose first refinement step diverges: the refinement
    # starts again at a tenth of the learning rate, from the given weights.
    net = diverging_autoencoder(X, budget=1)
    with pytest.warns(RuntimeWarning, match="refinement.*lr=0.0001"):
        dec = tiny(n_clusters=3).fit(X, autoencoder=net)
    assert DivergingAutoEncoder.budget == 0  # the diverging step ran
    assert np.all(np.isfinite(dec.transform(X)))
    assert dec.history_["iteration"][0] == 0  # the failed attempt's history is gone
    assert dec.history_["iteration"][-1] == dec.n_iter_

    # One that always diverges: an error naming the stage, after one retry.
    net = diverging_autoencoder(X, budget=10**9)
    with pytest.warns(RuntimeWarning, match="refinement"):
        with pytest.raises(
            DivergenceError, match="DECClusterer refinement: .*10x lower learning rate"
        ):
            tiny(n_clusters=3).fit(X, autoencoder=net)


def test_verbose(blobs, capsys):
    X, _ = blobs
    tiny(n_clusters=3).fit(X)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    dec = tiny(n_clusters=3, verbose=1).fit(X)
    out, err = capsys.readouterr()
    assert "pretraining" in err and "refinement" in err
    # The progress bar does not travel with the pickle.
    restored = pickle.loads(pickle.dumps(dec))
    np.testing.assert_array_equal(restored.transform(X), dec.transform(X))


def test_unfitted_errors(blobs):
    from sklearn.exceptions import NotFittedError

    X, _ = blobs
    dec = tiny()
    for method in (dec.predict, dec.transform, dec.predict_proba, dec.embed):
        with pytest.raises(NotFittedError):
            method(X)
    # After pretrain only: codes yes, clusters no.
    dec.pretrain(X)
    assert dec.embed(X).shape == (len(X), 2)
    with pytest.raises(NotFittedError):
        dec.predict(X)


@pytest.mark.slow
def test_quality_on_digits_default_parameters():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    labels = DECClusterer(n_clusters=10, random_state=0).fit_predict(X)
    nmi = normalized_mutual_info_score(y, labels)
    acc = clustering_accuracy(y, labels)
    km = KMeans(10, n_init=10, random_state=0).fit_predict(X)
    nmi_km = normalized_mutual_info_score(y, km)
    acc_km = clustering_accuracy(y, km)
    assert nmi >= 0.80 and acc >= 0.80, (nmi, acc)
    assert nmi > nmi_km and acc > acc_km, (nmi, acc, nmi_km, acc_km)


def test_reseed_empty_clusters_moves_centres():
    Z = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [9.0, 0.0]], dtype=np.float32)
    labels = np.zeros(4, dtype=np.int64)
    centers = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0]]))
    optimizer = torch.optim.Adam([centers], lr=0.1)
    centers.sum().backward()
    optimizer.step()  # creates Adam moments, which must be reset
    moved = dec_module._reseed_empty_clusters(Z, labels, centers, optimizer, 3)
    assert moved == 2
    # The two codes farthest from centre 0 become the new centres.
    np.testing.assert_allclose(centers.detach().numpy()[1:], Z[[3, 2]])
    assert torch.all(optimizer.state[centers]["exp_avg"][1:] == 0)
    assert torch.any(optimizer.state[centers]["exp_avg"][0] != 0)
    # Nothing to move when every cluster has a sample.
    assert dec_module._reseed_empty_clusters(Z, np.array([0, 0, 2, 1]), centers,
                                             optimizer, 3) == 0
    # Duplicate codes only: no centre can be moved.
    Zdup = np.zeros((4, 2), dtype=np.float32)
    centers2 = torch.nn.Parameter(torch.zeros(3, 2))
    opt2 = torch.optim.Adam([centers2])
    assert dec_module._reseed_empty_clusters(Zdup, labels, centers2, opt2, 3) == 0


def test_array_batches_cover_every_row_once():
    from skorch.dataset import Dataset

    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    loader = _ArrayBatches(Dataset(X, X), batch_size=4, shuffle=True)
    assert len(loader) == 3
    with torch_seed(0):
        batches = list(loader)
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    rows = torch.cat([xb for xb, _ in batches]).numpy()
    assert not np.array_equal(rows, X)  # shuffled ...
    np.testing.assert_array_equal(np.sort(rows[:, 0]), X[:, 0])  # ... each once
    for xb, yb in batches:
        assert torch.equal(xb, yb)
    # Anything that is not an in-memory array goes through a DataLoader.
    tensors = torch.utils.data.TensorDataset(torch.from_numpy(X))
    fallback = list(_ArrayBatches(tensors, batch_size=4))
    assert [len(b[0]) for b in fallback] == [4, 4, 2]
