"""Benchmark loading a legitimate model file: the hardened reader (this
checkout's ``hemoe_sk.persistence``) against hemoe_sk 0.3's reader.

Run from the repository root::

    python -m benchmarks.run persistence            # digits models, 30 rounds
    python -m benchmarks.run persistence --quick    # smoke test (seconds)

The 0.3 reader is the single module ``hemoe_sk/persistence.py`` of commit
``--old-commit`` (default 4447c52, 0.3's main), read with ``git show`` and
imported under another name into this same process, so both readers load
the same bytes under the same libraries, alternately, ``--rounds`` times.

Models (fitted once, on scikit-learn's digits, pixels / 16): the classifier
tree with k-means routers and fine-tuned experts, the same with a DEC
router, the flat mixture of experts, a DEC clusterer and a MixAE clusterer;
each is saved once with this checkout's ``save`` (format 2, which both
readers read). Reported per model: the file size, the fastest and the median
load time of each reader, and ``ratio = new / old`` of the medians (below 1:
the hardened reader is faster). Both loaded models are checked to predict as
the original. Written to ``--out`` (Markdown) when given.

Since issue 22 the trees are pinned to 0.3's network (``MLPEmbedder``; 0.3
cannot read the default ``TabularEmbedder``), and the nets' ``best_epoch_``
is removed from the files (:func:`readable_by_03`), which 0.3 refuses.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import io
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from hemoe_sk import (
    DECClusterer,
    HierarchicalEmbeddingMoEClassifier,
    MixtureOfAutoencodersClusterer,
    MixtureOfExpertsClassifier,
)
from hemoe_sk import persistence as new
from hemoe_sk.nn import MLPEmbedder
from hemoe_sk.persistence._modules import _PROBES as _probes

ROOT = Path(__file__).resolve().parent.parent


def old_reader(commit):
    """0.3's ``hemoe_sk/persistence.py`` at ``commit``, imported as a module."""
    source = subprocess.run(
        ["git", "show", f"{commit}:hemoe_sk/persistence.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="hemoe_old_persistence_"))
    path = folder / "hemoe_old_persistence.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("hemoe_old_persistence", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def models(quick):
    epochs = 2 if quick else 8
    dec = dict(
        n_clusters=3, hidden_dims=(32,), embedding_dim=4, pretrain_epochs=epochs,
        max_iter=20, random_state=0,
    )
    # The trees keep 0.3's network (MLPEmbedder): 0.3's reader cannot read
    # the default TabularEmbedder (issue 22), which it does not know.
    classic = dict(embedder=MLPEmbedder)
    return {
        "tree-kmeans": HierarchicalEmbeddingMoEClassifier(
            **classic,
            max_epochs=epochs, expert_max_epochs=1, max_depth=2,
            n_clusters_grid=(2, 3), clusterer=KMeans(n_init=1), split_test="none",
            random_state=0,
        ),
        "tree-dec": HierarchicalEmbeddingMoEClassifier(
            **classic,
            max_epochs=epochs, expert_max_epochs=1, max_depth=1,
            n_clusters_grid=(3,), clusterer=DECClusterer(**dec), split_test="none",
            random_state=0,
        ),
        "moe": MixtureOfExpertsClassifier(
            n_experts=4, max_epochs=epochs, random_state=0
        ),
        "dec": DECClusterer(**dec),
        "mixae": MixtureOfAutoencodersClusterer(
            n_clusters=3, hidden_dims=(32,), embedding_dim=4, pretrain_epochs=epochs,
            init_epochs=1, max_epochs=epochs, random_state=0,
        ),
    }


def readable_by_03(blob):
    """``blob`` without what 0.3's reader refuses and loading does not need:
    the nets' ``best_epoch_`` (a record of early stopping, issue 22, which
    the current format saves and 0.3's did not know)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    for record in manifest["objects"]:
        values = record.get("values")
        if isinstance(values, dict) and "state_dicts" in record:
            values.pop("best_epoch_", None)
    members["manifest.json"] = json.dumps(manifest, separators=(",", ":")).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _outputs(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.transform(X)


def _time(load, blob):
    """The loaded model, and the wall-clock and CPU (this thread) seconds."""
    start, cpu = time.perf_counter(), time.thread_time()
    est = load(io.BytesIO(blob))
    return est, time.perf_counter() - start, time.thread_time() - cpu


def _load_cold(blob):
    """The hardened reader as on a file's first load in a process: no probe
    remembered (``persistence._modules._PROBES``: shapes of modules probed
    on the meta device, by class and arguments)."""
    _probes.clear()
    return new.load(blob)


def run(quick=False, rounds=30, old_commit="4447c52"):
    old = old_reader(old_commit)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    if quick:
        X, y = X[:400], y[:400]
    rows = []
    for name, est in models(quick).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X) if name in ("dec", "mixae") else est.fit(X, y)
        buf = io.BytesIO()
        new.save(est, buf)
        blob = readable_by_03(buf.getvalue())
        expected = _outputs(est, X)
        readers = {"old": old.load, "new": new.load, "cold": _load_cold}
        times = {k: [] for k in readers}
        cpu = {k: [] for k in readers}
        for i in range(rounds):
            order = list(readers)[i % 3:] + list(readers)[: i % 3]
            for who in order:
                loaded, seconds, cpu_seconds = _time(readers[who], blob)
                times[who].append(seconds)
                cpu[who].append(cpu_seconds)
                if i < 3:
                    assert np.array_equal(_outputs(loaded, X), expected), (name, who)
        med = {k: statistics.median(v) for k, v in times.items()}
        cmed = {k: statistics.median(v) for k, v in cpu.items()}
        rows.append(
            {
                "model": name,
                "kib": len(blob) / 1024,
                "old_min_ms": 1e3 * min(times["old"]),
                "new_min_ms": 1e3 * min(times["new"]),
                "old_med_ms": 1e3 * med["old"],
                "new_med_ms": 1e3 * med["new"],
                "cold_med_ms": 1e3 * med["cold"],
                "ratio": med["new"] / med["old"],
                "cold_ratio": med["cold"] / med["old"],
                "cpu_ratio": cmed["new"] / cmed["old"],
                "cpu_cold_ratio": cmed["cold"] / cmed["old"],
            }
        )
    return rows


def report(rows, args):
    lines = [
        "# Loading a legitimate file: hardened reader vs 0.3",
        "",
        f"{_dt.date.today()}, {platform.machine()}, Python {platform.python_version()}; "
        f"`python -m benchmarks.run persistence {' '.join(args)}`. Both readers in "
        "one process, in turn; ratio = new / old of the medians. *new*: the file "
        "loaded again (the shapes of its modules' meta-device probes remembered); "
        "*cold*: as on its first load in a process (none remembered). Wall-clock "
        "times, and the ratios of the CPU time of the loading thread (steadier on "
        "a shared machine).",
        "",
        "| model | file KiB | old min ms | new min ms | old median ms | "
        "new median ms | cold median ms | ratio | cold ratio | CPU ratio | "
        "CPU cold ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['kib']:.0f} | {r['old_min_ms']:.1f} | "
            f"{r['new_min_ms']:.1f} | {r['old_med_ms']:.1f} | {r['new_med_ms']:.1f} | "
            f"{r['cold_med_ms']:.1f} | {r['ratio']:.2f} | {r['cold_ratio']:.2f} | "
            f"{r['cpu_ratio']:.2f} | {r['cpu_cold_ratio']:.2f} |"
        )
    lines.append("")
    for key, what in (("ratio", "ratios"), ("cold_ratio", "cold ratios"),
                      ("cpu_ratio", "CPU ratios"), ("cpu_cold_ratio", "CPU cold ratios")):
        geo = float(np.exp(np.mean([np.log(r[key]) for r in rows])))
        lines.append(f"Geometric mean of the {what}: {geo:.2f}.  ")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run persistence", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="400 rows, 2 epochs, 5 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--old-commit", default="4447c52")
    parser.add_argument("--out", type=Path, default=None, help="Markdown report")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 30)
    rows = run(args.quick, rounds, args.old_commit)
    text = report(rows, list(argv or []))
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return rows
