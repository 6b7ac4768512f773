"""Saving and loading: pickle/joblib round trips, CUDA-trained models on a
CPU-only machine, and hemoe_sk's safe format (hemoe_sk.persistence): round
trips of every public estimator, and the files it must refuse."""

import ast
import hashlib
import inspect
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from unittest.mock import patch

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from skorch import NeuralNet
from skorch.exceptions import DeviceWarning
from torch import nn

import hemoe_sk
from hemoe_sk import (
    DECClusterer,
    FineTunedEnsembleClassifier,
    HierarchicalEmbeddingMoEClassifier,
    MixtureOfAutoencodersClusterer,
    MixtureOfExpertsClassifier,
    NeighborVoteRouter,
    persistence,
)
from hemoe_sk.cli import main as cli_main
from hemoe_sk.nn import ConvEmbedder, DeepMoEEmbedder
from hemoe_sk.persistence import (
    FORMAT_VERSION,
    ModelFileError,
    ModelVersionWarning,
    UnsupportedComponentError,
    UntrustedTypeError,
    default_trusted_types,
    describe,
    load,
    save,
)

DATA = Path(__file__).parent / "data"


def _data(n=90, n_features=5, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.randn(n_classes * 2, n_features) * 3
    labels = np.arange(n) % (n_classes * 2)
    X = (centers[labels] + rng.randn(n, n_features)).astype(np.float32)
    return X, labels % n_classes


X, Y = _data()


def tiny_dec(**params):
    base = dict(
        n_clusters=2,
        hidden_dims=(6,),
        embedding_dim=2,
        pretrain_epochs=2,
        max_iter=10,
        update_interval=5,
        batch_size=32,
        n_init=1,
        random_state=0,
    )
    return DECClusterer(**{**base, **params})


def tiny_mixae(**params):
    base = dict(
        n_clusters=2,
        hidden_dims=(6,),
        embedding_dim=2,
        assignment_hidden_dims=(4,),
        pretrain_epochs=2,
        init_epochs=1,
        max_epochs=2,
        n_init=1,
        random_state=0,
    )
    return MixtureOfAutoencodersClusterer(**{**base, **params})


def tiny_tree(drop=(), **params):
    base = dict(
        max_epochs=4,
        expert_max_epochs=1,
        lr=0.03,
        embedder__hidden_dims=(8,),
        max_depth=1,
        n_clusters_grid=(2,),
        clusterer=KMeans(n_init=1),
        min_cluster_size=3,
        # Keep the best split whatever it scores: the trees that can split do.
        split_test="none",
        random_state=0,
    )
    params = {k: v for k, v in {**base, **params}.items() if k not in drop}
    return HierarchicalEmbeddingMoEClassifier(**params)


def tiny_moe(gating, **params):
    base = dict(
        n_experts=3,
        gating=gating,
        k=2,
        expert_hidden=(4,),
        gate_hidden=(),
        max_epochs=2,
        random_state=0,
    )
    return MixtureOfExpertsClassifier(**{**base, **params})


#: (id, unfitted estimator, supervised). Every public estimator, the
#: classifier with fine-tuned and head experts, hard and soft routing, DEC,
#: MixAE, k-means and neighbour-vote routers, and the MoE in each gating.
CASES = [
    ("tree-kmeans-finetune-hard", tiny_tree(routing="hard"), True),
    ("tree-kmeans-head-soft", tiny_tree(expert="head", routing="soft"), True),
    ("tree-dec-finetune-soft", tiny_tree(clusterer=tiny_dec(), routing="soft"), True),
    (
        "tree-dec-head-hard",
        tiny_tree(clusterer=tiny_dec(), expert="head", routing="hard"),
        True,
    ),
    ("tree-mixae-router", tiny_tree(clusterer=tiny_mixae()), True),
    (
        "tree-vote-router-pca",
        tiny_tree(
            clusterer=NeighborVoteRouter(AgglomerativeClustering()), reducer=PCA(2)
        ),
        True,
    ),
    ("tree-logreg-expert", tiny_tree(expert=LogisticRegression()), True),
    ("tree-depth0", tiny_tree(max_depth=0), True),
    (
        "tree-conv-embedder",
        tiny_tree(
            drop=("embedder__hidden_dims",),
            embedder=ConvEmbedder,
            embedder__image_shape=(1, 1, 5),
            embedder__channels=(2,),
            embedder__embedding_dim=4,
            max_depth=0,
        ),
        True,
    ),
    (
        "tree-deepmoe-embedder",
        tiny_tree(
            drop=("embedder__hidden_dims",),
            embedder=DeepMoEEmbedder,
            embedder__image_shape=(1, 1, 5),
            embedder__channels=(2,),
            embedder__embedding_channels=(2,),
            embedder__embedding_dim=4,
            embedder__hidden_dim=4,
            max_depth=0,
        ),
        True,
    ),
    ("dec", tiny_dec(), False),
    ("mixae", tiny_mixae(), False),
    ("vote-router", NeighborVoteRouter(AgglomerativeClustering(), n_clusters=3), False),
    ("moe-soft", tiny_moe("soft"), True),
    ("moe-topk", tiny_moe("topk"), True),
    ("moe-guided", tiny_moe("guided"), True),
    (
        "ensemble",
        FineTunedEnsembleClassifier(
            n_estimators=2,
            max_epochs=2,
            finetune_epochs=1,
            embedder__hidden_dims=(8,),
            random_state=0,
        ),
        True,
    ),
    ("pipeline", make_pipeline(StandardScaler(), tiny_tree()), True),
]
NAMES = [c[0] for c in CASES]
SPLIT_TREES = [n for n, est, _ in CASES if n.startswith("tree-") and est.max_depth > 0]


def _outputs(est):
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X)
    return est.transform(X)




def _fit(est, supervised=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, Y) if supervised else est.fit(X)


@pytest.fixture(scope="module")
def fitted():
    """Every case fitted once for the whole module (on clones: CASES stay
    unfitted)."""
    out = {name: _fit(clone(est), supervised) for name, est, supervised in CASES}
    for name in SPLIT_TREES:
        assert out[name].n_leaves_ > 1, f"{name}: the fixture must grow a split tree"
    return out


def _walk(obj, seen=None):
    """Every object reachable through attributes, lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, np.ndarray, type)):
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (NeuralNet, torch.Tensor, nn.Module)):
        children = []
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    for child in children:
        yield from _walk(child, seen)


def _nets(est):
    return [o for o in _walk(est) if isinstance(o, NeuralNet)]


# --------------------------------------------------------------------------
# pickle and joblib
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_joblib_round_trip(fitted, name, tmp_path):
    est = fitted[name]
    expected = _outputs(est)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(_outputs(again), expected)
    joblib.dump(est, tmp_path / "m.joblib")
    np.testing.assert_array_equal(
        _outputs(joblib.load(tmp_path / "m.joblib")), expected
    )


def _pretend_trained_on_cuda(est):
    """Mark every net (and estimator) as living on CUDA, as after a GPU fit.

    The weights stay on the CPU; pickling them under a patched
    ``torch.serialization.location_tag`` tags their storages ``cuda:0``, so
    the pickles are what a CUDA machine writes (loading them without a map
    location fails on a CPU-only torch). This is skorch's own way of testing
    GPU pickles without a GPU, plus the storage tags.
    """
    for obj in _walk(est):
        if isinstance(obj, NeuralNet):
            obj.device = "cuda"
        elif hasattr(obj, "get_params") and "device" in getattr(obj, "__dict__", {}):
            obj.device = "cuda"


def _as_cuda_file():
    return patch("torch.serialization.location_tag", lambda storage: "cuda:0")


def _no_cuda():
    return patch("torch.cuda.is_available", lambda *args: False)


@pytest.mark.filterwarnings("ignore:Setting self.device = cpu")
def test_cuda_model_unpickles_on_cpu_with_warning():
    est = _fit(tiny_tree(clusterer=tiny_dec(), expert="finetune"))
    assert est.n_leaves_ > 1
    expected = est.predict_proba(X)
    _pretend_trained_on_cuda(est)
    with _as_cuda_file():
        blob = pickle.dumps(est)
    with _no_cuda():
        with pytest.raises(RuntimeError, match="CUDA"):
            # the files really are CUDA files: torch refuses them unmapped
            with _as_cuda_file():
                buf = io.BytesIO()
                torch.save(est.embedder_.module_.state_dict(), buf)
            torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        with pytest.warns(DeviceWarning, match="no CUDA devices are available"):
            loaded = pickle.loads(blob)
    assert all(torch.device(net.device).type == "cpu" for net in _nets(loaded))
    assert all(
        p.device.type == "cpu"
        for net in _nets(loaded)
        for p in net.module_.parameters()
    )
    np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=0, atol=0)


def test_cuda_model_loads_from_safe_format_on_cpu_with_warning(tmp_path):
    est = _fit(tiny_tree(expert="head", clusterer=tiny_mixae()))
    assert est.n_leaves_ > 1
    expected = est.predict_proba(X)
    _pretend_trained_on_cuda(est)
    save(est, tmp_path / "gpu.hemoe")
    with _no_cuda():
        with pytest.warns(RuntimeWarning, match="trained on CUDA.*loaded on the CPU"):
            loaded = load(tmp_path / "gpu.hemoe")
    assert len(_nets(loaded)) > 2
    assert all(torch.device(net.device).type == "cpu" for net in _nets(loaded))
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    assert loaded.device == "cuda"  # the parameter is kept as the user set it


# --------------------------------------------------------------------------
# The safe format: round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_safe_format_round_trip(fitted, name, tmp_path):
    est = fitted[name]
    path = save(est, tmp_path / "model.hemoe")
    loaded = load(path)
    assert type(loaded) is type(est)
    assert repr(loaded) == repr(est)
    np.testing.assert_array_equal(_outputs(loaded), _outputs(est))
    if hasattr(est, "predict"):
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    for attr in ("classes_", "n_features_in_", "labels_", "cluster_centers_"):
        if hasattr(est, attr):
            np.testing.assert_array_equal(getattr(loaded, attr), getattr(est, attr))
    # saving the loaded model gives the same content, byte for byte
    again = save(loaded, tmp_path / "again.hemoe")
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(again) as b:
        assert json.loads(a.read("manifest.json")) == json.loads(
            b.read("manifest.json")
        )


@pytest.mark.parametrize("name, est, supervised", CASES, ids=NAMES)
def test_unfitted_round_trip(fitted, name, est, supervised, tmp_path):
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert type(loaded) is type(est)
    assert repr(loaded) == repr(est)
    assert loaded.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    if name in ("tree-dec-finetune-soft", "moe-guided", "dec", "pipeline"):
        # the loaded unfitted estimator fits to the very same model
        np.testing.assert_array_equal(
            _outputs(_fit(loaded, supervised)), _outputs(fitted[name])
        )


def _sklearn_parts():
    from sklearn.cluster import DBSCAN, HDBSCAN, MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.linear_model import RidgeClassifier
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import MinMaxScaler

    return [
        NeighborVoteRouter(HDBSCAN(copy=True)),
        NeighborVoteRouter(DBSCAN(eps=2.0), weights="distance"),
        MiniBatchKMeans(3, n_init=1, random_state=0),
        GaussianMixture(2, random_state=0),
        PCA(2),
        TruncatedSVD(2, random_state=0),
        MinMaxScaler(),
        RidgeClassifier(),
    ]


@pytest.mark.parametrize("est", _sklearn_parts(), ids=repr)
def test_scikit_learn_parts_round_trip(est, tmp_path):
    """The routers, reducers and experts of the codec table, on their own."""
    est = clone(est).fit(X, Y)
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert type(loaded) is type(est) and repr(loaded) == repr(est)
    for method in ("predict_proba", "transform", "predict", "decision_function"):
        if hasattr(est, method):
            np.testing.assert_array_equal(
                getattr(loaded, method)(X), getattr(est, method)(X)
            )


def test_safe_format_keeps_tree_structure_and_sharing(fitted, tmp_path):
    est = fitted["tree-kmeans-finetune-hard"]
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert loaded.export_text() == est.export_text()
    assert loaded.n_leaves_ == est.n_leaves_ > 1 and loaded.depth_ == est.depth_
    # one net object per saved net: the root node's embedder is embedder_,
    # and a fine-tuned expert's net is its child's embedder
    assert loaded.tree_.nodes[0].embedder is loaded.embedder_
    shared = 0
    for node in loaded.tree_.nodes[1:]:
        if getattr(node.classifier, "net", None) is not None:
            assert node.classifier.net is node.embedder
            shared += 1
    assert shared > 0
    np.testing.assert_array_equal(loaded.apply(X), est.apply(X))
    assert (loaded.decision_path(X) != est.decision_path(X)).nnz == 0
    assert len(np.unique(loaded.apply(X))) > 1


def test_safe_format_string_labels_and_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    labels = np.array(["cat", "dog", "émeu"], dtype=object)[Y]
    est = tiny_tree(max_depth=0).fit(frame, labels)
    loaded = load(save(est, tmp_path / "m.hemoe"))
    np.testing.assert_array_equal(loaded.classes_, est.classes_)
    np.testing.assert_array_equal(loaded.feature_names_in_, est.feature_names_in_)
    np.testing.assert_array_equal(loaded.predict(frame), est.predict(frame))


def test_loaded_model_refits(fitted, tmp_path):
    loaded = _fit(load(save(fitted["tree-dec-finetune-soft"], tmp_path / "m.hemoe")))
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-dec-finetune-soft"].predict_proba(X)
    )


def test_parameters_naming_classes_and_objects(tmp_path):
    from sklearn.model_selection import StratifiedKFold

    est = tiny_tree(
        clusterer=tiny_dec(),
        optimizer=torch.optim.SGD,
        cv=StratifiedKFold(3, shuffle=True, random_state=1),
        device=torch.device("cpu"),
        random_state=np.random.RandomState(5),
    )
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert loaded.optimizer is torch.optim.SGD
    assert loaded.get_params()["embedder__hidden_dims"] == (8,)
    assert loaded.device == torch.device("cpu")
    assert repr(loaded.cv) == repr(est.cv)
    assert loaded.random_state.randint(1000) == est.random_state.randint(1000)


def test_load_onto_a_named_device(fitted, tmp_path):
    loaded = load(
        save(fitted["tree-kmeans-head-soft"], tmp_path / "m.hemoe"), device="cpu"
    )
    assert all(torch.device(net.device).type == "cpu" for net in _nets(loaded))
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-kmeans-head-soft"].predict_proba(X)
    )
    with _no_cuda(), pytest.raises(ValueError, match="CUDA is not available"):
        load(tmp_path / "m.hemoe", device="cuda")


def test_file_objects(fitted):
    buf = io.BytesIO()
    save(fitted["dec"], buf)
    buf.seek(0)
    np.testing.assert_array_equal(load(buf).transform(X), fitted["dec"].transform(X))


def test_describe_lists_versions_types_and_metadata(fitted, tmp_path):
    path = save(
        fitted["tree-kmeans-finetune-hard"],
        tmp_path / "m.hemoe",
        metadata={"owner": "me"},
    )
    info = describe(path)
    assert info["estimator"] == "HierarchicalEmbeddingMoEClassifier"
    assert info["format_version"] == FORMAT_VERSION == 2
    assert set(info["versions"]) == {
        "hemoe_sk",
        "torch",
        "scikit-learn",
        "skorch",
        "numpy",
    }
    assert info["versions"]["hemoe_sk"] == hemoe_sk.__version__
    assert "sklearn.cluster.KMeans" in info["types"]
    assert "HemoeNeuralNetClassifier" in info["types"]
    assert info["untrusted_types"] == []
    assert set(info["types"]) <= set(default_trusted_types())
    assert info["metadata"] == {"owner": "me"}
    assert info["n_tensor_files"] >= 2 and info["n_arrays"] >= 2
    with pytest.raises(TypeError, match="metadata must be plain JSON"):
        save(fitted["dec"], tmp_path / "x.hemoe", metadata={"f": np.float32})


def test_file_holds_only_json_npy_and_safetensors(fitted, tmp_path):
    from safetensors.torch import load as st_load

    path = save(fitted["tree-dec-finetune-soft"], tmp_path / "m.hemoe")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        kinds = {"npy": 0, "safetensors": 0}
        for name in names[1:]:
            data = zf.read(name)
            assert (
                manifest["members"][name]["sha256"] == hashlib.sha256(data).hexdigest()
            )
            if name.endswith(".npy"):
                arr = np.load(io.BytesIO(data), allow_pickle=False)
                assert list(arr.shape) == manifest["members"][name]["shape"]
                kinds["npy"] += 1
            else:
                tensors = st_load(data)
                declared = manifest["members"][name]["tensors"]
                assert {k: list(t.shape) for k, t in tensors.items()} == {
                    k: v["shape"] for k, v in declared.items()
                }
                kinds["safetensors"] += 1
    assert names[0] == "manifest.json"
    assert all(n.startswith(("arrays/", "tensors/")) for n in names[1:])
    assert kinds["npy"] > 0 and kinds["safetensors"] > 0
    assert manifest["format_version"] == 2
    # parameters are JSON, and the root record names its class explicitly
    root = manifest["objects"][manifest["root"]["$ref"]]
    assert root["class"] == "HierarchicalEmbeddingMoEClassifier"
    assert root["params"]["max_depth"] == 1
    assert {"embedder_", "tree_", "n_leaves_"} <= set(root["values"])
    assert set(root["arrays"]) == {"classes_"}


# -- the codec table ---------------------------------------------------------


def test_codec_table_covers_every_public_estimator():
    from sklearn.base import BaseEstimator

    for name in hemoe_sk.__all__:
        obj = getattr(hemoe_sk, name)
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
            codec = persistence._codec_of(obj)
            assert codec is not None and codec.build == "estimator", name
    # every hemoe_sk class in the table resolves (a moved class fails here)
    own = [c for c in persistence._CODECS if c.modules[0].startswith("hemoe_sk")]
    assert all(persistence._resolve(c).__name__ == c.attr for c in own)
    # no package is trusted wholesale: only named classes
    assert "torch.nn.Module" not in default_trusted_types()
    assert not [n for n in default_trusted_types() if n.endswith((".*", "*"))]
    assert "torch.nn.Linear" not in default_trusted_types()


def test_persistence_imports_nothing_from_the_package_at_import_time():
    """The package's modules import each other (``from ._codecs``), never
    the rest of hemoe_sk at module level (only inside save/load)."""
    files = sorted(Path(persistence.__file__).parent.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module-level imports only
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), ast.dump(node)
                assert not (node.module or "").startswith("hemoe_sk"), ast.dump(node)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("hemoe_sk") for a in node.names)
        assert len(path.read_text().splitlines()) < 600, path.name


def test_undescribed_fitted_attribute_is_refused(tmp_path):
    est = _fit(tiny_dec())
    est.extra_state_ = 3
    with pytest.raises(UnsupportedComponentError, match=r"\['extra_state_'\].*_CODECS"):
        save(est, tmp_path / "m.hemoe")
    assert not (tmp_path / "m.hemoe").exists()


# -- what the format refuses when saving -------------------------------------


class _MyEmbedder(nn.Module):
    def __init__(self, n_features, n_classes):
        super().__init__()
        self.body = nn.Linear(n_features, 4)
        self.output = nn.Linear(4, n_classes)

    def forward(self, x):
        return self.output(torch.relu(self.body(x)))


def test_custom_module_needs_trusted_on_save_and_load(tmp_path):
    est = HierarchicalEmbeddingMoEClassifier(
        _MyEmbedder, max_depth=0, max_epochs=3, random_state=0
    ).fit(X, Y)
    with pytest.raises(UnsupportedComponentError, match=r"trusted=\[_MyEmbedder\]"):
        save(est, tmp_path / "m.hemoe")
    assert not os.path.exists(tmp_path / "m.hemoe")
    path = save(est, tmp_path / "m.hemoe", trusted=[_MyEmbedder])
    assert describe(path)["untrusted_types"] == [
        f"{_MyEmbedder.__module__}:{_MyEmbedder.__qualname__}"
    ]
    with pytest.raises(UntrustedTypeError, match="not in the allowlist.*trusted="):
        load(path)
    loaded = load(path, trusted=[_MyEmbedder])
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_unsupported_component_suggests_joblib(tmp_path):
    est = tiny_tree(expert=DecisionTreeClassifier(max_depth=2))
    with pytest.raises(
        UnsupportedComponentError, match="DecisionTreeClassifier.*joblib"
    ):
        save(est, tmp_path / "unfitted.hemoe")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, Y)
    (tmp_path / "m.hemoe").write_bytes(b"previous model")
    with pytest.raises(
        UnsupportedComponentError, match="DecisionTreeClassifier.*joblib"
    ):
        save(est, tmp_path / "m.hemoe")
    # the failed save left the existing file and no temporary file behind
    assert (tmp_path / "m.hemoe").read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["m.hemoe"]


def test_functions_are_refused(tmp_path):
    est = tiny_tree(random_state=0)
    est.optimizer = lambda params, lr: torch.optim.SGD(params, lr)
    with pytest.raises(UnsupportedComponentError, match="is code"):
        save(est, tmp_path / "m.hemoe")


def test_module_with_hooks_is_refused(tmp_path):
    est = _fit(tiny_mixae())
    est.module_.register_forward_hook(lambda *args: None)
    with pytest.raises(UnsupportedComponentError, match="_forward_hooks"):
        save(est, tmp_path / "m.hemoe")


# -- what the format refuses when loading ------------------------------------


def _rewrite(path, out, members=None, manifest=None, declare=True):
    """Copy a model file, replacing members and editing the manifest, with
    checksums and sizes updated as a deliberate attacker would."""
    members = dict(members or {})
    with zipfile.ZipFile(path) as zf:
        data = {n: zf.read(n) for n in zf.namelist()}
    data.update(members)
    meta = json.loads(data["manifest.json"])
    for name in members:
        if name != "manifest.json" and declare:
            entry = meta["members"].setdefault(name, {})
            entry["sha256"] = hashlib.sha256(data[name]).hexdigest()
            entry["size"] = len(data[name])
    if manifest is not None:
        manifest(meta)
    data["manifest.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(out, "w") as zf:
        for name, blob in data.items():
            zf.writestr(name, blob)
    return out


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    return save(
        fitted["tree-kmeans-finetune-hard"], tmp_path_factory.mktemp("m") / "m.hemoe"
    )


def _first(path, prefix):
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if n.startswith(prefix))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_payload_in_place_of_weights_is_refused(model_file, tmp_path, how):
    marker = tmp_path / "pwned"
    if how == "pickle":
        blob = pickle.dumps({"body.0.weight": _Payload(marker)})
    else:  # a real torch file whose pickle holds more than tensors
        buf = io.BytesIO()
        torch.save({"body.0.weight": _Payload(marker)}, buf)
        blob = buf.getvalue()
    evil = _rewrite(
        model_file, tmp_path / "evil.hemoe", {_first(model_file, "tensors/"): blob}
    )
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load(evil)
    assert not marker.exists()


def test_pickle_member_with_a_pt_name_is_refused(model_file, tmp_path):
    marker = tmp_path / "pwned"
    evil = _rewrite(
        model_file,
        tmp_path / "evil.hemoe",
        {"tensors/99.pt": pickle.dumps(_Payload(marker))},
    )
    with pytest.raises(ModelFileError, match="unexpected member name 'tensors/99.pt'"):
        load(evil)
    with pytest.raises(ModelFileError, match="unexpected member name"):
        describe(evil)
    assert not marker.exists()


@pytest.mark.parametrize("declared", ["kept", "|O"])
def test_object_array_payload_is_refused(model_file, tmp_path, declared):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    name = _first(model_file, "arrays/")

    def edit(meta):
        if declared != "kept":
            meta["members"][name].update(dtype=declared, shape=[1])

    evil = _rewrite(model_file, tmp_path / "evil.hemoe", {name: buf.getvalue()}, edit)
    with pytest.raises(ModelFileError, match="holds Python objects|declares"):
        load(evil)
    assert not marker.exists()


def _tensor_member(path):
    name = _first(path, "tensors/")
    with zipfile.ZipFile(path) as zf:
        data = zf.read(name)
    n = int.from_bytes(data[:8], "little")
    return name, json.loads(data[8 : 8 + n]), data[8 + n :]


def _safetensors_bytes(header, body):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_lying_safetensors_header_is_refused(model_file, tmp_path):
    name, header, body = _tensor_member(model_file)
    key = next(k for k in header if k != "__metadata__")
    shape = header[key]["shape"]
    header[key]["shape"] = [s * 10 for s in shape]  # more data than the file has

    lie = _safetensors_bytes(header, body)
    # the manifest keeps the true shapes: safetensors refuses the header
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load(_rewrite(model_file, tmp_path / "a.hemoe", {name: lie}))

    def edit(meta):  # the manifest lies too: the shapes do not fit the module
        meta["members"][name]["tensors"][key]["shape"] = header[key]["shape"]

    # (the real header is verified before the manifest or the module is used)
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load(_rewrite(model_file, tmp_path / "c.hemoe", {name: lie}, edit))
    # a header length pointing past the end of the member
    blob = struct.pack("<Q", 10**9) + b"{}"
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load(_rewrite(model_file, tmp_path / "b.hemoe", {name: blob}))


def test_declared_shapes_must_match_the_data(model_file, tmp_path):
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    # a valid weights file whose tensor has another shape than the manifest
    # declares (and the module needs)
    name, header, body = _tensor_member(model_file)
    key = next(k for k in header if k != "__metadata__")
    with zipfile.ZipFile(model_file) as zf:
        tensors = st_load(zf.read(name))
    tensors[key] = torch.zeros(3, 1, 1)
    swapped = _rewrite(model_file, tmp_path / "a.hemoe", {name: st_save(tensors)})
    with pytest.raises(ModelFileError, match=f"tensor '{key}'.*declares"):
        load(swapped)

    # a manifest declaring other shapes than the module its parameters build
    def tensor_lie(meta):
        meta["members"][name]["tensors"][key]["shape"] = [1, 1, 1]

    with pytest.raises(ModelFileError, match=f"tensor '{key}'.*declares"):
        load(_rewrite(model_file, tmp_path / "d.hemoe", manifest=tensor_lie))
    # an array replaced by a bigger one of the same dtype, manifest unchanged
    arr_name = _first(model_file, "arrays/")
    with zipfile.ZipFile(model_file) as zf:
        arr = np.load(io.BytesIO(zf.read(arr_name)))
    buf = io.BytesIO()
    np.save(buf, np.zeros(arr.size + 1000, dtype=arr.dtype))

    def keep_declared(meta):
        meta["members"][arr_name]["shape"] = list(arr.shape)

    with pytest.raises(ModelFileError, match="declares"):
        load(
            _rewrite(
                model_file,
                tmp_path / "b.hemoe",
                {arr_name: buf.getvalue()},
                keep_declared,
            )
        )

    # weights whose shapes do not fit the module the parameters build
    def wrong_width(meta):
        for record in meta["objects"]:
            if record["class"] == "HemoeNeuralNetClassifier":
                record["params"]["module__hidden_dims"] = {"$tuple": [9]}

    with pytest.raises(ModelFileError, match="weights do not fit"):
        load(_rewrite(model_file, tmp_path / "c.hemoe", manifest=wrong_width))


def test_huge_module_parameters_are_refused_before_allocating(model_file, tmp_path):
    """A file asking for a 10^6 x 10^6 layer (4 TB) is refused from shapes
    alone: the module is probed on the meta device first."""

    def huge(meta):
        for record in meta["objects"]:
            if record["class"] == "HemoeNeuralNetClassifier":
                record["params"]["module__hidden_dims"] = {"$tuple": [10**6, 10**6]}

    with pytest.raises(ModelFileError, match="larger than any dimension"):
        load(_rewrite(model_file, tmp_path / "huge.hemoe", manifest=huge))


@pytest.mark.parametrize(
    "member", ["../evil.npy", "/etc/evil.npy", "arrays/../../evil.npy", "arrays\\1.npy"]
)
def test_path_traversal_in_member_names_is_refused(model_file, tmp_path, member):
    evil = _rewrite(model_file, tmp_path / "evil.hemoe", {member: b"x"})
    with pytest.raises(ModelFileError, match="unexpected member name"):
        load(evil)


def test_duplicate_members_are_refused(model_file, tmp_path):
    with zipfile.ZipFile(model_file) as zf:
        data = {n: zf.read(n) for n in zf.namelist()}
    evil = tmp_path / "dup.hemoe"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate
        with zipfile.ZipFile(evil, "w") as zf:
            for name, blob in data.items():
                zf.writestr(name, blob)
            zf.writestr("manifest.json", data["manifest.json"])
    with pytest.raises(ModelFileError, match="duplicate members \\['manifest.json'\\]"):
        load(evil)


def _patch_sizes(raw, name, size):
    """Rewrite the uncompressed size of ``name`` in its local header and its
    central directory entry, as a zip bomb that lies about its size does."""
    raw = bytearray(raw)
    encoded = name.encode()
    local = raw.find(b"PK\x03\x04")
    while local != -1:
        n = struct.unpack("<H", raw[local + 26 : local + 28])[0]
        if raw[local + 30 : local + 30 + n] == encoded:
            raw[local + 22 : local + 26] = struct.pack("<I", size)
        local = raw.find(b"PK\x03\x04", local + 4)
    central = raw.find(b"PK\x01\x02")
    while central != -1:
        n = struct.unpack("<H", raw[central + 28 : central + 30])[0]
        if raw[central + 46 : central + 46 + n] == encoded:
            raw[central + 24 : central + 28] = struct.pack("<I", size)
        central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


def test_zip_bombs_are_refused(model_file, tmp_path):
    # 1. a member that inflates beyond the cap: refused before it is read
    name = _first(model_file, "arrays/")
    buf = io.BytesIO()
    np.save(buf, np.zeros(2**20))  # 8 MiB of zeros, a few KiB compressed
    bomb = tmp_path / "bomb.hemoe"
    with (
        zipfile.ZipFile(model_file) as src,
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst,
    ):
        for n in src.namelist():
            dst.writestr(n, buf.getvalue() if n == name else src.read(n))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ModelFileError, match="more than max_size=1000000"):
        load(bomb, max_size=10**6)
    # 2. sizes that lie: the zip declares few bytes, the data inflates to more
    raw = (
        model_file.read_bytes()
        if hasattr(model_file, "read_bytes")
        else open(model_file, "rb").read()
    )
    tname = _first(model_file, "tensors/")
    liar = tmp_path / "liar.hemoe"
    liar.write_bytes(_patch_sizes(raw, tname, 16))
    with pytest.raises(ModelFileError, match="declares 16 bytes in the zip"):
        load(liar)

    def consistent(meta):  # the manifest lies too
        meta["members"][tname]["size"] = 16

    liar2 = _rewrite(model_file, tmp_path / "liar2.hemoe", manifest=consistent)
    liar2.write_bytes(_patch_sizes(liar2.read_bytes(), tname, 16))
    with pytest.raises(ModelFileError, match="corrupted|does not match"):
        load(liar2)
    # 3. too many members: empty ones, refused before anything is read
    crowded = tmp_path / "crowded.hemoe"
    with zipfile.ZipFile(crowded, "w") as dst:
        for i in range(persistence.MAX_MEMBERS + 1):
            dst.writestr(f"m{i}", b"")
    with pytest.raises(
        ModelFileError, match=f"members \\(at most {persistence.MAX_MEMBERS}\\)"
    ):
        load(crowded)


@pytest.mark.parametrize("name", ["os:system", "builtins:eval", "subprocess.Popen"])
def test_unknown_class_names_are_refused(model_file, tmp_path, name):
    def as_object(meta):
        meta["objects"][0]["class"] = name

    with pytest.raises(UntrustedTypeError, match=f"{name}.*not in the allowlist"):
        load(_rewrite(model_file, tmp_path / "a.hemoe", manifest=as_object))

    def as_parameter(meta):
        meta["objects"][0]["params"]["optimizer"] = {"$class": name}

    with pytest.raises(UntrustedTypeError, match=f"{name}.*not in the allowlist"):
        load(_rewrite(model_file, tmp_path / "b.hemoe", manifest=as_parameter))


def test_classes_are_used_only_as_declared(model_file, tmp_path):
    # an optimizer class may be named by a parameter, never built as an object
    def optimizer_object(meta):
        meta["objects"][0]["class"] = "torch.optim.SGD"

    with pytest.raises(UntrustedTypeError):
        load(_rewrite(model_file, tmp_path / "a.hemoe", manifest=optimizer_object))

    # an estimator class may be built from its record, never handed out as a class
    def estimator_class(meta):
        meta["objects"][0]["params"]["optimizer"] = {
            "$class": "sklearn.pipeline.Pipeline"
        }

    with pytest.raises(UntrustedTypeError):
        load(_rewrite(model_file, tmp_path / "b.hemoe", manifest=estimator_class))


def test_state_cannot_set_undeclared_attributes(model_file, tmp_path):
    def edit(meta):
        meta["objects"][0]["values"]["predict_proba"] = {"$class": "torch.optim.SGD"}

    with pytest.raises(ModelFileError, match="'predict_proba' is not part of"):
        load(_rewrite(model_file, tmp_path / "a.hemoe", manifest=edit))

    def sklearn_method(meta):
        for record in meta["objects"]:
            if record["class"] == "sklearn.cluster.KMeans":
                record["state"]["predict"] = 1

    with pytest.raises(ModelFileError, match="would replace a method"):
        load(_rewrite(model_file, tmp_path / "b.hemoe", manifest=sklearn_method))


def test_truncated_and_corrupted_files(model_file, tmp_path):
    blob = open(model_file, "rb").read()
    (tmp_path / "half.hemoe").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load(tmp_path / "half.hemoe")
    (tmp_path / "empty.hemoe").write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load(tmp_path / "empty.hemoe")
    (tmp_path / "text.hemoe").write_text("not a model")
    with pytest.raises(ModelFileError, match="not a hemoe_sk model file"):
        load(tmp_path / "text.hemoe")
    # flip bytes inside a stored (uncompressed) member: the zip CRC catches it
    stored = _rewrite(model_file, tmp_path / "stored.hemoe")
    raw = bytearray(open(stored, "rb").read())
    with zipfile.ZipFile(stored) as zf:
        info = zf.getinfo(_first(stored, "tensors/"))
    start = info.header_offset + 30 + len(info.filename) + 10
    raw[start : start + 8] = b"\xff" * 8
    (tmp_path / "flipped.hemoe").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupted"):
        load(tmp_path / "flipped.hemoe")


def test_checksum_mismatch_and_missing_member(model_file, tmp_path):
    name = _first(model_file, "tensors/")

    def bad_digest(meta):
        meta["members"][name]["sha256"] = "0" * 64

    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load(_rewrite(model_file, tmp_path / "a.hemoe", manifest=bad_digest))

    def missing(meta):
        meta["members"]["arrays/999.npy"] = {"sha256": "0" * 64, "size": 8}
        meta["objects"][0]["arrays"]["classes_"] = {"$array": "arrays/999.npy"}

    with pytest.raises(ModelFileError, match="missing"):
        load(_rewrite(model_file, tmp_path / "b.hemoe", manifest=missing))


def test_not_our_format_and_other_format_versions(model_file, tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("manifest.json", "{}")
    with pytest.raises(ModelFileError, match="not written by hemoe_sk.save"):
        load(tmp_path / "other.zip")

    def newer(meta):
        meta["format_version"] = 99

    with pytest.raises(ModelFileError, match="format version 99.*Upgrade hemoe_sk"):
        load(_rewrite(model_file, tmp_path / "new.hemoe", manifest=newer))


def test_format_1_files_get_a_clear_error():
    """A real file written by hemoe_sk 0.1.0's save (a small fitted DEC)."""
    path = DATA / "format1_dec.hemoe"
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("manifest.json"))["format_version"] == 1
        assert any(n.startswith("tensors/") for n in zf.namelist())  # torch pickles
    with pytest.raises(
        ModelFileError, match="hemoe_sk 0.1 \\(format version 1\\).*joblib"
    ):
        load(path)


def test_other_library_versions_warn(model_file, fitted, tmp_path):
    def older(meta):
        meta["versions"]["torch"] = "1.0.0"
        meta["versions"]["hemoe_sk"] = "0.0.1"

    path = _rewrite(model_file, tmp_path / "old.hemoe", manifest=older)
    with pytest.warns(ModelVersionWarning, match=r"torch 1\.0\.0 \(file\)"):
        loaded = load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-kmeans-finetune-hard"].predict_proba(X)
    )


def test_same_versions_do_not_warn(model_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(model_file)


def test_load_never_changes_global_rng(fitted, tmp_path):
    path = save(fitted["tree-mixae-router"], tmp_path / "m.hemoe")
    torch.manual_seed(3)
    np.random.seed(3)
    t, n = torch.get_rng_state(), np.random.get_state()[1].copy()
    load(path)
    assert torch.equal(t, torch.get_rng_state())
    np.testing.assert_array_equal(n, np.random.get_state()[1])


# --------------------------------------------------------------------------
# The command line writes and reads the safe format by default
# --------------------------------------------------------------------------


@pytest.fixture
def train_csv(tmp_path):
    path = tmp_path / "train.csv"
    lines = ["a,b,c,d,e,label"] + [
        ",".join(f"{v:.5f}" for v in row) + f",{'xyz'[label]}"
        for row, label in zip(X, Y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli_fit(csv_path, out, *extra):
    args = ["fit", str(csv_path), "--target", "label", "--out", str(out)]
    return cli_main(
        [*args, "--max-depth", "0", "--max-epochs", "3", "--verbose", "0", *extra]
    )


def test_cli_fit_and_predict_use_the_safe_format(train_csv, tmp_path, capsys):
    model = tmp_path / "model.hemoe"
    assert _cli_fit(train_csv, model) == 0
    info = describe(model)
    assert info["estimator"] == "sklearn.pipeline.Pipeline"
    assert info["metadata"]["feature_names"] == list("abcde")
    assert info["metadata"]["target"] == "label"
    capsys.readouterr()
    preds = tmp_path / "preds.csv"
    assert (
        cli_main(
            ["predict", str(model), str(train_csv), "--out", str(preds), "--proba"]
        )
        == 0
    )
    assert "joblib" not in capsys.readouterr().err
    rows = preds.read_text().splitlines()
    assert rows[0] == "prediction,proba_x,proba_y,proba_z" and len(rows) == len(X) + 1
    expected = load(model).predict(X)
    assert [r.split(",")[0] for r in rows[1:]] == list(expected)


def test_cli_joblib_on_request_with_a_warning(train_csv, tmp_path, capsys):
    model = tmp_path / "model.bin"
    assert _cli_fit(train_csv, model, "--format", "joblib") == 0
    assert "runs code" in capsys.readouterr().err
    assert isinstance(joblib.load(model), dict)
    # without --format, a file that is not in the safe format is refused
    assert cli_main(["predict", str(model), str(train_csv)]) == 2
    err = capsys.readouterr().err
    assert "pass --format joblib" in err and err.count("\n") == 1
    assert cli_main(["predict", str(model), str(train_csv), "--format", "joblib"]) == 0
    assert "runs code" in capsys.readouterr().err


def test_cli_refuses_a_tampered_model(train_csv, tmp_path, capsys):
    model = tmp_path / "model.hemoe"
    assert _cli_fit(train_csv, model) == 0
    evil = _rewrite(model, tmp_path / "evil.hemoe", {"../../x.npy": b"x"})
    capsys.readouterr()
    assert cli_main(["predict", str(evil), str(train_csv)]) == 2
    err = capsys.readouterr().err
    assert "unexpected member name" in err and err.count("\n") == 1


# -- the default recipe (issue 22) in the safe format -----------------------------


def _recipe_data():
    """Rows with numerical and binary columns: the default TabularEmbedder
    embeds the first with PLR and passes the others on (both index buffers
    non-empty)."""
    Xr, yr = _data(n=120, n_features=4)
    binary = (np.arange(len(Xr)) % 3 == 0).astype(np.float32)[:, None]
    return np.hstack([Xr, binary]), yr


def _default_models():
    from hemoe_sk import HierarchicalEmbeddingMoERegressor, MixtureOfExpertsRegressor

    quick = dict(max_epochs=4, random_state=0)  # every other setting the default
    return {
        "tree": HierarchicalEmbeddingMoEClassifier(**quick),
        "tree-regressor": HierarchicalEmbeddingMoERegressor(**quick),
        "moe": MixtureOfExpertsClassifier(**quick),
        "moe-regressor": MixtureOfExpertsRegressor(**quick),
        "ensemble": FineTunedEnsembleClassifier(n_estimators=2, **quick),
    }


@pytest.mark.parametrize("name", list(_default_models()))
def test_default_recipe_round_trips_for_every_model_kind(name, tmp_path):
    from hemoe_sk.nn import TabularEmbedder

    Xr, yr = _recipe_data()
    est = _default_models()[name]
    target = Xr[:, :2].sum(axis=1) if "regressor" in name else yr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xr, target)
    loaded = load(save(est, tmp_path / "m.hemoe"))
    method = "predict" if "regressor" in name else "predict_proba"
    np.testing.assert_array_equal(getattr(loaded, method)(Xr), getattr(est, method)(Xr))
    if name.startswith(("tree", "ensemble")):
        net = loaded.embedder_ if name.startswith("tree") else loaded.base_net_
        saved = est.embedder_ if name.startswith("tree") else est.base_net_
        module = net.module_
        assert isinstance(module, TabularEmbedder)
        assert module.numerical.tolist() == [0, 1, 2, 3]  # PLR columns
        assert module.other.tolist() == [4]  # the binary column
        for key, value in saved.module_.state_dict().items():
            assert torch.equal(module.state_dict()[key], value), key
        assert net.get_params()["batch_size"] == "auto"
        assert net.get_params()["lr_schedule"] == "warmup_cosine"
        assert net.best_epoch_ == saved.best_epoch_


def test_cli_fit_saves_the_default_recipe(train_csv, tmp_path):
    from hemoe_sk.nn import TabularEmbedder

    model = tmp_path / "model.hemoe"
    assert _cli_fit(train_csv, model) == 0
    loaded = load(model)
    assert isinstance(loaded[-1].embedder_.module_, TabularEmbedder)
    proba = loaded.predict_proba(X)
    assert proba.shape == (len(X), 3)
    again = load(save(loaded, tmp_path / "again.hemoe"))
    np.testing.assert_array_equal(again.predict_proba(X), proba)


def test_tabular_state_check_sees_every_buffer():
    """The values check of TabularEmbedder's buffers, on cases the crafted
    files cannot reach with the same shapes (the columns left over)."""
    from hemoe_sk.nn import TabularEmbedder
    from hemoe_sk.persistence._modules import check_state

    args = dict(n_features=4, n_classes=2, hidden_dims=(3,), numerical_features=(0, 2))
    module = TabularEmbedder(**args)
    assert check_state(module, args) is None
    module.other.copy_(torch.tensor([3, 1]))  # the rest, in another order
    assert "left over" in check_state(module, args)
    module.other.copy_(torch.tensor([1, 3]))
    module.numerical.copy_(torch.tensor([2, 0]))
    assert "numerical_features" in check_state(module, args)
    assert check_state(module) is None  # an expert's copy: no arguments to match
    module.numerical.copy_(torch.tensor([0, 2]))
    module.scaling.scale[3] = float("inf")
    assert "scale" in check_state(module, args)
