"""Tests for hemoe_sk.cluster.MixtureOfAutoencodersClusterer (MIXAE)."""

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
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import normalized_mutual_info_score
from sklearn.preprocessing import MinMaxScaler

from hemoe_sk.cluster import mixae as mixae_module
from hemoe_sk.cluster.dec import DECClusterer
from hemoe_sk.cluster.mixae import MixtureOfAutoencodersClusterer
from hemoe_sk.cluster.routing import hard_assign, soft_assign


def tiny(**params):
    """A configuration that fits in well under a second."""
    base = dict(
        n_clusters=2,
        hidden_dims=(8,),
        assignment_hidden_dims=(8,),
        pretrain_epochs=3,
        init_epochs=3,
        max_epochs=5,
        batch_size=16,
        n_init=2,
        random_state=0,
    )
    base.update(params)
    return MixtureOfAutoencodersClusterer(**base)


def clustering_accuracy(y_true, y_pred):
    """Best one-to-one matching of clusters to classes (Hungarian)."""
    k = int(max(y_true.max(), y_pred.max())) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(y_true)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, centers=3, n_features=8, random_state=0)
    return MinMaxScaler().fit_transform(X), y


def test_attributes_shapes_and_consistency(blobs):
    X, y = blobs
    model = tiny(n_clusters=3, max_epochs=20, tol=0.0).fit(X)
    q = model.transform(X)
    assert q.shape == (len(X), 3)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.predict_proba(X), q)
    errors = model.reconstruction_error(X)
    assert errors.shape == (len(X), 3) and np.all(errors >= 0)
    # Hard routing = argmax of soft routing = best reconstruction.
    labels = model.predict(X)
    np.testing.assert_array_equal(labels, q.argmax(axis=1))
    np.testing.assert_array_equal(labels, errors.argmin(axis=1))
    np.testing.assert_array_equal(model.labels_, labels)
    assert model.labels_.dtype == np.int64
    # q is the Gaussian posterior written in the docstring.
    logits = -X.shape[1] * errors / (2 * model.noise_variance_)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(q, expected / expected.sum(axis=1, keepdims=True),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.noise_variance_, errors.min(axis=1).mean())
    p = model.assignment_proba(X)
    assert p.shape == (len(X), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    # The node reads it like any router.
    np.testing.assert_allclose(soft_assign(model, X, 3), q, atol=1e-12)
    np.testing.assert_array_equal(hard_assign(model, X), labels)

    assert len(model.module_.autoencoders) == 3
    assert model.n_iter_ == 20
    hist = model.history_
    assert len(hist["pretrain_loss"]) == 3
    assert len(hist["init_loss"]) == 3
    for key in ("loss", "reconstruction", "sample_entropy", "batch_entropy",
                "delta_label"):
        assert len(hist[key]) == 20, key
        assert np.all(np.isfinite(hist[key])), key
    # The batch-wise entropy keeps the three clusters in use.
    assert np.bincount(model.labels_, minlength=3).min() > 0
    assert model.reconstruction_scale_ > 0
    assert normalized_mutual_info_score(y, model.labels_) > 0.8


def test_loss_matches_the_paper():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    errors = torch.tensor([[0.1, 0.4], [0.3, 0.2], [0.5, 0.5]])
    loss, (rec, h_sample, h_batch) = mixae_module._mixae_loss(
        logits, errors, scale=2.0, alpha=0.3, beta=0.7
    )
    p = torch.softmax(logits, dim=1).numpy()
    e = errors.numpy()
    want_rec = (p * e).sum(axis=1).mean() / 2.0
    want_hs = -(p * np.log(p)).sum(axis=1).mean()
    pbar = p.mean(axis=0)
    want_hb = -(pbar * np.log(pbar)).sum()
    np.testing.assert_allclose(rec.item(), want_rec, rtol=1e-6)
    np.testing.assert_allclose(h_sample.item(), want_hs, rtol=1e-6)
    np.testing.assert_allclose(h_batch.item(), want_hb, rtol=1e-6)
    np.testing.assert_allclose(
        loss.item(), want_rec + 0.3 * want_hs - 0.7 * want_hb, rtol=1e-6
    )


def test_stops_early_on_tol(blobs):
    X, _ = blobs
    model = tiny(n_clusters=3, max_epochs=50, tol=1.0).fit(X)
    assert model.n_iter_ == 1
    model = tiny(n_clusters=3, max_epochs=4, tol=0.0).fit(X)
    assert model.n_iter_ == 4


def test_same_random_state_same_result(blobs):
    X, _ = blobs
    a = tiny(n_clusters=3).fit(X)
    b = tiny(n_clusters=3).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = tiny(n_clusters=3, random_state=1).fit(X)
    assert not np.allclose(a.reconstruction_error(X), c.reconstruction_error(X))


def test_global_rng_unchanged(blobs):
    X, _ = blobs
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    tiny(n_clusters=3).fit(X)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])


def test_pickle_round_trip(blobs, tmp_path):
    X, _ = blobs
    unfitted = tiny()
    assert pickle.loads(pickle.dumps(unfitted)).get_params() == unfitted.get_params()
    model = tiny(n_clusters=3).fit(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.transform(X), model.transform(X))
    np.testing.assert_array_equal(restored.labels_, model.labels_)
    path = tmp_path / "mixae.joblib"
    joblib.dump(model, path)
    np.testing.assert_array_equal(joblib.load(path).predict(X), model.predict(X))
    buf = io.BytesIO()
    torch.save(model, buf)  # torch's own pickler works too
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


def test_set_output_pandas_and_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    X, _ = blobs
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = tiny(n_clusters=3).set_output(transform="pandas").fit(df)
    names = [f"mixtureofautoencodersclusterer{i}" for i in range(3)]
    np.testing.assert_array_equal(model.get_feature_names_out(), names)
    out = model.transform(df)
    assert list(out.columns) == names
    np.testing.assert_allclose(out.to_numpy().sum(axis=1), 1.0, atol=1e-12)


def _state(net):
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def test_pretrain_reuse_hook(blobs):
    X, _ = blobs
    model = tiny(n_clusters=3)
    full = clone(model).fit(X)

    base = clone(model).pretrain(X)
    assert hasattr(base, "autoencoder_") and not hasattr(base, "module_")
    before = _state(base.autoencoder_)

    reused = clone(model).fit(X, autoencoder=base.autoencoder_)
    # Pretraining did not run again: the adopted autoencoder's skorch history
    # is the given one's, epoch by epoch, to the timings.
    assert reused.history_["pretrain_loss"] == []
    assert reused.autoencoder_.history.to_list() == base.autoencoder_.history.to_list()
    # Same seeds: identical to the fit that pretrained itself.
    np.testing.assert_array_equal(reused.labels_, full.labels_)
    np.testing.assert_allclose(reused.transform(X), full.transform(X), rtol=1e-6)
    for k in (2, 4):
        with warnings.catch_warnings():
            # 4 clusters on 3 blobs may leave one empty.
            warnings.simplefilter("ignore", ConvergenceWarning)
            other = clone(model).set_params(n_clusters=k).fit(
                X, autoencoder=base.autoencoder_
            )
        assert other.transform(X).shape == (len(X), k)
    np.testing.assert_array_equal(
        clone(model).fit_predict(X, autoencoder=base.autoencoder_), full.labels_
    )
    # The given net is never modified.
    after = _state(base.autoencoder_)
    for key in before:
        assert torch.equal(before[key], after[key]), key

    # A DECClusterer's pretrained autoencoder is accepted too.
    dec = DECClusterer(hidden_dims=(8,), embedding_dim=2, pretrain_epochs=2,
                       random_state=0).pretrain(X)
    from_dec = tiny(n_clusters=3).fit(X, autoencoder=dec.autoencoder_)
    assert from_dec.module_.autoencoders[0].encoder[-1].out_features == 2


def test_reuse_hook_validates_autoencoder(blobs):
    X, _ = blobs
    base = tiny().pretrain(X)
    with pytest.raises(ValueError, match="expects 8 input features, but X has 3"):
        tiny().fit(X[:, :3], autoencoder=base.autoencoder_)
    unfitted = tiny()._build_autoencoder(X.shape[1], "cpu")
    with pytest.raises(ValueError, match="not fitted"):
        tiny().fit(X, autoencoder=unfitted)
    with pytest.raises(TypeError, match="fitted skorch net"):
        tiny().fit(X, autoencoder=base)


def test_embedding_dim_auto():
    model = tiny()
    assert model._embedding_dim(2) == 1
    assert model._embedding_dim(32) == 8
    assert model._embedding_dim(64) == 10
    assert tiny(embedding_dim=3)._embedding_dim(64) == 3


def test_too_few_samples():
    X = np.random.RandomState(0).rand(4, 3)
    with pytest.raises(ValueError, match="n_samples=4 should be >= n_clusters=5"):
        tiny(n_clusters=5).fit(X)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 1.0]]), "infinity"),
        (np.zeros((4, 2, 2)), "dim"),
        (np.zeros((0, 3)), "0 sample"),
        (np.arange(5.0), "2D array"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        tiny().fit(X)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(hidden_dims=(8, 0)), "hidden_dims"),
        (dict(hidden_dims="8"), "hidden_dims"),
        (dict(assignment_hidden_dims=(-1,)), "assignment_hidden_dims"),
        (dict(max_epochs=0), "max_epochs"),
        (dict(embedding_dim="wide"), "embedding_dim"),
        (dict(alpha=-1.0), "alpha"),
    ],
)
def test_bad_params(blobs, params, match):
    X, _ = blobs
    with pytest.raises(ValueError, match=match):
        tiny(**params).fit(X)


def test_empty_clusters_are_reported_not_nan():
    # Three distinct points and five clusters: some must be empty.
    X = np.repeat(np.eye(3), 10, axis=0)
    with pytest.warns(ConvergenceWarning, match="reconstruct no training sample"):
        model = tiny(n_clusters=5).fit(X)
    q = model.transform(X)
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    assert np.unique(model.labels_).size <= 3


def test_constant_data_does_not_crash():
    X = np.ones((12, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = tiny(n_clusters=3).fit(X)
    assert np.all(np.isfinite(model.transform(X)))


def test_pretraining_divergence_names_stage():
    X = np.full((20, 3), 1e25)
    X[::2] *= -1
    with pytest.warns(RuntimeWarning, match="pretraining"):
        with pytest.raises(RuntimeError, match="pretraining.*diverged"):
            tiny().fit(X)


def test_joint_training_divergence_retry_then_error(blobs):
    X, _ = blobs
    # Autoencoders whose first joint training step diverges: the joint
    # training starts again at a tenth of the learning rate.
    net = diverging_autoencoder(X, budget=1)
    with pytest.warns(RuntimeWarning, match="joint training.*lr=0.0001"):
        model = tiny(n_clusters=3).fit(X, autoencoder=net)
    assert DivergingAutoEncoder.budget == 0  # the diverging step ran
    assert np.all(np.isfinite(model.transform(X)))
    assert len(model.history_["loss"]) == model.n_iter_
    assert len(model.history_["init_loss"]) == tiny().init_epochs  # one attempt's

    net = diverging_autoencoder(X, budget=10**9)
    with pytest.warns(RuntimeWarning, match="joint training"):
        with pytest.raises(
            RuntimeError, match="MixtureOfAutoencodersClusterer joint training.*diverged"
        ):
            tiny(n_clusters=3).fit(X, autoencoder=net)


def test_verbose(blobs, capsys):
    X, _ = blobs
    tiny(n_clusters=3).fit(X)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    model = tiny(n_clusters=3, verbose=1).fit(X)
    out, err = capsys.readouterr()
    assert "pretraining" in err and "joint training" in err
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.transform(X), model.transform(X))


def test_unfitted_errors(blobs):
    X, _ = blobs
    model = tiny()
    for method in (model.predict, model.transform, model.predict_proba,
                   model.reconstruction_error, model.assignment_proba):
        with pytest.raises(NotFittedError):
            method(X)
    model.pretrain(X)
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_wrong_number_of_features(blobs):
    X, _ = blobs
    model = tiny().fit(X)
    with pytest.raises(ValueError, match="X has 3 features"):
        model.predict(X[:, :3])


@pytest.mark.slow
def test_quality_on_digits_default_parameters():
    # Measured (seeds 0, 1, 2): MixAE NMI 0.778 / 0.774 / 0.775 and
    # ACC 0.823 / 0.830 / 0.826; k-means NMI 0.742 / 0.739 / 0.741,
    # ACC 0.792 / 0.793 / 0.790.
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    model = MixtureOfAutoencodersClusterer(n_clusters=10, random_state=0)
    labels = model.fit_predict(X)
    nmi = normalized_mutual_info_score(y, labels)
    acc = clustering_accuracy(y, labels)
    km = KMeans(10, n_init=10, random_state=0).fit_predict(X)
    nmi_km = normalized_mutual_info_score(y, km)
    acc_km = clustering_accuracy(y, km)
    assert nmi >= 0.76 and acc >= 0.80, (nmi, acc)
    assert nmi > nmi_km and acc > acc_km, (nmi, acc, nmi_km, acc_km)
