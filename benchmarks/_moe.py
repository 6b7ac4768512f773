"""Benchmark the flat mixture-of-experts family and DeepMoE on digits.

Run from the repository root::

    python -m benchmarks.run moe            # full run
    python -m benchmarks.run moe --quick    # fewer epochs, smoke test

Data: ``load_digits``, pixels divided by 16, 30% stratified test split
(``random_state=0``).

Printed, for every gating scheme of :class:`MixtureOfExpertsClassifier`:
test accuracy, fit and predict wall time, both also as ratios against
``soft`` measured in the same run, and the rows each expert processed while
predicting the test set (top-k runs only the selected experts, so its rows
add up to ``k * n_test`` instead of ``n_experts * n_test``). A second table
repeats the timing with wide experts, where skipping experts matters more
than the per-expert dispatch overhead. Last, DeepMoE's accuracy and channel
gate sparsity next to a plain ``ConvEmbedder`` of the same widths.

Timings are wall clock on whatever machine runs this (and whatever else runs
on it): compare ratios within one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hemoe_sk.moe import MixtureOfExpertsClassifier
from hemoe_sk.nn import predict_proba, train_net
from hemoe_sk.nn.build import make_classifier_net
from hemoe_sk.nn.deepmoe import DeepMoEEmbedder, gate_sparsity
from hemoe_sk.nn.modules import ConvEmbedder

CONFIGS = [
    ("soft", dict(gating="soft")),
    ("soft/weighted_output", dict(gating="soft", loss="weighted_output")),
    ("topk k=1", dict(gating="topk", k=1)),
    ("topk k=2", dict(gating="topk", k=2)),
    ("guided", dict(gating="guided")),
]


def load_data():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


def _rows_per_expert(clf, X):
    module = clf.net_.module_
    counts = [0] * len(module.experts)

    def hook(i):
        def fn(mod, inputs, output):
            counts[i] += inputs[0].shape[0]

        return fn

    handles = [e.register_forward_hook(hook(i)) for i, e in enumerate(module.experts)]
    try:
        clf.predict(X)
    finally:
        for h in handles:
            h.remove()
    return counts


def _time_predict(models, X, repeats):
    """Best-of-``repeats`` predict time of each model on 10 copies of ``X``.

    The rounds go over all models in turn, so that a burst of load from other
    processes hits every model alike; the minimum is the least disturbed.
    """
    X = np.tile(X, (10, 1))
    times = [[] for _ in models]
    for _ in range(repeats):
        for i, clf in enumerate(models):
            t0 = time.perf_counter()
            clf.predict(X)
            times[i].append(time.perf_counter() - t0)
    return [float(np.min(t)) for t in times]


def bench_moe(data, *, extra=None, configs=CONFIGS, seed=0, repeats=7):
    Xtr, Xte, ytr, yte = data
    rows, models = [], []
    for name, params in configs:
        clf = MixtureOfExpertsClassifier(random_state=seed, **params, **(extra or {}))
        t0 = time.perf_counter()
        clf.fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
        models.append(clf)
        rows.append(
            dict(
                name=name,
                accuracy=clf.score(Xte, yte),
                fit_s=fit_s,
                rows=_rows_per_expert(clf, Xte),
            )
        )
    for r, predict_s in zip(rows, _time_predict(models, Xte, repeats), strict=True):
        r["predict_s"] = predict_s
    base = rows[0]
    for r in rows:
        r["fit_ratio"] = r["fit_s"] / base["fit_s"]
        r["predict_ratio"] = r["predict_s"] / base["predict_s"]
    return rows


def print_moe(rows, title, n_test):
    print(f"\n{title}")
    header = (
        f"{'gating':<22}{'accuracy':>9}{'fit s':>8}{'fit/soft':>9}"
        f"{'pred ms*':>9}{'pred/soft':>10}  rows per expert (of {n_test} test rows)"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<22}{r['accuracy']:>9.4f}{r['fit_s']:>8.2f}{r['fit_ratio']:>9.2f}"
            f"{1000 * r['predict_s']:>9.2f}{r['predict_ratio']:>10.2f}  "
            f"{r['rows']} (total {sum(r['rows'])})"
        )
    print(
        f"* predicting {10 * n_test} rows (the test set 10 times), "
        "best of 7, interleaved"
    )


def bench_deepmoe(data, *, max_epochs=20, seed=0):
    Xtr, Xte, ytr, yte = data
    out = []
    for name, module, params in [
        ("DeepMoE", DeepMoEEmbedder, {}),
        ("ConvEmbedder", ConvEmbedder, dict(channels=(32, 64))),
    ]:
        net = make_classifier_net(
            module,
            n_features=64,
            n_classes=10,
            module_params=params,
            max_epochs=max_epochs,
            lr=3e-3,
        )
        t0 = time.perf_counter()
        train_net(net, Xtr, ytr.astype(np.int64), seed=seed, stage=name)
        fit_s = time.perf_counter() - t0
        row = dict(
            name=name,
            accuracy=float(np.mean(predict_proba(net, Xte).argmax(axis=1) == yte)),
            fit_s=fit_s,
        )
        if module is DeepMoEEmbedder:
            row["sparsity"], row["per_layer"] = gate_sparsity(net, Xte, per_layer=True)
        out.append(row)
    base = out[-1]["fit_s"]
    print("\nDeepMoE on 8x8 digit images (base widths (32, 64))")
    print(f"{'model':<14}{'accuracy':>9}{'fit s':>8}{'fit/conv':>9}  gate sparsity")
    for r in out:
        sparsity = (
            f"{r['sparsity']:.3f} (per layer {np.round(r['per_layer'], 3).tolist()})"
            if "sparsity" in r
            else "-"
        )
        print(
            f"{r['name']:<14}{r['accuracy']:>9.4f}{r['fit_s']:>8.2f}"
            f"{r['fit_s'] / base:>9.2f}  {sparsity}"
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run moe",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_data()
    n_test = len(data[1])
    print(
        f"digits: {len(data[0])} train / {n_test} test rows; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; timings are noisy on a shared machine"
    )
    quick = dict(max_epochs=3) if args.quick else {}
    # Warm-up: the first fit in a process pays torch's one-off start-up costs,
    # which would otherwise be charged to the baseline.
    MixtureOfExpertsClassifier(max_epochs=1, random_state=0).fit(
        data[0][:200], data[2][:200]
    )
    rows = bench_moe(data, extra=quick, seed=args.seed)
    print_moe(
        rows,
        "MixtureOfExpertsClassifier, default parameters (4 experts, hidden (64,))",
        n_test,
    )
    wide = dict(
        n_experts=8, expert_hidden=(256, 256), max_epochs=3 if args.quick else 10
    )
    wide_configs = [c for c in CONFIGS if c[0] in ("soft", "topk k=1", "topk k=2")]
    rows = bench_moe(data, extra=wide, configs=wide_configs, seed=args.seed)
    print_moe(
        rows,
        "Wide experts (8 experts, hidden (256, 256), 10 epochs): "
        "compute saved by top-k",
        n_test,
    )
    bench_deepmoe(data, max_epochs=3 if args.quick else 20, seed=args.seed)

