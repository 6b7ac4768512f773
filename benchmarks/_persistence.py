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
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import io
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
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
    return {
        "tree-kmeans": HierarchicalEmbeddingMoEClassifier(
            max_epochs=epochs, expert_max_epochs=1, max_depth=2,
            n_clusters_grid=(2, 3), clusterer=KMeans(n_init=1), split_test="none",
            random_state=0,
        ),
        "tree-dec": HierarchicalEmbeddingMoEClassifier(
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


def _outputs(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.transform(X)


def _time(load, blob):
    start = time.perf_counter()
    est = load(io.BytesIO(blob))
    return est, time.perf_counter() - start


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
        blob = buf.getvalue()
        expected = _outputs(est, X)
        times = {"old": [], "new": []}
        for i in range(rounds):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for who in order:
                loaded, seconds = _time((old if who == "old" else new).load, blob)
                times[who].append(seconds)
                if i == 0:
                    assert np.array_equal(_outputs(loaded, X), expected), (name, who)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "model": name,
                "kib": len(blob) / 1024,
                "old_min_ms": 1e3 * min(times["old"]),
                "new_min_ms": 1e3 * min(times["new"]),
                "old_med_ms": 1e3 * med["old"],
                "new_med_ms": 1e3 * med["new"],
                "ratio": med["new"] / med["old"],
            }
        )
    return rows


def report(rows, args):
    lines = [
        "# Loading a legitimate file: hardened reader vs 0.3",
        "",
        f"{_dt.date.today()}, {platform.machine()}, Python {platform.python_version()}; "
        f"`python -m benchmarks.run persistence {' '.join(args)}`. Both readers in "
        "one process, alternately; ratio = new / old of the medians.",
        "",
        "| model | file KiB | old min ms | new min ms | old median ms | "
        "new median ms | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['kib']:.0f} | {r['old_min_ms']:.1f} | "
            f"{r['new_min_ms']:.1f} | {r['old_med_ms']:.1f} | {r['new_med_ms']:.1f} | "
            f"{r['ratio']:.2f} |"
        )
    geo = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows])))
    lines += ["", f"Geometric mean of the ratios: {geo:.2f}."]
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
