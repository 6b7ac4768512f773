"""Tests for the honest controls in hemoe_sk.baselines."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from hemoe_sk.baselines import FineTunedEnsembleClassifier
from hemoe_sk.nn.modules import MLPEmbedder


def tiny(**params):
    """A configuration small enough for the scikit-learn checks, yet one that
    learns their toy problems (check_classifiers_train wants accuracy > 0.83)."""
    defaults = dict(
        n_estimators=2,
        max_epochs=10,
        finetune_epochs=2,
        lr=2e-2,
        batch_size=32,
        random_state=0,
        embedder__hidden_dims=(16,),
        embedder__dropout=0.0,
    )
    defaults.update(params)
    return FineTunedEnsembleClassifier(**defaults)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_embedder_params_survive_clone_and_reach_the_module(iris):
    X, y = iris
    clf = tiny(embedder__hidden_dims=(7,))
    assert clf.get_params()["embedder__hidden_dims"] == (7,)
    cloned = clone(clf)
    assert cloned.get_params()["embedder__hidden_dims"] == (7,)
    cloned.set_params(embedder__hidden_dims=(5,)).fit(X, y)
    assert cloned.base_net_.module_.output.in_features == 5
    assert all(m.module_.output.in_features == 5 for m in cloned.estimators_)


def test_unknown_keyword_is_a_type_error_at_fit(iris):
    X, y = iris
    clf = FineTunedEnsembleClassifier(hidden_dims=(4,))  # no work in __init__
    with pytest.raises(TypeError, match="embedder__"):
        clf.fit(X, y)


def test_members_are_fine_tuned_copies_of_the_base(iris):
    X, y = iris
    clf = tiny(n_estimators=3, finetune_epochs=3).fit(X, y)
    assert len(clf.estimators_) == 3
    assert clf.finetune_epochs_ == 3
    base = clf.base_net_.module_.output.weight
    weights = [m.module_.output.weight for m in clf.estimators_]
    # each copy moved away from the base network, and differently (own seed)
    for w in weights:
        assert not torch.equal(w, base)
    assert not torch.equal(weights[0], weights[1])
    # the base net was trained max_epochs, each copy max_epochs + finetune
    assert len(clf.base_net_.history) == 10
    assert all(len(m.history) == 13 for m in clf.estimators_)


def test_zero_finetune_epochs_is_the_base_network(iris):
    X, y = iris
    clf = tiny(n_estimators=2, finetune_epochs=0).fit(X, y)
    from hemoe_sk.nn.inference import predict_proba

    np.testing.assert_allclose(
        clf.predict_proba(X), predict_proba(clf.base_net_, X), rtol=1e-6
    )


def test_base_network_is_the_classifiers_max_depth_0_network(iris):
    """The control starts from exactly the network the tree starts from."""
    from hemoe_sk import HierarchicalEmbeddingMoEClassifier

    X, y = iris
    tree0 = HierarchicalEmbeddingMoEClassifier(
        max_depth=0, max_epochs=4, random_state=3
    )
    ens = FineTunedEnsembleClassifier(
        n_estimators=1, finetune_epochs=0, max_epochs=4, random_state=3
    )
    np.testing.assert_allclose(
        ens.fit(X, y).predict_proba(X), tree0.fit(X, y).predict_proba(X), atol=1e-12
    )


def test_finetune_epochs_none_means_max_epochs(iris):
    X, y = iris
    clf = tiny(n_estimators=1, finetune_epochs=None, max_epochs=4).fit(X, y)
    assert clf.finetune_epochs_ == 4


def test_same_random_state_same_predictions_and_global_rng_untouched(iris):
    X, y = iris
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = tiny(random_state=7).fit(X, y).predict_proba(X)
    b = tiny(random_state=7).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = tiny(random_state=8).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)
    tiny(random_state=None).fit(X, y)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)


def test_string_labels_round_trip_and_probabilities(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = tiny().fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])


def test_clear_errors(iris):
    X, y = iris
    with pytest.raises(ValueError, match="NaN"):
        Xn = X.copy()
        Xn[0, 0] = np.nan
        tiny().fit(Xn, y)
    with pytest.raises(ValueError, match="1 class"):
        tiny().fit(X, np.zeros(len(X)))
    clf = tiny().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="n_estimators"):
        tiny(n_estimators=0).fit(X, y)


@pytest.mark.parametrize("dump,load", [(pickle.dumps, pickle.loads), (None, None)])
def test_pickle_round_trip(iris, tmp_path, dump, load):
    X, y = iris
    unfitted = tiny()
    fitted = tiny().fit(X, y)
    if dump is None:  # joblib
        path = tmp_path / "model.joblib"
        joblib.dump(fitted, path)
        restored = joblib.load(path)
        joblib.dump(unfitted, tmp_path / "unfitted.joblib")
        assert joblib.load(tmp_path / "unfitted.joblib").get_params()[
            "embedder__hidden_dims"
        ] == (16,)
    else:
        restored = load(dump(fitted))
        assert load(dump(unfitted)).get_params()["n_estimators"] == 2
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))


def test_custom_module_class(iris):
    X, y = iris
    clf = tiny(embedder=MLPEmbedder, embedder__hidden_dims=(8, 4)).fit(X, y)
    assert clf.base_net_.module_.output.in_features == 4
    assert clf.score(X, y) > 0.8


@pytest.mark.slow
def test_accuracy_on_digits():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    clf = make_pipeline(
        MinMaxScaler(),
        FineTunedEnsembleClassifier(
            n_estimators=3, max_epochs=10, finetune_epochs=2, random_state=0
        ),
    ).fit(X_tr, y_tr)
    assert clf.score(X_te, y_te) >= 0.9
