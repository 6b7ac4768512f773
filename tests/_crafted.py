"""Crafted model files for the attack and fuzz tests (not tests themselves).

:func:`fit_models` fits tiny models of every kind once; :func:`crafted`
turns their saved files into malicious ones, each as an attacker would
write it (checksums and sizes updated unless the attack is about them).
Every entry of :data:`CRAFTS` is ``(name, issue class, model, recipe)``:
the issue-19 class it covers (1 net parameters, 2 allocation, 3 sizes, 4
validation, 0 the format's basics: pickles, paths, checksums), the model
it starts from and the function that writes the file's bytes.
"""

import hashlib
import io
import json
import pickle
import struct
import warnings
import zipfile

import numpy as np
import torch
from sklearn.cluster import KMeans

from hemoe_sk import (
    HierarchicalEmbeddingMoEClassifier,
    HierarchicalEmbeddingMoERegressor,
    MixtureOfAutoencodersClusterer,
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    save,
)

MARKER = "hemoe_sk_crafted_pwned"


def data(n=90, n_features=5, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.randn(n_classes * 2, n_features) * 3
    labels = np.arange(n) % (n_classes * 2)
    X = (centers[labels] + rng.randn(n, n_features)).astype(np.float32)
    return X, labels % n_classes


def _tree(cls=HierarchicalEmbeddingMoEClassifier, **params):
    base = dict(
        max_epochs=3,
        expert_max_epochs=1,
        lr=0.03,
        embedder__hidden_dims=(6,),
        max_depth=1,
        n_clusters_grid=(2,),
        clusterer=KMeans(n_init=1),
        min_cluster_size=3,
        split_test="none",
        random_state=0,
    )
    return cls(**{**base, **params})


#: The models crafted files start from (unfitted).
MODELS = {
    "tree": lambda: _tree(routing="hard"),
    "lora": lambda: _tree(expert="lora", expert_kl=0.5),
    "residual": lambda: _tree(expert="residual"),
    "reg": lambda: _tree(HierarchicalEmbeddingMoERegressor),
    "moereg": lambda: MixtureOfExpertsRegressor(
        n_experts=3, expert_hidden=(4,), gate_hidden=(), max_epochs=2, random_state=0
    ),
    "moe": lambda: MixtureOfExpertsClassifier(
        n_experts=3, expert_hidden=(4,), gate_hidden=(), max_epochs=2, random_state=0
    ),
    "mixae": lambda: MixtureOfAutoencodersClusterer(
        n_clusters=2,
        hidden_dims=(6,),
        embedding_dim=2,
        assignment_hidden_dims=(4,),
        pretrain_epochs=2,
        init_epochs=1,
        max_epochs=2,
        n_init=1,
        random_state=0,
    ),
}


def fit_models():
    """``{name: (fitted model, saved bytes)}`` for every entry of MODELS."""
    X, y = data()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in MODELS.items():
            est = make()
            if name == "mixae":
                est.fit(X)
            elif name in ("reg", "moereg"):
                est.fit(X, X[:, :2] @ np.array([[1.0], [-2.0]], dtype=np.float32))
            else:
                est.fit(X, y)
            buf = io.BytesIO()
            save(est, buf)
            out[name] = (est, buf.getvalue())
    return out


# -- rewriting files ---------------------------------------------------------------


def unpack(blob):
    """(members by name, manifest dict) of a model file."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return members, json.loads(members["manifest.json"])


def pack(members, meta=None, declare=True, compression=zipfile.ZIP_DEFLATED):
    """A zip of ``members`` with ``meta`` as its manifest; sizes and digests
    of the members updated in the manifest (``declare``), as a deliberate
    attacker would."""
    members = dict(members)
    if meta is not None:
        if declare:
            for name, blob in members.items():
                if name != "manifest.json":
                    entry = meta["members"].setdefault(name, {})
                    entry["sha256"] = hashlib.sha256(blob).hexdigest()
                    entry["size"] = len(blob)
        members["manifest.json"] = json.dumps(meta).encode()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicates
        with zipfile.ZipFile(buf, "w", compression=compression) as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
    return buf.getvalue()


def edit(fn, declare=True):
    """A recipe editing the manifest (and maybe members) of the file."""

    def recipe(blob):
        members, meta = unpack(blob)
        fn(meta, members)
        return pack(members, meta, declare=declare)

    return recipe


def records(meta, cls):
    return [r for r in meta["objects"] if r.get("class") == cls]


def first(meta, cls):
    return records(meta, cls)[0]


def nodes(meta):
    tree = first(meta, "HierarchyTree")
    return [meta["objects"][ref["$ref"]] for ref in tree["init"]["nodes"]]


def member(members, prefix):
    return next(n for n in members if n.startswith(prefix))


def header(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def st_bytes(head, body, pad=b""):
    raw = json.dumps(head).encode() + pad
    return struct.pack("<Q", len(raw)) + raw + body


def npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


class _Payload:
    """Unpickling this creates a directory: proof that code ran."""

    def __reduce__(self):
        import os

        return (os.mkdir, (MARKER,))


def _patch_central(blob, fn):
    """Patch the end-of-central-directory record (``fn(bytearray, pos)``)."""
    raw = bytearray(blob)
    fn(raw, raw.rfind(b"PK\x05\x06"))
    return bytes(raw)


def _patch_entry(blob, name, offset, fmt, value, local_offset=None):
    raw = bytearray(blob)
    encoded = name.encode()
    pos = raw.find(b"PK\x01\x02")
    while pos != -1:
        n = struct.unpack("<H", raw[pos + 28 : pos + 30])[0]
        if raw[pos + 46 : pos + 46 + n] == encoded:
            struct.pack_into(fmt, raw, pos + offset, value)
        pos = raw.find(b"PK\x01\x02", pos + 4)
    if local_offset is not None:
        pos = raw.find(b"PK\x03\x04")
        while pos != -1:
            n = struct.unpack("<H", raw[pos + 26 : pos + 28])[0]
            if raw[pos + 30 : pos + 30 + n] == encoded:
                struct.pack_into(fmt, raw, pos + local_offset, value)
            pos = raw.find(b"PK\x03\x04", pos + 4)
    return bytes(raw)


def _tensor_name(meta, cls="HemoeNeuralNetClassifier"):
    return first(meta, cls)["state_dicts"]["module"]


# -- the recipes --------------------------------------------------------------------

CRAFTS = []


def craft(name, kind, model="tree"):
    def register(fn):
        CRAFTS.append((name, kind, model, fn))
        return fn

    return register


def crafted_edit(name, kind, model="tree", declare=True):
    """Register a manifest edit ``fn(meta, members)``."""

    def register(fn):
        CRAFTS.append((name, kind, model, edit(fn, declare)))
        return fn

    return register


def _set_param(cls, key, value):
    def fn(meta, members):
        first(meta, cls)["params"][key] = value

    return fn


# 0. the format's basics: pickles, paths, checksums, versions ---------------------

craft("empty-file", 0)(lambda blob: b"")
craft("text-file", 0)(lambda blob: b"not a model at all")
craft("truncated-half", 0)(lambda blob: blob[: len(blob) // 2])
craft("truncated-tail", 0)(lambda blob: blob[:-30])
craft("no-manifest", 0)(
    lambda blob: pack({k: v for k, v in unpack(blob)[0].items() if k != "manifest.json"})
)
craft("manifest-not-json", 0)(
    lambda blob: pack({**unpack(blob)[0], "manifest.json": b"{not json"})
)
craft("manifest-a-list", 0)(lambda blob: pack({**unpack(blob)[0], "manifest.json": b"[]"}))
crafted_edit("other-format", 0)(lambda m, _: m.update(format="pickle"))
crafted_edit("format-version-99", 0)(lambda m, _: m.update(format_version=99))
crafted_edit("format-version-string", 0)(lambda m, _: m.update(format_version="2"))


@craft("pickle-as-safetensors", 0)
def _pickle_weights(blob):
    members, meta = unpack(blob)
    members[_tensor_name(meta)] = pickle.dumps({"w": _Payload()})
    return pack(members, meta)


@craft("torch-save-as-safetensors", 0)
def _torch_weights(blob):
    members, meta = unpack(blob)
    buf = io.BytesIO()
    torch.save({"w": _Payload()}, buf)
    members[_tensor_name(meta)] = buf.getvalue()
    return pack(members, meta)


@craft("object-array-declared", 0)
def _object_array(blob):
    members, meta = unpack(blob)
    name = member(members, "arrays/")
    members[name] = npy(np.array([_Payload()], dtype=object), allow_pickle=True)
    meta["members"][name].update(dtype="|O", shape=[1])
    return pack(members, meta)


@craft("object-array-undeclared", 0)
def _object_array2(blob):
    members, meta = unpack(blob)
    members[member(members, "arrays/")] = npy(
        np.array([_Payload()], dtype=object), allow_pickle=True
    )
    return pack(members, meta)


def _extra_member(name, blob_fn=lambda: b"x"):
    def recipe(blob):
        members, meta = unpack(blob)
        members[name] = blob_fn()
        return pack(members, meta)

    return recipe


craft("pt-member", 0)(_extra_member("tensors/99.pt", lambda: pickle.dumps(_Payload())))
craft("path-traversal", 0)(_extra_member("../evil.npy"))
craft("absolute-path", 0)(_extra_member("/tmp/evil.npy"))
craft("nested-traversal", 0)(_extra_member("arrays/../../evil.npy"))
craft("backslash-path", 0)(_extra_member("arrays\\1.npy"))


@craft("duplicate-manifest", 0)
def _duplicate(blob):
    members, _ = unpack(blob)
    items = list(members.items()) + [("manifest.json", members["manifest.json"])]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data_ in items:
                zf.writestr(name, data_)
    return buf.getvalue()


@craft("many-duplicate-members", 3)
def _many_duplicates(blob):
    # 30,000 entries of one name (under the member cap): the duplicate check
    # must be linear, not quadratic
    members, _ = unpack(blob)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("manifest.json", members["manifest.json"])
            for _ in range(30_000):
                zf.writestr("arrays/0.npy", b"")
    return buf.getvalue()


@craft("unlisted-member", 0)
def _unlisted(blob):
    members, meta = unpack(blob)
    members["arrays/999.npy"] = npy(np.zeros(3))
    return pack(members, None)


@crafted_edit("bad-checksum", 0, declare=False)
def _bad_digest(meta, members):
    meta["members"][member(members, "tensors/")]["sha256"] = "0" * 64


@craft("missing-member", 0)
def _missing(blob):
    members, meta = unpack(blob)
    del members[member(members, "tensors/")]
    return pack(members, meta, declare=False)


crafted_edit("negative-member-size", 0, declare=False)(
    lambda m, ms: m["members"][member(ms, "arrays/")].update(size=-5)
)


@craft("encrypted-flag", 0)
def _encrypted(blob):
    members, _ = unpack(blob)
    name = member(members, "arrays/")
    return _patch_entry(blob, name, 8, "<H", 0x1, local_offset=6)


@craft("bzip2-member", 0)
def _bzip2(blob):
    members, meta = unpack(blob)
    return pack(members, meta, compression=zipfile.ZIP_BZIP2)


# 1. net parameters ---------------------------------------------------------------

_NET = "HemoeNeuralNetClassifier"
crafted_edit("compile-with-options", 1)(
    lambda m, _: first(m, _NET)["params"].update(
        compile=True,
        compile__options={"$dict": [["cpp.cxx", ["/bin/sh", "-c", "touch pwned"]]]},
    )
)
crafted_edit("compile-true", 1)(_set_param(_NET, "compile", True))


@crafted_edit("module-instance", 1)
def _module_instance(meta, members):
    # the module parameter names another record (an object) instead of a class
    first(meta, _NET)["params"]["module"] = {"$ref": meta["objects"].index(
        first(meta, "FiniteLossGuard")
    )}


crafted_edit("dataloader-workers", 1)(
    _set_param(_NET, "iterator_train__num_workers", 64)
)
crafted_edit("unknown-net-param", 1)(_set_param(_NET, "evil", 1))
crafted_edit("optimizer-fused", 1)(_set_param(_NET, "optimizer__fused", True))
crafted_edit("module-is-a-loss", 1)(
    _set_param(_NET, "module", {"$class": "torch.nn.MSELoss"})
)
crafted_edit("optimizer-is-a-loader", 1)(
    _set_param(_NET, "optimizer", {"$class": "torch.utils.data.DataLoader"})
)
crafted_edit("module-unknown-arg", 1)(_set_param(_NET, "module__evil", 3))
crafted_edit("module-arg-a-class", 1)(
    _set_param(_NET, "module__hidden_dims", {"$class": "torch.optim.SGD"})
)
crafted_edit("torch-load-kwargs", 1)(
    _set_param(_NET, "torch_load_kwargs", {"$dict": [["weights_only", False]]})
)
crafted_edit("train-split-class", 1)(
    _set_param(_NET, "train_split", {"$class": "skorch.dataset.ValidSplit"})
)
crafted_edit("criterion-weight", 1)(_set_param(_NET, "criterion__weight", [1, 2, 3]))


@crafted_edit("callback-not-a-callback", 1)
def _callback(meta, members):
    kmeans = meta["objects"].index(first(meta, "sklearn.cluster.KMeans"))
    first(meta, _NET)["params"]["callbacks"] = [{"$tuple": ["x", {"$ref": kmeans}]}]


crafted_edit("expert-net-with-module", 1, "lora")(
    _set_param("ExpertNeuralNetClassifier", "module", {"$class": "MLPEmbedder"})
)


@crafted_edit("expert-parent-not-a-net", 1, "lora")
def _expert_parent(meta, members):
    kmeans = meta["objects"].index(first(meta, "sklearn.cluster.KMeans"))
    first(meta, "ExpertNeuralNetClassifier")["parent"] = {"$ref": kmeans}


# 2. allocation before verification ---------------------------------------------------

crafted_edit("huge-hidden-dims", 2)(
    _set_param(_NET, "module__hidden_dims", {"$tuple": [10**6, 10**6]})
)
crafted_edit("long-hidden-dims", 2)(
    _set_param(_NET, "module__hidden_dims", {"$tuple": [2] * 4000})
)
crafted_edit("huge-n-features", 2)(_set_param(_NET, "module__n_features", 10**9))
crafted_edit("moe-huge-classes", 2, "moe")(
    _set_param(_NET, "module__n_classes", 10**9)
)
crafted_edit("moe-huge-experts", 2, "moe")(
    _set_param(_NET, "module__n_experts", 10**7)
)
# found by the fuzz test: int(1e308) experts, built one by one on meta
crafted_edit("moe-float-experts", 2, "moereg")(
    _set_param("HemoeNeuralNetRegressor", "module__n_experts", 1e308)
)
crafted_edit("moe-string-experts", 2, "moe")(
    _set_param(_NET, "module__n_experts", "1000000000")
)


def _mixae_args(**changes):
    def fn(meta, members):
        args = first(meta, "_MixtureOfAutoencoders")["args"]
        for k, v in changes.items():
            args["$dict"] = [[a, v if a == k else b] for a, b in args["$dict"]]

    return fn


crafted_edit("mixae-huge-count", 2, "mixae")(_mixae_args(n_autoencoders=10**6))
crafted_edit("mixae-huge-width", 2, "mixae")(_mixae_args(hidden_dims=[10**6]))
crafted_edit("mixae-wrong-count", 2, "mixae")(_mixae_args(n_autoencoders=3))


def _recipe(**changes):
    def fn(meta, members):
        first(meta, "ExpertNeuralNetClassifier")["recipe"].update(changes)

    return fn


crafted_edit("lora-huge-rank", 2, "lora")(_recipe(rank=10**6))
crafted_edit("lora-other-rank", 2, "lora")(_recipe(rank=3))
crafted_edit("expert-unknown-kind", 2, "lora")(_recipe(kind="exec"))
crafted_edit("expert-negative-kl", 2, "lora")(_recipe(kl_weight=-1.0))
crafted_edit("expert-residual-as-lora", 2, "residual")(
    _recipe(kind="lora", rank=4, alpha=4.0, conv=True)
)


@craft("tensor-shapes-grown-consistently", 2)
def _grown(blob):
    # manifest and header agree on a bigger first layer that the bytes lack
    members, meta = unpack(blob)
    name = _tensor_name(meta)
    head, body = header(members[name])
    key = next(k for k in head if k != "__metadata__")
    head[key]["shape"] = [s * 1000 for s in head[key]["shape"]]
    meta["members"][name]["tensors"][key]["shape"] = head[key]["shape"]
    members[name] = st_bytes(head, body)
    return pack(members, meta)


# 3. sizes and counts ---------------------------------------------------------------


@craft("tensor-header-length-huge", 3)
def _header_len(blob):
    members, meta = unpack(blob)
    members[_tensor_name(meta)] = struct.pack("<Q", 10**9) + b"{}"
    return pack(members, meta)


@craft("tensor-header-over-cap", 3)
def _header_cap(blob):
    members, meta = unpack(blob)
    name = _tensor_name(meta)
    head, body = header(members[name])
    members[name] = st_bytes(head, body, pad=b" " * (2**20 + 10))
    return pack(members, meta)


@craft("tensor-offsets-overlap", 3)
def _overlap(blob):
    members, meta = unpack(blob)
    name = _tensor_name(meta)
    head, body = header(members[name])
    keys = [k for k in head if k != "__metadata__"]
    head[keys[1]]["data_offsets"] = head[keys[0]]["data_offsets"]
    members[name] = st_bytes(head, body)
    return pack(members, meta)


@craft("tensor-bad-dtype", 3)
def _st_dtype(blob):
    members, meta = unpack(blob)
    name = _tensor_name(meta)
    head, body = header(members[name])
    key = next(k for k in head if k != "__metadata__")
    head[key]["dtype"] = "C64"
    members[name] = st_bytes(head, body)
    return pack(members, meta)


@craft("tensor-duplicate-keys", 3)
def _st_dupes(blob):
    members, meta = unpack(blob)
    name = _tensor_name(meta)
    head, body = header(members[name])
    raw = json.dumps(head)
    key = next(k for k in head if k != "__metadata__")
    raw = raw[:-1] + f', "{key}": ' + json.dumps(head[key]) + "}"
    members[name] = struct.pack("<Q", len(raw)) + raw.encode() + body
    return pack(members, meta)


@craft("tensor-shape-other-than-declared", 3)
def _st_other(blob):
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    members, meta = unpack(blob)
    name = _tensor_name(meta)
    tensors = st_load(members[name])
    key = next(iter(tensors))
    tensors[key] = torch.zeros(3, 1, 1)
    members[name] = st_save(tensors)
    return pack(members, meta)


@craft("tensor-extra-key", 3)
def _st_extra(blob):
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    members, meta = unpack(blob)
    name = _tensor_name(meta)
    tensors = st_load(members[name])
    tensors["evil"] = torch.zeros(2)
    members[name] = st_save(tensors)
    return pack(members, meta)


@craft("npy-shape-lie", 3)
def _npy_lie(blob):
    # a header declaring 10^12 items over the few bytes of the real array,
    # the manifest agreeing with the header
    members, meta = unpack(blob)
    name = member(members, "arrays/")
    arr = np.load(io.BytesIO(members[name]))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf,
        {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False,
         "shape": (10**12,)},
    )
    members[name] = buf.getvalue() + arr.tobytes()
    meta["members"][name]["shape"] = [10**12]
    return pack(members, meta)


@craft("npy-bigger-than-declared", 3)
def _npy_bigger(blob):
    members, meta = unpack(blob)
    name = member(members, "arrays/")
    arr = np.load(io.BytesIO(members[name]))
    members[name] = npy(np.zeros(arr.size + 1000, dtype=arr.dtype))
    out = pack(members, meta)
    members2, meta2 = unpack(out)
    meta2["members"][name]["shape"] = list(arr.shape)
    return pack(members2, meta2)


@craft("zip-bomb-member", 3)
def _bomb(blob):
    members, meta = unpack(blob)
    members[member(members, "arrays/")] = npy(np.zeros(2**20))  # 8 MiB of zeros
    return pack(members, meta)


@craft("zip-size-lie", 3)
def _size_lie(blob):
    members, _ = unpack(blob)
    return _patch_entry(blob, member(members, "tensors/"), 24, "<I", 16, local_offset=22)


@craft("zip-and-manifest-size-lie", 3)
def _size_lie2(blob):
    members, meta = unpack(blob)
    name = member(members, "tensors/")
    meta["members"][name]["size"] = 16
    out = pack(members, meta, declare=False)
    return _patch_entry(out, name, 24, "<I", 16, local_offset=22)


@craft("eocd-member-count", 3)
def _eocd_count(blob):
    return _patch_central(
        blob, lambda raw, pos: struct.pack_into("<HH", raw, pos + 8, 60000, 60000)
    )


@craft("eocd-directory-size", 3)
def _eocd_size(blob):
    return _patch_central(
        blob, lambda raw, pos: struct.pack_into("<I", raw, pos + 12, 2**31)
    )


@craft("manifest-over-cap", 3)
def _manifest_big(blob):
    members, meta = unpack(blob)
    meta["metadata"] = {"pad": "x" * (5 * 2**20)}
    return pack(members, meta)


@craft("manifest-deeply-nested", 3)
def _manifest_deep(blob):
    members, _ = unpack(blob)
    return pack({**members, "manifest.json": b"[" * 200_000 + b"]" * 200_000})


@crafted_edit("member-referenced-twice", 3)
def _shared_member(meta, members):
    # one small member read again for every reference: loading work that
    # grows with references, not with the file
    classes = meta["objects"][0]["arrays"]["classes_"]
    for node in nodes(meta):
        node["init"]["class_counts"] = dict(classes)


@craft("manifest-many-containers", 3)
def _manifest_containers(blob):
    # the most Python objects a manifest under the cap parses to
    members, meta = unpack(blob)
    meta["objects"] = "__objects__"
    text = json.dumps(meta)
    room = 2 * 2**20 - len(text) - 64
    filler = "[" + ",".join(["[]"] * (room // 3)) + "]"
    text = text.replace('"__objects__"', filler)
    # stored: deflated, the filler would be refused for its compression ratio
    return pack({**members, "manifest.json": text.encode()}, compression=zipfile.ZIP_STORED)


@crafted_edit("too-many-objects", 3)
def _many_objects(meta, members):
    meta["objects"].extend({"class": "FiniteLossGuard", "init": {}} for _ in range(60_000))


@craft("params-deeply-nested", 3)
def _params_deep(blob):
    members, meta = unpack(blob)
    meta["objects"][0]["params"]["verbose"] = "__deep__"
    text = json.dumps(meta).replace('"__deep__"', "[" * 5000 + "1" + "]" * 5000)
    return pack({**members, "manifest.json": text.encode()})


@crafted_edit("object-array-shape-lie", 3)
def _objarray(meta, members):
    meta["objects"][0]["params"]["verbose"] = {
        "$objarray": {"shape": [10**6, 10**6], "items": [1]}
    }


# 4. validation of the decoded model ------------------------------------------------


def _node(i, **changes):
    def fn(meta, members):
        nodes(meta)[i]["init"].update(changes)

    return fn


crafted_edit("root-is-its-own-child", 4)(_node(0, children=[0, 1]))
crafted_edit("child-out-of-range", 4)(_node(0, children=[1, 99]))
crafted_edit("negative-child", 4)(_node(0, children=[1, -1]))
crafted_edit("shared-subtree", 4)(_node(0, children=[1, 1]))
crafted_edit("child-not-an-int", 4)(_node(0, children=[1, "2"]))
crafted_edit("node-id-mismatch", 4)(_node(1, node_id=2))
crafted_edit("child-depth-wrong", 4)(_node(1, depth=5))
crafted_edit("unreachable-nodes", 4)(_node(0, children=[]))
crafted_edit("leaf-with-children", 4)(_node(1, children=[2]))


@crafted_edit("router-width-mismatch", 4)
def _router_width(meta, members):
    first(meta, "Router")["init"]["n_clusters"] = 3


@crafted_edit("clusterer-width-mismatch", 4)
def _clusterer_width(meta, members):
    router = first(meta, "Router")
    router["init"]["n_clusters"] = 3
    root = nodes(meta)[0]
    root["init"]["children"] = root["init"]["children"] + [2]
    nodes(meta)[2]["init"].update(parent=0, depth=1)


@crafted_edit("tree-huge-n-classes", 4)
def _huge_classes(meta, members):
    first(meta, "HierarchyTree")["init"]["n_classes"] = 10**9


@craft("classes-shorter-than-head", 4)
def _short_classes(blob):
    members, meta = unpack(blob)
    name = meta["objects"][0]["arrays"]["classes_"]["$array"]
    members[name] = npy(np.array([0, 1]))
    meta["members"][name].update(shape=[2])
    return pack(members, meta)


@craft("duplicate-class-labels", 4)
def _dup_classes(blob):
    members, meta = unpack(blob)
    name = meta["objects"][0]["arrays"]["classes_"]["$array"]
    members[name] = npy(np.array([0, 1, 1]))
    return pack(members, meta)


@crafted_edit("estimator-contains-itself", 4)
def _self_ref(meta, members):
    meta["objects"][0]["params"]["clusterer"] = {"$ref": 0}


@crafted_edit("constant-expert-out-of-range", 4)
def _constant(meta, members):
    meta["objects"].append(
        {"class": "ConstantExpert", "init": {"class_index": 7, "n_classes": 3}}
    )
    nodes(meta)[1]["init"]["classifier"] = {"$ref": len(meta["objects"]) - 1}


@crafted_edit("expert-is-a-kmeans", 4)
def _expert_kmeans(meta, members):
    kmeans = meta["objects"].index(first(meta, "sklearn.cluster.KMeans"))
    nodes(meta)[1]["init"]["classifier"] = {"$ref": kmeans}


def _reg_array(attr, value):
    def recipe(blob):
        members, meta = unpack(blob)
        name = meta["objects"][0]["arrays"][attr]["$array"]
        arr = np.load(io.BytesIO(members[name])).copy()
        arr[...] = value
        members[name] = npy(arr)
        return pack(members, meta)

    return recipe


craft("infinite-target-scale", 4, "reg")(_reg_array("y_scale_", np.inf))
craft("nan-target-mean", 4, "reg")(_reg_array("y_mean_", np.nan))
craft("zero-target-scale", 4, "reg")(_reg_array("y_scale_", 0.0))
crafted_edit("net-device-meta", 4)(_set_param(_NET, "device", "meta"))
crafted_edit("estimator-device-meta", 4)(
    lambda m, _: m["objects"][0]["params"].update(device="meta")
)
crafted_edit("device-tag-meta", 4)(
    lambda m, _: first(m, _NET)["params"].update(device={"$device": "meta"})
)
crafted_edit("root-a-class", 4)(lambda m, _: m.update(root={"$class": "torch.optim.SGD"}))
crafted_edit("root-a-number", 4)(lambda m, _: m.update(root=42))
crafted_edit("root-null", 4)(lambda m, _: m.update(root=None))


@crafted_edit("root-a-node", 4)
def _root_node(meta, members):
    tree = first(meta, "HierarchyTree")
    meta["root"] = tree["init"]["nodes"][0]


@crafted_edit("pipeline-of-a-node", 4)
def _pipeline_node(meta, members):
    node = first(meta, "HierarchyTree")["init"]["nodes"][0]
    meta["objects"].append(
        {
            "class": "sklearn.pipeline.Pipeline",
            "params": {
                "steps": [{"$tuple": ["a", node]}],
                "memory": None,
                "transform_input": None,
                "verbose": False,
            },
            "state": {},
        }
    )
    meta["root"] = {"$ref": len(meta["objects"]) - 1}


@crafted_edit("kmeans-undeclared-state", 4)
def _kmeans_state(meta, members):
    first(meta, "sklearn.cluster.KMeans")["state"]["_evil_"] = 1


@crafted_edit("kmeans-method-shadow", 4)
def _kmeans_method(meta, members):
    first(meta, "sklearn.cluster.KMeans")["state"]["predict"] = 1


@crafted_edit("estimator-method-shadow", 4)
def _estimator_method(meta, members):
    meta["objects"][0]["values"]["predict_proba"] = {"$class": "torch.optim.SGD"}


crafted_edit("n-jobs-storm", 4)(lambda m, _: m["objects"][0]["params"].update(n_jobs=10**6))
crafted_edit("unknown-class-object", 4)(
    lambda m, _: m["objects"][0].update({"class": "os:system"})
)
crafted_edit("unknown-class-param", 4)(
    lambda m, _: m["objects"][0]["params"].update(optimizer={"$class": "builtins:eval"})
)
crafted_edit("optimizer-as-object", 4)(
    lambda m, _: m["objects"][0].update({"class": "torch.optim.SGD"})
)
crafted_edit("estimator-as-class", 4)(
    lambda m, _: m["objects"][0]["params"].update(
        optimizer={"$class": "sklearn.pipeline.Pipeline"}
    )
)


@crafted_edit("moe-classes-vs-head", 4, "moe")
def _moe_classes(meta, members):
    name = meta["objects"][0]["arrays"]["classes_"]["$array"]
    members[name] = npy(np.array([0, 1]))
    meta["members"][name].update(shape=[2])


@crafted_edit("embedder-not-a-net", 4)
def _embedder(meta, members):
    kmeans = meta["objects"].index(first(meta, "sklearn.cluster.KMeans"))
    meta["objects"][0]["values"]["embedder_"] = {"$ref": kmeans}


@crafted_edit("features-vs-embedder", 4)
def _features(meta, members):
    meta["objects"][0]["values"]["n_features_in_"] = 10**9


# The default recipe's module (TabularEmbedder, issue 22): its column indices
# and input scaling, against its arguments and the real tensors. The tree's
# nets read 5 features, all numerical (PLR on every column, none "other").


def _tensors(key, fn, cls=_NET, part="module"):
    """A recipe replacing the tensor ``key`` of the first ``cls`` record by
    ``fn(tensor)``, the manifest's sizes, digests and declared shapes agreeing
    (a deliberate attacker's file)."""

    def recipe(blob):
        from safetensors.torch import load as st_load
        from safetensors.torch import save as st_save

        members, meta = unpack(blob)
        name = first(meta, cls)["state_dicts"][part]
        tensors = st_load(members[name])
        tensors[key] = fn(tensors[key].clone())
        members[name] = st_save(tensors)
        meta["members"][name]["tensors"][key] = {
            "dtype": str(tensors[key].dtype).removeprefix("torch."),
            "shape": list(tensors[key].shape),
        }
        return pack(members, meta)

    return recipe


def _put(index, value):
    def fn(t):
        t[index] = value
        return t

    return fn


crafted_edit("tabular-numerical-out-of-range", 2)(
    _set_param(_NET, "module__numerical_features", {"$tuple": [0, 1, 2, 3, 99]})
)
crafted_edit("tabular-numerical-huge-index", 2)(
    _set_param(_NET, "module__numerical_features", {"$tuple": [0, 1, 2, 3, 2**40]})
)
crafted_edit("tabular-numerical-longer-than-features", 2)(
    _set_param(_NET, "module__numerical_features", [0] * 100_000)
)
crafted_edit("tabular-numerical-negative", 2)(
    _set_param(_NET, "module__numerical_features", {"$tuple": [-1, 0, 1, 2, 3]})
)
crafted_edit("tabular-numerical-floats", 2)(
    _set_param(_NET, "module__numerical_features", {"$tuple": [0.5, 1, 2, 3, 4]})
)
crafted_edit("tabular-numerical-a-string", 2)(
    _set_param(_NET, "module__numerical_features", "0,1,2,3,4")
)
crafted_edit("tabular-n-features-vs-scaling", 2)(
    _set_param(_NET, "module__n_features", 4)
)
crafted_edit("tabular-huge-frequencies", 2)(
    _set_param(_NET, "module__n_frequencies", 10**7)
)
crafted_edit("tabular-embedding-mode-unknown", 1)(
    _set_param(_NET, "module__numerical_embedding", "exec")
)
crafted_edit("recipe-lr-schedule-unknown", 1)(_set_param(_NET, "lr_schedule", "eval"))
crafted_edit("recipe-validation-fraction-one", 1)(
    _set_param(_NET, "validation_fraction", 1.0)
)
crafted_edit("recipe-patience-huge-float", 1)(_set_param(_NET, "patience", 1e308))
crafted_edit("recipe-batch-size-word", 1)(_set_param(_NET, "batch_size", "all"))
crafted_edit("net-best-epoch-a-class", 4)(
    lambda m, _: first(m, _NET)["values"].update(best_epoch_={"$class": "torch.optim.SGD"})
)
craft("tabular-nan-scale", 4)(_tensors("scaling.scale", _put(0, float("nan"))))
craft("tabular-zero-scale", 4)(_tensors("scaling.scale", _put(1, 0.0)))
craft("tabular-negative-scale", 4)(_tensors("scaling.scale", _put(2, -1.0)))
craft("tabular-inf-center", 4)(_tensors("scaling.center", _put(0, float("inf"))))
craft("tabular-index-buffer-out-of-range", 4)(_tensors("numerical", _put(4, 10**6)))
craft("tabular-index-buffer-negative", 4)(_tensors("numerical", _put(0, -3)))
craft("tabular-index-buffer-permuted", 4)(
    _tensors("numerical", lambda t: t.flip(0))  # in range, but not its arguments
)
craft("tabular-other-buffer-grown", 4)(
    _tensors("other", lambda t: torch.tensor([10**6]))  # consistently declared
)
craft("tabular-index-buffer-shorter", 4)(_tensors("numerical", lambda t: t[:3]))
craft("tabular-index-buffer-float", 4)(_tensors("numerical", lambda t: t.float()))
craft("tabular-scale-wider", 4)(_tensors("scaling.scale", lambda t: torch.ones(50)))
craft("tabular-clip-as-float", 4)(_tensors("scaling.clip", lambda t: t.float()))
craft("lora-expert-index-out-of-range", 4, "lora")(
    _tensors("child.numerical", _put(0, 10**6), cls="ExpertNeuralNetClassifier")
)
craft("residual-expert-nan-scale", 4, "residual")(
    _tensors(
        "correction.scaling.scale", _put(0, float("nan")),
        cls="ExpertNeuralNetClassifier",
    )
)


def crafted(models):
    """``{name: (issue class, bytes)}`` of every recipe, from ``fit_models()``."""
    out = {}
    for name, kind, model, recipe in CRAFTS:
        assert name not in out, name
        out[name] = (kind, recipe(models[model][1]))
    return out
