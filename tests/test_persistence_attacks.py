"""The safe format against crafted files (issue 19).

Every file of ``tests/_crafted.py`` (built here from tiny fitted models, no
binary fixtures) must be refused with ModelFileError or UntrustedTypeError:
in-process (what each refusal says), and all of them in one child process
under an address-space limit, where each refusal is timed and its peak
memory measured, with no file written and no thread started.
"""

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
from _crafted import CRAFTS, MARKER, crafted, data, edit, first, fit_models

from hemoe_sk.persistence import ModelFileError, UntrustedTypeError, load

X, Y = data()
NAMES = [c[0] for c in CRAFTS]


@pytest.fixture(scope="module")
def models():
    return fit_models()


@pytest.fixture(scope="module")
def files(models):
    return crafted(models)


def test_the_crafted_set_covers_every_class_of_the_issue(files):
    kinds = [kind for kind, _ in files.values()]
    assert len(files) >= 60
    assert len(set(blob for _, blob in files.values())) == len(files)  # distinct
    for kind in range(5):
        assert kinds.count(kind) >= 5, kind


@pytest.mark.parametrize("name", NAMES)
def test_crafted_file_is_refused(files, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, blob = files[name]
    with pytest.raises((ModelFileError, UntrustedTypeError)) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load(io.BytesIO(blob))
    message = str(info.value)
    assert "allowlist" in message or message.startswith("Cannot load"), message
    assert len(message) < 1000
    assert os.listdir(tmp_path) == []  # nothing written, no payload ran
    assert not os.path.exists(MARKER)


def test_every_model_kind_round_trips(models):
    """Expert nets (LoRA with KL, residual) included: same predict_proba,
    and the experts share their parent's frozen weights again."""
    from hemoe_sk.nn.experts import ExpertNeuralNetClassifier

    assert set(models) >= {"tree", "lora", "residual", "reg", "moe", "moereg", "mixae"}
    for name, (est, blob) in models.items():
        loaded = load(io.BytesIO(blob))
        for method in ("predict_proba", "transform", "predict"):
            if hasattr(est, method):
                np.testing.assert_array_equal(
                    getattr(loaded, method)(X), getattr(est, method)(X), err_msg=name
                )
    lora = load(io.BytesIO(models["lora"][1]))
    experts = [
        n.classifier.net
        for n in lora.tree_.nodes
        if isinstance(getattr(n.classifier, "net", None), ExpertNeuralNetClassifier)
    ]
    assert experts
    for net in experts:
        parent = net.parent_net_.module_
        kl = net.module_
        assert kl.parent is parent  # the KL anchor is the parent itself
        assert kl.child.body[0].base is parent.body[0]  # LoRA shares the layer


def test_expert_trees_of_every_kind_round_trip():
    from sklearn.cluster import KMeans

    from hemoe_sk import HierarchicalEmbeddingMoEClassifier, save
    from hemoe_sk.nn import ConvEmbedder

    conv = dict(
        embedder=ConvEmbedder, embedder__image_shape=(1, 1, 5),
        embedder__channels=(2,), embedder__embedding_dim=4,
    )
    for params in (
        dict(expert="lora", embedder__hidden_dims=(4,)),
        dict(expert="residual", expert_kl=0.3, embedder__hidden_dims=(4,)),
        dict(expert_kl=0.5, embedder__hidden_dims=(4,)),
        dict(expert="lora", **conv),  # LoRA adapters on convolutions
    ):
        est = HierarchicalEmbeddingMoEClassifier(
            max_epochs=2, expert_max_epochs=1,
            max_depth=2, n_clusters_grid=(2,), clusterer=KMeans(n_init=1),
            min_cluster_size=3, split_test="none", random_state=0, **params,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, Y)
        assert est.depth_ == 2  # experts of experts
        buf = io.BytesIO()
        save(est, buf)
        buf.seek(0)
        np.testing.assert_array_equal(load(buf).predict_proba(X), est.predict_proba(X))


def _os_threads():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_kmeans_threads_come_from_this_machine(models):
    """A router's _n_threads of 10^6 would start that many OpenMP threads at
    predict: loading recomputes it."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    def threads(meta, members):
        first(meta, "sklearn.cluster.KMeans")["state"]["_n_threads"] = 10**6

    loaded = load(io.BytesIO(edit(threads)(models["tree"][1])))
    kmeans = loaded.tree_.nodes[0].router.clusterer
    assert kmeans._n_threads == _openmp_effective_n_threads()
    before = _os_threads()
    loaded.predict_proba(X)
    assert _os_threads() <= before + (os.cpu_count() or 1)


_CHILD = textwrap.dedent(
    """
    import io, json, os, resource, sys, threading, time, warnings
    root, folder, limit_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, root)
    import torch
    from hemoe_sk.persistence import ModelFileError, UntrustedTypeError, load

    def rss_kb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])

    def os_threads():
        return rss_kb("Threads:")

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    vm = rss_kb("VmSize:") * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + limit_mb * 2**20, resource.RLIM_INFINITY))
    warnings.simplefilter("ignore")
    names = sorted(os.listdir(folder))
    blobs = {n: open(os.path.join(folder, n), "rb").read() for n in names}
    # warm up: import everything load() imports, on a real refusal
    try:
        load(io.BytesIO(blobs["child-out-of-range"]))
    except ModelFileError:
        pass
    py_threads, os_threads0 = threading.active_count(), os_threads()
    rows = []
    for name in names:
        exact = reset_peak()
        base = rss_kb("VmRSS:") if exact else rss_kb("VmHWM:")
        t = time.perf_counter()
        try:
            load(io.BytesIO(blobs[name]))
            outcome = "loaded"
        except (ModelFileError, UntrustedTypeError):
            outcome = "refused"
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        seconds = time.perf_counter() - t
        grown = (rss_kb("VmHWM:") - base) / 1024
        rows.append([name, outcome, seconds, grown, exact,
                     threading.active_count() - py_threads,
                     os_threads() - os_threads0])
    # control: the same measurement sees a 64 MB allocation
    exact = reset_peak()
    base = rss_kb("VmRSS:") if exact else rss_kb("VmHWM:")
    block = bytearray(64 * 2**20)
    control = (rss_kb("VmHWM:") - base) / 1024
    del block
    print(json.dumps({"rows": rows, "control_mb": control}))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_refusals_are_fast_small_and_quiet_in_a_limited_child(files, tmp_path):
    """Each refusal in < 1 s and < 100 MB of added peak memory, in a child
    whose address space is capped at 1 GiB above what it holds after its
    imports; nothing written (its working and temporary folders stay empty),
    no Python or OS thread started."""
    folder = tmp_path / "files"
    folder.mkdir()
    for name, (_, blob) in files.items():
        (folder / name).write_bytes(blob)
    work = tmp_path / "cwd"
    work.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, root, str(folder), "1024"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    assert len(rows) == len(files)
    assert result["control_mb"] > 60  # the memory measurement works
    report = "\n".join(f"{r[0]:40s} {r[1]:10s} {r[2]:.3f}s {r[3]:.1f}MB" for r in rows)
    assert all(r[1] == "refused" for r in rows), report
    assert max(r[2] for r in rows) < 1.0, report
    assert max(r[3] for r in rows) < 100, report
    assert all(r[5] == 0 and r[6] == 0 for r in rows), report
    assert os.listdir(work) == [] and os.listdir(temp) == []
    assert threading.active_count() >= 1
    print(report)


def test_remembered_probes_load_the_same_and_refuse_the_same(models, files):
    """A module built from arguments probed before is not probed again: its
    remembered shapes are compared with the real tensors, and then it is
    built uninitialised and every weight loaded. Same predictions, same
    refusals as a cold load."""
    from hemoe_sk.persistence import _modules

    _modules._PROBES.clear()
    cold = load(io.BytesIO(models["tree"][1]))
    remembered = {key[0].__name__ for key in _modules._PROBES}
    assert "TabularEmbedder" in remembered
    warm = load(io.BytesIO(models["tree"][1]))
    np.testing.assert_array_equal(warm.predict_proba(X), cold.predict_proba(X))
    for a, b in zip(warm.tree_.nodes, cold.tree_.nodes, strict=True):
        if a.embedder is not None and hasattr(a.embedder, "module_"):
            assert a.embedder.module_ is not b.embedder.module_
    mixae, blob = models["mixae"]
    load(io.BytesIO(blob))
    np.testing.assert_array_equal(load(io.BytesIO(blob)).transform(X), mixae.transform(X))
    for name in (
        "tabular-nan-scale",
        "tabular-index-buffer-out-of-range",
        "tabular-index-buffer-permuted",
        "tabular-index-buffer-shorter",
        "tensor-shape-other-than-declared",
        "tensor-extra-key",
        "tensor-shapes-grown-consistently",
        "mixae-wrong-count",
    ):
        with pytest.raises(ModelFileError):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(io.BytesIO(files[name][1]))
