"""Benchmark the regressors: hierarchical tree, flat MoE, base network, HGB.

Run from the repository root::

    python -m benchmarks.run regress            # diabetes + piecewise, 3 seeds
    python -m benchmarks.run regress --quick    # 1 seed, fewer epochs (smoke test)
    python -m benchmarks.run regress --large    # adds covtype elevation (slow)

Data sets (25% test split per seed; features standardised on the training
part; the regressors standardise their targets themselves):

* ``diabetes``: scikit-learn's ``load_diabetes`` (442 rows, 10 features);
* ``piecewise``: 3000 generated rows, 6 uniform features; four regimes chosen
  by the signs of the first two features, each its own linear function of
  the others plus a sine, and Gaussian noise (sd 0.3);
* ``covtype-elevation`` (``--large`` only): covtype's elevation predicted
  from the other 53 columns, 20,000 rows sampled from the project's
  ``../shared/data/covtype.npz`` (skipped with a message where it is absent).

Models: the base network (``HierarchicalEmbeddingMoERegressor`` with
``max_depth=0``: the embedder alone), the tree with its defaults grown once
and predicted with soft and with hard routing, the flat
``MixtureOfExpertsRegressor`` (soft gate, mixture likelihood),
``HistGradientBoostingRegressor``, LightGBM's ``LGBMRegressor()`` (its
defaults, one thread; the anchor of issue 22) when ``lightgbm`` is
importable, and ``datalets.PartitionedRegressor`` (its "fast" zoo) when the
``datalets`` package is importable. ``--models`` keeps a subset.

Printed and written to ``benchmarks/results/regress.md`` (``.json`` too):
test R^2 mean and standard deviation over the seeds, fit time divided by the
base network's on the same data set and seed (averaged), and the tree's
leaves. Timings are wall clock on a shared machine: compare ratios.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from hemoe_sk import HierarchicalEmbeddingMoERegressor, MixtureOfExpertsRegressor

RESULTS = Path(__file__).parent / "results"


def piecewise(n=3000, seed=0):
    """Four linear regimes (signs of the first two features), plus a sine."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(-1, 1, size=(n, 6))
    regime = (X[:, 0] > 0).astype(int) * 2 + (X[:, 1] > 0).astype(int)
    coef = rng.uniform(-3, 3, size=(4, 4))
    y = (coef[regime] * X[:, 2:]).sum(axis=1) + 2.0 * regime
    y += np.sin(3 * X[:, 2]) + 0.3 * rng.randn(n)
    return X, y


def covtype_elevation(n=20000, seed=0, data_dir=None):
    """Elevation (column 0) and the other 53 columns of ``n`` covtype rows."""
    from ._data import DEFAULT_DATA_DIR, _npz

    X = _npz(DEFAULT_DATA_DIR if data_dir is None else data_dir, "covtype.npz")["X"]
    rows = np.random.RandomState(seed).choice(len(X), n, replace=False)
    X = X[rows].astype(np.float64)
    return np.delete(X, 0, axis=1), X[:, 0]


def datasets(large):
    from ._data import DataUnavailable

    found = {"diabetes": load_diabetes(return_X_y=True), "piecewise": piecewise()}
    if large:
        try:
            found["covtype-elevation"] = covtype_elevation()
        except DataUnavailable as exc:
            print(f"covtype-elevation skipped: {exc}")
    return found


def models(seed, quick):
    """``{name: (estimator factory, routings to score)}``."""
    epochs = dict(max_epochs=10, expert_max_epochs=3) if quick else {}
    found = {
        "base (max_depth=0)": lambda: HierarchicalEmbeddingMoERegressor(
            max_depth=0, random_state=seed, **epochs
        ),
        "tree": lambda: HierarchicalEmbeddingMoERegressor(random_state=seed, **epochs),
        "flat MoE": lambda: MixtureOfExpertsRegressor(
            random_state=seed, **({"max_epochs": 10} if quick else {})
        ),
        "HGB": lambda: HistGradientBoostingRegressor(random_state=seed),
    }
    try:
        from lightgbm import LGBMRegressor
    except ImportError as exc:
        print(f"LightGBM skipped: not importable ({exc}); make bench-install")
    else:
        found["LightGBM"] = lambda: LGBMRegressor(
            n_jobs=1, random_state=seed, verbose=-1
        )
    try:
        from datalets import PartitionedRegressor
    except ImportError as exc:
        print(f"datalets skipped: not importable ({exc}); pip install datalets")
    else:
        found["datalets"] = lambda: PartitionedRegressor(
            candidates="fast", cv=3, progress=False, random_state=seed
        )
    return found


def run(seeds, quick, large, keep=None):
    # Warm-up: the first fit in a process pays torch's one-off start-up
    # costs, which would otherwise be charged to the first base network.
    X, y = piecewise(200)
    HierarchicalEmbeddingMoERegressor(max_depth=0, max_epochs=1, random_state=0).fit(X, y)
    MixtureOfExpertsRegressor(max_epochs=1, random_state=0).fit(X, y)
    rows = []
    for data_name, (X, y) in datasets(large).items():
        for seed in seeds:
            X_tr, X_te, y_tr, y_te = train_test_split(
                X, y, test_size=0.25, random_state=seed
            )
            scaler = StandardScaler().fit(X_tr)
            X_tr = scaler.transform(X_tr).astype(np.float32)
            X_te = scaler.transform(X_te).astype(np.float32)
            for name, make in models(seed, quick).items():
                if keep is not None and name not in keep and not name.startswith("base"):
                    continue  # the base always runs: the ratio baseline
                est = make()
                start = time.perf_counter()
                est.fit(X_tr, y_tr)
                fit_s = time.perf_counter() - start
                routings = ["soft", "hard"] if name == "tree" else [None]
                for routing in routings:
                    if routing is not None:
                        est.set_params(routing=routing)
                    label = name if routing is None else f"tree ({routing})"
                    rows.append(
                        dict(
                            data=data_name,
                            seed=seed,
                            model=label,
                            r2=float(r2_score(y_te, est.predict(X_te))),
                            fit_s=fit_s,
                            leaves=getattr(est, "n_leaves_", None),
                        )
                    )
                print(f"{data_name} seed {seed} {name}: fit {fit_s:.1f}s, "
                      f"R^2 {rows[-1]['r2']:.4f}", flush=True)
    return rows


def summarize(rows):
    base = {
        (r["data"], r["seed"]): r["fit_s"] for r in rows if r["model"].startswith("base")
    }
    table = []
    for data in dict.fromkeys(r["data"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["data"] == data):
            sel = [r for r in rows if r["data"] == data and r["model"] == model]
            r2 = np.array([r["r2"] for r in sel])
            ratio = np.mean([r["fit_s"] / base[(data, r["seed"])] for r in sel])
            leaves = [r["leaves"] for r in sel if r["leaves"] is not None]
            table.append(
                dict(
                    data=data,
                    model=model,
                    r2_mean=float(r2.mean()),
                    r2_sd=float(r2.std()),
                    fit_ratio=float(ratio),
                    leaves=float(np.mean(leaves)) if leaves else None,
                )
            )
    return table


def markdown(table, meta):
    lines = [
        "# Regressors",
        "",
        f"`{meta['command']}`, {meta['date']}; seeds {meta['seeds']}; "
        f"torch {meta['torch']}, {meta['threads']} thread(s); {meta['duration_s']:.0f} s.",
        "",
        "Test R^2 over the seeds (25% test split per seed); fit time divided by "
        "that of the base network (`HierarchicalEmbeddingMoERegressor(max_depth=0)`) "
        "on the same data set and seed, averaged. The tree is fitted once with its "
        "defaults (max_depth=2, DEC routers, fine-tuned experts, paired bootstrap "
        "split test) and predicted with soft and with hard routing.",
        "",
        "| data set | model | R^2 (mean ± sd) | fit time × base | leaves |",
        "|---|---|---|---|---|",
    ]
    for t in table:
        leaves = "—" if t["leaves"] is None else f"{t['leaves']:.1f}"
        lines.append(
            f"| {t['data']} | {t['model']} | {t['r2_mean']:.4f} ± {t['r2_sd']:.4f} | "
            f"{t['fit_ratio']:.2f} | {leaves} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run regress", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, few epochs")
    parser.add_argument("--large", action="store_true",
                        help="add covtype elevation (20,000 rows; slow)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="models to keep (names as in the table: 'base (max_depth=0)', "
        "'tree', 'flat MoE', 'HGB', 'LightGBM', 'datalets'; default all); the "
        "base always runs (the ratio baseline)",
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file (default benchmarks/results/regress.md)")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    started = time.perf_counter()
    rows = run(seeds, args.quick, args.large, args.models)
    table = summarize(rows)
    command = "python -m benchmarks.run regress " + " ".join(argv or [])
    meta = dict(
        command=command.strip(),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        seeds=seeds,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        duration_s=time.perf_counter() - started,
    )
    text = markdown(table, meta)
    print(text)
    if not args.quick or args.out:
        out = args.out or RESULTS / "regress.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "summary": table, "runs": rows}, indent=1)
        )
    return table
