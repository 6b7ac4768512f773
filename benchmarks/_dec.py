"""Benchmark DEC and IDEC against k-means on handwritten digits.

Run from the repository root::

    python -m benchmarks.run dec                      # digits and optdigits
    python -m benchmarks.run dec --dataset digits     # one data set
    python -m benchmarks.run dec --seeds 0 1 2        # several seeds

Data: scikit-learn's ``load_digits`` (1,797 rows) and
``../shared/data/optdigits.csv`` (label column ``class``, last), pixels
divided by 16. Every model clusters all rows into 10 clusters.

Printed per data set and seed: NMI and clustering accuracy (best one-to-one
matching of clusters to classes, Hungarian algorithm) of

* ``DECClusterer()`` with default parameters (plain DEC),
* ``DECClusterer(gamma=0.1)`` (IDEC),
* ``KMeans(10, n_init=10)`` on the scaled pixels,

with fit wall time in seconds and as a ratio to the k-means fit measured in
the same run, and the CPU seconds of the process (a steadier figure on a
shared machine; with several torch threads it adds their times). A last
table shows what the pretraining-reuse hook saves: one
``pretrain`` followed by ``fit(X, autoencoder=...)`` for K = 2..5, each
refinement timed as a ratio to the pretraining.

Timings are wall clock on whatever machine runs this (and whatever else runs
on it): compare ratios within one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from hemoe_sk.cluster import DECClusterer

from ._data import DEFAULT_DATA_DIR
from ._report import clustering_accuracy


def load(name, data_dir):
    """``(X / 16, y)`` for ``"digits"`` or ``"optdigits"``."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X / 16.0, y
    path = Path(data_dir) / "optdigits.csv"
    if not path.is_file():
        sys.exit(
            f"benchmarks.run dec: {path} not found. The optdigits benchmark reads the "
            "project's ../shared/data folder (next to the checkout); pass "
            "--data-dir DIR, or run with --dataset digits."
        )
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    if header[-1] != "class":
        sys.exit(f"benchmarks.run dec: expected the last column of {path} to be 'class'.")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1] / 16.0, data[:, -1].astype(int)


def timed_fit(model, X, **fit_params):
    """Fit; return the model, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(X, **fit_params)
    return model, time.perf_counter() - wall, time.process_time() - cpu


def run_dataset(name, X, y, seeds):
    print(f"\n== {name}: {X.shape[0]} rows, {X.shape[1]} features, "
          f"{len(np.unique(y))} classes ==")
    header = (
        f"{'seed':>4}  {'model':<22} {'NMI':>6} {'ACC':>6} {'fit s':>8} "
        f"{'x k-means':>10} {'cpu s':>7}"
    )
    print(header)
    print("-" * len(header))
    scores = {}
    for seed in seeds:
        models = [
            ("KMeans(10, n_init=10)", KMeans(10, n_init=10, random_state=seed)),
            ("DEC (defaults)", DECClusterer(n_clusters=10, random_state=seed)),
            (
                "IDEC (gamma=0.1)",
                DECClusterer(n_clusters=10, gamma=0.1, random_state=seed),
            ),
        ]
        t_km = None
        for label, model in models:
            model, seconds, cpu = timed_fit(model, X)
            if t_km is None:
                t_km = seconds
            nmi = normalized_mutual_info_score(y, model.labels_)
            acc = clustering_accuracy(y, model.labels_)
            scores.setdefault(label, []).append((nmi, acc))
            print(f"{seed:>4}  {label:<22} {nmi:6.3f} {acc:6.3f} {seconds:8.2f} "
                  f"{seconds / t_km:9.1f}x {cpu:7.2f}")
    if len(seeds) > 1:
        print("mean over seeds:")
        for label, vals in scores.items():
            nmi, acc = np.mean(vals, axis=0)
            print(f"{'':>4}  {label:<22} {nmi:6.3f} {acc:6.3f}")


def run_reuse(name, X, y, seed):
    """Pretrain once, refine for several K: what the classifier does per node."""
    dec = DECClusterer(random_state=seed)
    start = time.perf_counter()
    base = clone(dec).pretrain(X)
    t_pre = time.perf_counter() - start
    print(f"\n== {name}: pretraining reuse (seed {seed}) ==")
    print(f"pretrain: {t_pre:.2f} s")
    print(f"{'K':>3} {'refine s':>9} {'x pretrain':>11} {'steps':>6} {'NMI':>6}")
    for k in (2, 3, 4, 5):
        model, seconds, _ = timed_fit(
            clone(dec).set_params(n_clusters=k), X, autoencoder=base.autoencoder_
        )
        nmi = normalized_mutual_info_score(y, model.labels_)
        print(
            f"{k:>3} {seconds:9.2f} {seconds / t_pre:10.2f}x "
            f"{model.n_iter_:>6} {nmi:6.3f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run dec",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=["digits", "optdigits", "all"],
        default="all",
        help="data set to cluster (default: both)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="random states (default: 0)"
    )
    parser.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="folder holding optdigits.csv (default: ../shared/data)",
    )
    parser.add_argument(
        "--no-reuse", action="store_true", help="skip the pretraining-reuse table"
    )
    args = parser.parse_args(argv)

    names = ["digits", "optdigits"] if args.dataset == "all" else [args.dataset]
    data = {name: load(name, args.data_dir) for name in names}
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    for name in names:
        run_dataset(name, *data[name], args.seeds)
    if not args.no_reuse:
        run_reuse(names[0], *data[names[0]], args.seeds[0])

