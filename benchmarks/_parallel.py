"""Benchmark the tree's fit with ``n_jobs=1`` against ``n_jobs=2`` (loky).

Run from the repository root::

    python -m benchmarks.run parallel              # digits, 20+5 epochs, depth 2
    python -m benchmarks.run parallel --quick      # smoke test (seconds)

Data: scikit-learn's ``load_digits`` (pixels divided by 16), 70% stratified
training split (``random_state=0``).

Models: ``HierarchicalEmbeddingMoEClassifier`` with its defaults (DEC routers,
fine-tuned experts, K in 2..5, depth 2, held-out selection) but
``--epochs``/``--expert-epochs`` epochs (``defaults``: on digits its root
stays whole, so one node is searched), and the same with
``split_test="none", n_clusters_grid=(2, 3)`` (``grown``: every node splits,
so the search runs at the root and at each of its children). Each is fitted
in this process

* with ``n_jobs=1`` (the baseline; run it with ``OMP_NUM_THREADS=1`` so
  torch uses one thread, as each loky worker does),
* under ``joblib.parallel_config(backend="loky", n_jobs=2)``: once with a
  cold pool (it starts two worker processes that import torch), then with
  the warm pool the first fit left,
* with ``--threading``, under the threading backend with ``n_jobs=2`` too.

``--repeats`` rounds alternate the warm runs; each row reports its fastest.

Before and after the fits, the same two loky workers run a plain torch
computation against one process running it twice: the speed-up the machine
offers at that moment (other work on a shared machine lowers it), to read
the tree's speed-up against.

Every parallel fit is checked to grow the same tree as ``n_jobs=1``: the same
leaves for every test row and probabilities within 1e-6 (``same tree``).
Printed and written to ``--out`` (Markdown): fit wall time, the speed-up over
``n_jobs=1`` measured in the same run, test accuracy and the tree's leaves,
with the machine's load average before and after (other work on a shared
machine slows any of the fits). Only the per-node K search runs in parallel:
the root network, the DEC pretraining and the final experts' refits run in
the calling process, so the speed-up is bounded below 2 on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed, parallel_config
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hemoe_sk import HierarchicalEmbeddingMoEClassifier

RESULTS = Path(__file__).resolve().parent / "results"


def _fit(params, X, y, backend, n_jobs):
    """Fit a tree under ``backend``; return it and its wall seconds."""
    clf = HierarchicalEmbeddingMoEClassifier(**params)
    start = time.perf_counter()
    if backend is None:
        clf.set_params(n_jobs=n_jobs).fit(X, y)
    else:
        with parallel_config(backend=backend, n_jobs=n_jobs):
            clf.fit(X, y)
    return clf, time.perf_counter() - start


def _torch_work(steps=600):
    """A fixed, CPU-bound torch computation; returns its wall seconds."""
    start = time.perf_counter()
    a = torch.ones(256, 256) / 256
    for _ in range(steps):
        a = torch.tanh(a @ a.T)
    return time.perf_counter() - start


def available_speedup():
    """What two loky workers gain on this machine now, whatever hemoe_sk does:
    two copies of a torch computation run one after the other here, against
    both at once on a warm pool of two workers. On two idle cores it is
    close to 2; other work on the machine lowers it."""
    Parallel(n_jobs=2, backend="loky")(delayed(_torch_work)(1) for _ in range(2))
    sequential = _torch_work() + _torch_work()
    start = time.perf_counter()
    Parallel(n_jobs=2, backend="loky")(delayed(_torch_work)() for _ in range(2))
    return sequential / (time.perf_counter() - start)


def run(params, X_train, X_test, y_train, y_test, repeats=2, threading=False,
        cold=True):
    """The rows of the table, baseline first: ``[dict]``.

    A small fit first warms this process up (imports, torch's first calls),
    so the baseline is not charged for them. With ``cold``, a first loky fit
    starts the pool (the pool then stays for the rest of the session); then
    ``repeats`` rounds alternate the runs, and each row keeps its fastest
    round (the least disturbed by other work).
    """
    _fit({**params, "max_depth": 0, "max_epochs": 1}, X_train[:100], y_train[:100],
         None, 1)
    if cold:
        cold_clf, cold_s = _fit(params, X_train, y_train, "loky", 2)
        print(f"  {'loky, n_jobs=2 (cold pool)':<28} {cold_s:8.1f} s", flush=True)
    runs = [("n_jobs=1", None, 1), ("loky, n_jobs=2 (warm pool)", "loky", 2)]
    if threading:
        runs.append(("threading, n_jobs=2", "threading", 2))
    times = {label: [] for label, _, _ in runs}
    fitted = {}
    for _ in range(repeats):
        for label, backend, n_jobs in runs:
            clf, seconds = _fit(params, X_train, y_train, backend, n_jobs)
            print(f"  {label:<28} {seconds:8.1f} s", flush=True)
            times[label].append(seconds)
            fitted[label] = clf
    rows = [(label, min(times[label]), times[label], fitted[label])
            for label, _, _ in runs]
    if cold:
        rows.insert(1, ("loky, n_jobs=2 (cold pool)", cold_s, [cold_s], cold_clf))
    base, base_s = rows[0][3], rows[0][1]
    table = []
    for label, seconds, all_s, clf in rows:
        same = bool(
            np.array_equal(clf.apply(X_test), base.apply(X_test))
            and np.abs(clf.predict_proba(X_test) - base.predict_proba(X_test)).max()
            <= 1e-6
        )
        table.append(dict(
            run=label, fit_s=seconds, all_s=all_s, speedup=base_s / seconds,
            search_s=search_seconds(clf) if clf is base else None,
            accuracy=clf.score(X_test, y_test), leaves=clf.n_leaves_, same=same,
        ))
    return table


#: The trees timed: name -> parameters beyond the epochs and the seed.
CONFIGS = {
    "defaults": {},
    "grown": {"split_test": "none", "n_clusters_grid": (2, 3)},
}


def search_seconds(clf):
    """Seconds the fitted tree's search tasks took (fit + score, every node,
    candidate and split): the part of a fit that ``n_jobs`` spreads."""
    total = 0.0
    for node in clf.tree_.nodes:
        results = node.search.get("cv_results") if node.search else None
        if results:
            n_splits = sum(key.startswith("split") for key in results)
            total += float(np.sum(results["mean_fit_time"] + results["mean_score_time"])
                           ) * n_splits
    return total


def markdown(tables, command, load_before, load_after, total_s, available):
    lines = [
        "# Parallel fitting: n_jobs=1 against loky n_jobs=2",
        "",
        f"`{command}`, {_dt.date.today().isoformat()}; "
        f"{os.cpu_count()} CPU cores, {platform.machine()} {platform.system()}, "
        f"torch {torch.__version__}; load average before {load_before:.2f}, "
        f"after {load_after:.2f} (1 min); total {total_s / 60:.1f} min.",
        "",
        "Data: `load_digits` / 16, 70% stratified training split. Trees: "
        "`HierarchicalEmbeddingMoEClassifier(**params)`, other parameters at "
        "their defaults.",
        "",
        f"Speed-up two loky workers gave a plain torch computation on this "
        f"machine at the start of the run (the most the tree could get): "
        f"**{available[0]:.2f}**; at the end: **{available[1]:.2f}**.",
        "",
        "| tree | params | run | fit s (fastest) | every fit, s "
        "| speed-up over n_jobs=1 | test accuracy | leaves | same tree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (params, table) in tables.items():
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        for r in table:
            every = ", ".join(f"{t:.1f}" for t in r["all_s"])
            lines.append(
                f"| {name} | `{shown}` | {r['run']} | {r['fit_s']:.1f} | {every} | "
                f"{r['speedup']:.2f} | {r['accuracy']:.4f} | {r['leaves']} | "
                f"{'yes' if r['same'] else 'NO'} |"
            )
    lines += ["", "Share of the `n_jobs=1` fit spent in the search's tasks (what "
              "two workers can share), and the speed-up that bounds (Amdahl, "
              "with two free cores):", ""]
    for name, (_, table) in tables.items():
        share = table[0]["search_s"] / table[0]["fit_s"]
        lines.append(
            f"- {name}: {table[0]['search_s']:.1f} s of {table[0]['fit_s']:.1f} s "
            f"({share:.0%}), at most {1 / (1 - share / 2):.2f}x."
        )
    lines += [
        "",
        "Only the per-node K search runs in the workers; the root network, "
        "DEC's pretraining and the refits of the leaves run in the calling "
        "process. The cold-pool row (one fit, the first loky fit of the run) "
        "includes starting the two loky workers (each imports torch); the warm "
        "row reuses them, as every fit after the first in one Python session "
        "does. Wall times on a shared machine: compare the ratios.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run parallel",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true",
                        help="400 rows, 3+1 epochs, depth 1: a smoke test")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs of the root network (default: 20)")
    parser.add_argument("--expert-epochs", type=int, default=5,
                        help="epochs of every expert (default: 5)")
    parser.add_argument("--trees", nargs="+", choices=list(CONFIGS),
                        default=list(CONFIGS), help="trees to time (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random_state (default: 0)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of n_jobs=1 / loky fits; each row keeps its "
                             "fastest (default: 2)")
    parser.add_argument("--threading", action="store_true",
                        help="also time the threading backend with n_jobs=2")
    parser.add_argument("--out", default=None,
                        help="Markdown file to write (default: none; the committed "
                             "result is benchmarks/results/parallel.md)")
    args = parser.parse_args(argv)

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    if args.quick:
        X, y = X[:400], y[:400]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    available = [available_speedup()]
    print(f"available speed-up (torch, 2 loky workers): {available[0]:.2f}", flush=True)
    tables = {}
    for name in args.trees:
        params = dict(
            max_epochs=3 if args.quick else args.epochs,
            expert_max_epochs=1 if args.quick else args.expert_epochs,
            random_state=args.seed,
            **CONFIGS[name],
        )
        if args.quick:
            params["max_depth"] = 1
        print(f"{name}: digits, {len(X_train)} training rows; {params}", flush=True)
        tables[name] = (params, run(params, X_train, X_test, y_train, y_test,
                                    repeats=args.repeats, threading=args.threading,
                                    cold=not tables))
    available.append(available_speedup())
    total = time.perf_counter() - started
    text = markdown(
        tables,
        "python -m benchmarks.run parallel " + " ".join(argv or []),
        load_before, os.getloadavg()[0], total, available,
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return tables
