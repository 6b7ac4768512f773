"""Measurements of the default network recipe (issue 22), logged as they run.

Every measurement appends one JSON line to ``benchmarks/results/recipe.jsonl``
(accuracy or R^2, fit seconds, predict rows/s, epochs run and best epoch of
the root network, the configuration); ``report`` writes
``benchmarks/results/recipe.md`` from that log, so no figure is typed by hand.

Run one fit per process, pinned to one core with one thread, e.g.::

    taskset -c 0 env OMP_NUM_THREADS=1 python -m benchmarks._recipe covtype --seed 0
    python -m benchmarks._recipe diabetes --seed 0
    python -m benchmarks._recipe small --seed 0
    python -m benchmarks._recipe report

``covtype``: the 100,000-row sample of ``../shared/data/covtype.npz``, a
stratified 70/30 split with the seed (the large tier's split), the default
``HierarchicalEmbeddingMoEClassifier`` with ``max_depth=0`` (``--model
base``) or its default tree (``--model tree``). ``fashion``: the official
Fashion-MNIST split, pixels scaled to [0, 1], the default base. ``diabetes``:
scikit-learn's diabetes, 25% test split with the seed, the default
``HierarchicalEmbeddingMoERegressor`` and ``RidgeCV`` on the same split.
``small``: the six data sets of ``results/small-0.2.md`` with their 30%
stratified split per seed, the default base.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

RESULTS = Path(__file__).parent / "results"
LOG = RESULTS / "recipe.jsonl"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: 0.3's base network (max_depth=0) on the six small sets, mean over 2 seeds,
#: read from results/small-0.2.md (its base rows) by :func:`_small_reference`.
SMALL_SETS = ("digits", "digits-coarse3", "subclasses", "optdigits", "segment",
              "winequality-white")


def _root_epochs(model):
    net = getattr(model, "embedder_", None) or getattr(model, "base_net_", None)
    if net is None:
        return None, None
    return len(net.history), getattr(net, "best_epoch_", None)


def _measure(model, Xtr, ytr, Xte, yte, score):
    t0 = time.perf_counter()
    model.fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(Xte)
    predict_s = time.perf_counter() - t0
    epochs, best = _root_epochs(model)
    return {
        "score": float(score(yte, pred)),
        "fit_s": round(fit_s, 2),
        "predict_rows_per_s": round(len(Xte) / predict_s),
        "epochs": epochs,
        "best_epoch": best,
        "n_leaves": getattr(model, "n_leaves_", None),
        "hidden_dims": _hidden_dims(model),
    }


def _hidden_dims(model):
    net = getattr(model, "embedder_", None)
    if net is None:
        return None
    dims = net.get_params().get("module__hidden_dims")
    return None if dims is None else list(dims)


def _describe(params):
    return repr({k: getattr(v, "__name__", v) for k, v in params.items()})


def _defaults():
    """The recipe's defaults in the code that ran (they changed while the
    measurements were made: read them with each record)."""
    import inspect

    from hemoe_sk import HierarchicalEmbeddingMoEClassifier
    from hemoe_sk.nn import TabularEmbedder

    est = HierarchicalEmbeddingMoEClassifier().get_params()
    emb = inspect.signature(TabularEmbedder).parameters
    return (f"patience={est['patience']}, max_epochs={est['max_epochs']}, "
            f"lr={est['lr']}, frequency_scale={emb['frequency_scale'].default}")


def _log(record):
    record.update({
        "defaults": _defaults(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
    })
    RESULTS.mkdir(exist_ok=True)
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def _accuracy(y, p):
    return float(np.mean(np.asarray(y) == np.asarray(p)))


def _params(text):
    """A dict literal; an ``"embedder"`` given as a name is the class of that
    name in :mod:`hemoe_sk.nn`."""
    params = ast.literal_eval(text) if text else {}
    if isinstance(params.get("embedder"), str):
        import hemoe_sk.nn

        params["embedder"] = getattr(hemoe_sk.nn, params["embedder"])
    return params


def run_covtype(seed, model_name, params, rows=None):
    from hemoe_sk import HierarchicalEmbeddingMoEClassifier

    data = np.load(DATA / "covtype.npz")
    X, y = data["X"].astype(np.float32), data["y"]
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    if rows:
        Xtr, ytr = Xtr[:rows], ytr[:rows]
    kw = {"max_depth": 0} if model_name == "base" else {}
    model = HierarchicalEmbeddingMoEClassifier(random_state=seed, **kw, **params)
    out = _measure(model, Xtr, ytr, Xte, yte, _accuracy)
    _log({"task": "covtype", "model": model_name, "seed": seed, "rows": len(Xtr),
          "params": _describe(params), **out})


def run_fashion(seed, params, rows=None):
    from hemoe_sk import HierarchicalEmbeddingMoEClassifier

    data = np.load(DATA / "fashion_mnist.npz")
    Xtr = data["X_train"].reshape(len(data["X_train"]), -1).astype(np.float32) / 255
    Xte = data["X_test"].reshape(len(data["X_test"]), -1).astype(np.float32) / 255
    ytr, yte = data["y_train"], data["y_test"]
    if rows:
        Xtr, ytr = Xtr[:rows], ytr[:rows]
    model = HierarchicalEmbeddingMoEClassifier(max_depth=0, random_state=seed, **params)
    out = _measure(model, Xtr, ytr, Xte, yte, _accuracy)
    _log({"task": "fashion", "model": "base", "seed": seed, "rows": len(Xtr),
          "params": _describe(params), **out})


def run_diabetes(seed, params):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    from hemoe_sk import HierarchicalEmbeddingMoERegressor

    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    for name, model in (
        ("RidgeCV", RidgeCV()),
        ("default", HierarchicalEmbeddingMoERegressor(random_state=seed, **params)),
        ("base", HierarchicalEmbeddingMoERegressor(max_depth=0, random_state=seed,
                                                   **params)),
    ):
        out = _measure(model, Xtr, ytr, Xte, yte, r2_score)
        _log({"task": "diabetes", "model": name, "seed": seed, "rows": len(Xtr),
              "params": _describe(params) if name != "RidgeCV" else "{}", **out})


def run_small(seed, params):
    from benchmarks._data import load
    from hemoe_sk import HierarchicalEmbeddingMoEClassifier

    for name in SMALL_SETS:
        data = load(name)
        Xtr, Xte, ytr, yte = train_test_split(
            data.X.astype(np.float32), data.y, test_size=0.3, stratify=data.y,
            random_state=seed,
        )
        model = HierarchicalEmbeddingMoEClassifier(max_depth=0, random_state=seed,
                                                   **params)
        out = _measure(model, Xtr, ytr, Xte, yte, _accuracy)
        _log({"task": "small", "data": name, "model": "base", "seed": seed,
              "rows": len(Xtr), "params": _describe(params), **out})


def _small_reference():
    """0.3's base accuracy (mean, std) per small set, from small-0.2.md."""
    ref, current = {}, None
    for line in (RESULTS / "small-0.2.md").read_text().splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
        elif current and line.startswith("| `base` |"):
            mean, std = line.split("|")[2].strip().split(" ± ")
            ref[current] = (float(mean), float(std))
    return ref


def _early(record):
    """The defaults of a record written before the log kept them (2026-12-05,
    from the branch's history): patience 10 until 20:15, then 20; PLR
    frequency_scale 0.1 until 20:48, then 0.03."""
    if "defaults" in record:
        return record["defaults"]
    hhmm = record["date"][11:16]
    if hhmm == "19:59":  # started 19:53 on a code state reverted at 19:56
        return ("patience=10, frequency_scale=0.1, linear_skip=True with a "
                "zero-initialised deep output (a variant, not a default)")
    patience = 10 if hhmm < "20:15" else 20
    scale = 0.1 if hhmm < "20:48" else 0.03
    return f"patience={patience}, frequency_scale={scale} (by date)"


def report():
    records = [json.loads(line) for line in LOG.read_text().splitlines() if line]
    lines = [
        "# The default network recipe (issue 22): measurements",
        "",
        f"Written by `python -m benchmarks._recipe report` from `{LOG.name}` "
        f"({len(records)} measurements, in the order they ran). Each fit ran in "
        "its own process with one torch thread (covtype and Fashion-MNIST pinned "
        "to one core of the shared 2-core machine: read times loosely, "
        "accuracies exactly). *epochs*: epochs the root network ran (early "
        "stopping), *best*: the epoch it restored.",
        "",
    ]
    for task, title, metric in (
        ("covtype", "covtype (70/30 stratified split of the 100k sample)", "accuracy"),
        ("fashion", "Fashion-MNIST (official split, flat pixels)", "accuracy"),
        ("diabetes", "diabetes (25% test split)", "R^2"),
    ):
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        lines += [f"## {title}", "",
                  f"| model | seed | train rows | params | {metric} | fit s | "
                  "predict rows/s | epochs | best | hidden | leaves | defaults | date |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['seed']} | {r['rows']:,} | `{r['params']}` | "
                f"{r['score']:.4f} | {r['fit_s']:.1f} | {r['predict_rows_per_s']:,} | "
                f"{r['epochs']} | {r['best_epoch']} | {r['hidden_dims']} | "
                f"{r['n_leaves']} | {_early(r)} | {r['date'][11:16]} |"
            )
        lines.append("")
    small = [r for r in records if r["task"] == "small"]
    if small:
        ref = _small_reference()
        lines += ["## The six small sets: new default base against 0.3's base", "",
                  "0.3's base: `results/small-0.2.md` (mean ± std over seeds 0, 1). "
                  "New: the default `max_depth=0` estimator on the same splits, "
                  "with the recipe's own scaling (no external scaler).", "",
                  "| data set | 0.3 base | new base (per seed) | new mean | "
                  "difference | fit s (mean) | epochs (per seed) |",
                  "|---|---|---|---|---|---|---|"]
        groups = sorted({(r["params"], _early(r)) for r in small})
        for p, defaults in groups:
            for name in SMALL_SETS:
                rs = [r for r in small if r["data"] == name and r["params"] == p
                      and _early(r) == defaults]
                if not rs:
                    continue
                scores = [r["score"] for r in rs]
                m, s = ref.get(name, (float("nan"), float("nan")))
                lines.append(
                    f"| {name} `{p}` {defaults} | {m:.3f} ± {s:.3f} | "
                    f"{', '.join(f'{v:.3f}' for v in scores)} | {np.mean(scores):.3f} | "
                    f"{np.mean(scores) - m:+.3f} | "
                    f"{np.mean([r['fit_s'] for r in rs]):.1f} | "
                    f"{', '.join(str(r['epochs']) for r in rs)} |"
                )
        lines.append("")
    (RESULTS / "recipe.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["covtype", "fashion", "diabetes", "small",
                                         "report"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["base", "tree"], default="base")
    parser.add_argument("--rows", type=int, default=None,
                        help="use only the first ROWS training rows")
    parser.add_argument("--params", default="",
                        help="estimator parameters as a Python dict literal")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    params = _params(args.params)
    if args.task == "covtype":
        run_covtype(args.seed, args.model, params, args.rows)
    elif args.task == "fashion":
        run_fashion(args.seed, params, args.rows)
    elif args.task == "diabetes":
        run_diabetes(args.seed, params)
    elif args.task == "small":
        run_small(args.seed, params)
    else:
        report()


if __name__ == "__main__":
    main()
