"""Saving and loading: pickle/joblib round trips, CUDA-trained models on a
CPU-only machine, and hemoe_sk's safe format (hemoe_sk.persistence)."""

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile
from unittest.mock import patch

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from skorch import NeuralNet
from skorch.exceptions import DeviceWarning
from torch import nn

import hemoe_sk.node as node_module
from hemoe_sk import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.cluster import DECClusterer
from hemoe_sk.node import NodeExpertsClassifier
from hemoe_sk.persistence import (
    ModelFileError,
    ModelVersionWarning,
    UnsupportedComponentError,
    UntrustedTypeError,
    default_trusted_types,
    describe,
    load,
    save,
)

try:
    from hemoe_sk.moe import MixtureOfExpertsClassifier
except ImportError:  # pragma: no cover - written in parallel
    MixtureOfExpertsClassifier = None
try:
    from hemoe_sk.baselines import FineTunedEnsembleClassifier
except ImportError:  # pragma: no cover - written in parallel
    FineTunedEnsembleClassifier = None
try:
    from hemoe_sk.cluster.mixae import MixtureOfAutoencodersClusterer
except ImportError:  # pragma: no cover - written in parallel
    MixtureOfAutoencodersClusterer = None


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


def tiny_tree(**params):
    base = dict(
        max_epochs=4,
        expert_max_epochs=1,
        lr=0.03,
        embedder__hidden_dims=(8,),
        max_depth=1,
        n_clusters_grid=(2,),
        clusterer=KMeans(n_init=1),
        min_cluster_size=3,
        random_state=0,
    )
    return HierarchicalEmbeddingMoEClassifier(**{**base, **params})


def _estimators():
    """(id, unfitted estimator, needs y) for every estimator the format covers."""
    cases = [
        ("tree-kmeans-finetune", tiny_tree(), True),
        ("tree-kmeans-head-soft", tiny_tree(expert="head", routing="soft"), True),
        ("tree-dec-router", tiny_tree(clusterer=tiny_dec()), True),
        ("tree-logreg-expert", tiny_tree(expert=LogisticRegression()), True),
        ("tree-depth0", tiny_tree(max_depth=0), True),
        ("dec", tiny_dec(), False),
        ("pipeline", make_pipeline(StandardScaler(), tiny_tree()), True),
    ]
    if MixtureOfExpertsClassifier is not None:
        cases.append(
            (
                "moe-topk",
                MixtureOfExpertsClassifier(
                    n_experts=3,
                    gating="topk",
                    k=2,
                    expert_hidden=(4,),
                    gate_hidden=(),
                    max_epochs=2,
                    random_state=0,
                ),
                True,
            )
        )
    if FineTunedEnsembleClassifier is not None:
        cases.append(
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
            )
        )
    if MixtureOfAutoencodersClusterer is not None:
        est = MixtureOfAutoencodersClusterer()
        small = dict(
            n_clusters=2,
            hidden_dims=(6,),
            embedding_dim=2,
            max_epochs=2,
            pretrain_epochs=2,
            max_iter=10,
            random_state=0,
        )
        est.set_params(**{k: v for k, v in small.items() if k in est.get_params()})
        cases.append(("mixae", est, False))
    return cases


CASES = _estimators()


def _outputs(est):
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X)
    return est.transform(X)


@contextlib.contextmanager
def splits_preferred():
    """Make every node search keep a split whenever one is eligible.

    Whether a split beats the unsplit node on tiny data is a coin toss; these
    tests need files that hold routers and experts, so a split candidate's
    held-out score gets a bonus of 1.
    """
    original = NodeExpertsClassifier.score

    def score(self, P, y, sample_weight=None):
        bonus = 0.0 if getattr(self, "router_", None) is None else 1.0
        return original(self, P, y, sample_weight) + bonus

    def keep(*args, **kwargs):
        decision = original_decide(*args, **kwargs)
        decision.keep = True
        return decision

    original_decide = node_module.decide_split
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NodeExpertsClassifier, "score", score)
        mp.setattr(node_module, "decide_split", keep)
        yield


def _fit(est, supervised=True):
    with warnings.catch_warnings(), splits_preferred():
        warnings.simplefilter("ignore")
        return est.fit(X, Y) if supervised else est.fit(X)


@pytest.fixture(scope="module")
def fitted():
    """Every case fitted once for the whole module."""
    out = {name: _fit(est, supervised) for name, est, supervised in CASES}
    for name, est in out.items():
        if name.startswith("tree-") and name != "tree-depth0":
            assert est.n_leaves_ > 1, f"{name}: the fixture must grow a split tree"
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


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_pickle_and_joblib_round_trip(fitted, name, tmp_path):
    est = fitted[name]
    expected = _outputs(est)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(_outputs(again), expected)
    joblib.dump(est, tmp_path / "m.joblib")
    np.testing.assert_array_equal(
        _outputs(joblib.load(tmp_path / "m.joblib")), expected
    )


UNFITTED = [c for c in CASES if c[0] in ("tree-kmeans-finetune", "dec", "moe-topk")]


@pytest.mark.parametrize(
    "name, est, supervised", UNFITTED, ids=[c[0] for c in UNFITTED]
)
def test_pickle_unfitted_then_fit(fitted, name, est, supervised):
    from sklearn.base import clone

    again = pickle.loads(pickle.dumps(clone(est)))
    assert repr(again) == repr(est)
    np.testing.assert_array_equal(
        _outputs(_fit(again, supervised)), _outputs(fitted[name])
    )


def _pretend_trained_on_cuda(est):
    """Mark every net (and estimator) as living on CUDA, as after a GPU fit.

    The weights stay on the CPU; writing them under a patched
    ``torch.serialization.location_tag`` tags their storages ``cuda:0``, so
    the files are what a CUDA machine writes (loading them without a map
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
    est = _fit(tiny_tree(expert="head"))
    assert est.n_leaves_ > 1
    expected = est.predict_proba(X)
    _pretend_trained_on_cuda(est)
    with _as_cuda_file():
        save(est, tmp_path / "gpu.hemoe")
    with _no_cuda():
        with pytest.warns(RuntimeWarning, match="trained on CUDA.*loaded on the CPU"):
            loaded = load(tmp_path / "gpu.hemoe")
    assert all(torch.device(net.device).type == "cpu" for net in _nets(loaded))
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    assert loaded.device == "cuda"  # the parameter is kept as the user set it


# --------------------------------------------------------------------------
# The safe format
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c[0] for c in CASES])
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
    # saving the loaded model gives the same content
    again = save(loaded, tmp_path / "again.hemoe")
    assert describe(again)["types"] == describe(path)["types"]


def test_safe_format_keeps_tree_structure_and_sharing(fitted, tmp_path):
    est = fitted["tree-kmeans-finetune"]
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert loaded.export_text() == est.export_text()
    assert loaded.n_leaves_ == est.n_leaves_ and loaded.depth_ == est.depth_
    # one net object per saved net: the root node's embedder is embedder_,
    # and a fine-tuned expert's net is its child's embedder
    assert loaded.tree_.nodes[0].embedder is loaded.embedder_
    for node in loaded.tree_.nodes[1:]:
        if getattr(node.classifier, "net", None) is not None:
            assert node.classifier.net is node.embedder
    np.testing.assert_array_equal(loaded.apply(X), est.apply(X))
    assert (loaded.decision_path(X) != est.decision_path(X)).nnz == 0


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
    loaded = _fit(load(save(fitted["tree-dec-router"], tmp_path / "m.hemoe")))
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-dec-router"].predict_proba(X)
    )


def test_unfitted_estimator_round_trip(tmp_path):
    est = tiny_tree(clusterer=tiny_dec(), optimizer=torch.optim.SGD, cv=3)
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert repr(loaded) == repr(est)
    assert loaded.optimizer is torch.optim.SGD
    assert loaded.get_params()["embedder__hidden_dims"] == (8,)


def test_load_onto_a_named_device(fitted, tmp_path):
    loaded = load(
        save(fitted["tree-kmeans-head-soft"], tmp_path / "m.hemoe"), device="cpu"
    )
    assert all(torch.device(net.device).type == "cpu" for net in _nets(loaded))
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-kmeans-head-soft"].predict_proba(X)
    )


def test_torch_device_and_splitter_parameters(tmp_path):
    from sklearn.model_selection import StratifiedKFold

    est = tiny_tree(device=torch.device("cpu"), cv=StratifiedKFold(3))
    loaded = load(save(est, tmp_path / "m.hemoe"))
    assert loaded.device == torch.device("cpu")
    assert repr(loaded.cv) == repr(est.cv)


def test_module_with_hooks_is_refused(tmp_path):
    est = tiny_tree(max_depth=0).fit(X, Y)
    est.embedder_.module_.register_forward_hook(lambda *args: None)
    with pytest.raises(UnsupportedComponentError, match="_forward_hooks"):
        save(est.embedder_.module_, tmp_path / "m.hemoe")


def test_file_objects(fitted):
    buf = io.BytesIO()
    save(fitted["dec"], buf)
    buf.seek(0)
    np.testing.assert_array_equal(load(buf).transform(X), fitted["dec"].transform(X))


def test_describe_lists_versions_and_types(fitted, tmp_path):
    info = describe(save(fitted["tree-kmeans-finetune"], tmp_path / "m.hemoe"))
    assert info["estimator"].endswith(":HierarchicalEmbeddingMoEClassifier")
    assert set(info["versions"]) == {
        "hemoe_sk",
        "torch",
        "scikit-learn",
        "skorch",
        "numpy",
    }
    assert "sklearn.cluster._kmeans:KMeans" in info["types"]
    assert info["untrusted_types"] == []
    assert set(info["types"]) <= set(default_trusted_types())


def test_fitted_state_of_nets_is_not_pickled(fitted, tmp_path):
    path = save(fitted["tree-kmeans-head-soft"], tmp_path / "m.hemoe")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        for name in names:
            if name.endswith(".npy"):
                np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
            if name.endswith(".pt"):
                torch.load(io.BytesIO(zf.read(name)), weights_only=True)
    assert "manifest.json" in names
    assert all(
        n.startswith(("arrays/", "tensors/")) for n in names if n != "manifest.json"
    )
    assert manifest["format_version"] == 1


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


# -- what the format refuses when loading ------------------------------------


def _rewrite(path, out, members=None, manifest=None):
    """Copy a model file, replacing members and editing the manifest, with
    checksums updated as a deliberate attacker would."""
    members = dict(members or {})
    with zipfile.ZipFile(path) as zf:
        data = {n: zf.read(n) for n in zf.namelist()}
    data.update(members)
    meta = json.loads(data["manifest.json"])
    for name in members:
        if name != "manifest.json":
            meta["members"][name] = hashlib.sha256(data[name]).hexdigest()
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
        fitted["tree-kmeans-finetune"], tmp_path_factory.mktemp("m") / "m.hemoe"
    )


def _first(path, prefix):
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if n.startswith(prefix))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_injected_pickle_payload_is_refused(model_file, tmp_path, how):
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
    with pytest.raises(
        ModelFileError, match=r"refused by torch.load\(weights_only=True\)"
    ):
        load(evil)
    assert not marker.exists()


def test_object_array_payload_is_refused(model_file, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    evil = _rewrite(
        model_file,
        tmp_path / "evil.hemoe",
        {_first(model_file, "arrays/"): buf.getvalue()},
    )
    with pytest.raises(ModelFileError, match="array .* was refused"):
        load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os:system", "builtins:eval", "subprocess:Popen"])
def test_type_outside_allowlist_is_refused(model_file, tmp_path, name):
    def edit(meta):
        meta["objects"][0]["type"] = name

    evil = _rewrite(model_file, tmp_path / "evil.hemoe", manifest=edit)
    with pytest.raises(UntrustedTypeError, match=f"{name}.*not in the allowlist"):
        load(evil)


def test_state_cannot_replace_methods(model_file, tmp_path):
    def edit(meta):
        meta["objects"][0]["state"]["predict_proba"] = {"$type": "torch.optim.sgd:SGD"}

    evil = _rewrite(model_file, tmp_path / "evil.hemoe", manifest=edit)
    with pytest.raises(ModelFileError, match="would replace a method"):
        load(evil)


def test_truncated_and_corrupted_files(model_file, tmp_path):
    with open(model_file, "rb") as f:
        blob = f.read()
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
        meta["members"][name] = "0" * 64

    with pytest.raises(ModelFileError, match="does not match its checksum"):
        load(_rewrite(model_file, tmp_path / "a.hemoe", manifest=bad_digest))

    def extra(meta):
        meta["members"]["tensors/999"] = "0" * 64
        meta["objects"].append(
            {
                "kind": "object",
                "type": "hemoe_sk.tree:HierarchyTree",
                "state": {"nodes": {"$tensor": "tensors/999"}},
            }
        )
        meta["root"] = {"$ref": len(meta["objects"]) - 1}

    with pytest.raises(ModelFileError, match="missing"):
        load(_rewrite(model_file, tmp_path / "b.hemoe", manifest=extra))


def test_not_our_format_and_newer_format(model_file, tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="has no manifest.json"):
        load(tmp_path / "other.zip")

    def newer(meta):
        meta["format_version"] = 99

    with pytest.raises(ModelFileError, match="format version 99.*Upgrade hemoe_sk"):
        load(_rewrite(model_file, tmp_path / "new.hemoe", manifest=newer))


def test_other_library_versions_warn(model_file, fitted, tmp_path):
    def older(meta):
        meta["versions"]["torch"] = "1.0.0"
        meta["versions"]["hemoe_sk"] = "0.0.1"

    path = _rewrite(model_file, tmp_path / "old.hemoe", manifest=older)
    with pytest.warns(ModelVersionWarning, match=r"torch 1\.0\.0 \(file\)"):
        loaded = load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(X), fitted["tree-kmeans-finetune"].predict_proba(X)
    )


def test_same_versions_do_not_warn(model_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(model_file)


def test_load_never_changes_global_rng(model_file):
    torch.manual_seed(3)
    np.random.seed(3)
    t, n = torch.get_rng_state(), np.random.get_state()[1].copy()
    load(model_file)
    assert torch.equal(t, torch.get_rng_state())
    np.testing.assert_array_equal(n, np.random.get_state()[1])
