"""Benchmark suite: ``python -m benchmarks.run [--quick] [options]``.

Subcommands run the focused benchmarks instead of the suite:
``python -m benchmarks.run dec [options]`` (DEC/IDEC against k-means),
``python -m benchmarks.run moe [options]`` (the flat mixture of experts and
DeepMoE), ``python -m benchmarks.run regress [options]`` (the regressors
against the base network and HGB), ``python -m benchmarks.run routers
[options]`` (node routers), ``python -m benchmarks.run parallel [options]``
(``n_jobs=1`` against 2), ``python -m benchmarks.run persistence [options]``
(loading a model file against 0.3's reader) and ``python -m benchmarks.run
pareto [options]`` (the Pareto report of accuracy against predict throughput
and fit time, from the result files);
``python -m benchmarks.run SUBCOMMAND --help`` lists each one's options.

Fits every selected model on the same stratified splits of every selected
data set (one split per seed, 30% test), each fit in a fresh child process,
and writes ``<results-dir>/<name>.md``, ``<name>.json`` (or ``--out``) and
``<name>.png``. Times and memory are also reported as ratios to the base
network (``max_depth=0``) fitted on the same split in the same run. The
issue-7 table asks whether the tree beats two controls that get its extra
training without its hierarchy. See ``docs/benchmarks.rst``.

``--quick`` (< 5 minutes on 2 cores): digits and the generated sub-class task,
subsampled to 600 rows, 2 seeds, 10+3 epochs, K in (2, 3), the quick subset
of models, a small scaling run. It exercises the harness; its accuracies mean
nothing. The default (full) run: 6 data sets, 3 seeds, every model, 15 epochs
(experts 3), a 500-4,000 row scaling run; about 35-40 minutes on an idle
2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from . import _anchors, _data, _models, _report, _width  # noqa: F401 - registers
from ._models import BASELINE, MODELS, Config, Context, Skip
from ._worker import Runner

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: ``python -m benchmarks.run NAME ...``: the module whose ``main(argv)`` runs it.
SUBCOMMANDS = {
    "dec": "_dec",
    "moe": "_moe",
    "regress": "_regress",
    "routers": "_routers",
    "parallel": "_parallel",
    "persistence": "_persistence",
    "pareto": "_pareto",
}

#: Figures of a fit, copied to models evaluated on another model's fit.
_FIT_FIGURES = ("fit_s", "rss_before_mb", "peak_rss_mb", "fit_mem_mb")

#: Settings of the two presets; any option given on the command line wins.
PRESETS = {
    "full": dict(
        datasets=[
            "digits",
            "digits-coarse3",
            "subclasses",
            "optdigits",
            "segment",
            "winequality-white",
        ],
        models=None,  # every registered model
        seeds=3,
        epochs=15,
        expert_epochs=None,
        max_depth=2,
        n_clusters_grid=(2, 3, 4, 5),
        max_rows=None,
        rf_trees=200,
        scaling_rows=500,
        name="full",
    ),
    # The scale tier: the classifier's own defaults (40 root + 10 expert
    # epochs, depth 2, K in 2..5) on the two large data sets, with the
    # three compute-matched controls, the width sweep of the Pareto report,
    # ConvEmbedder on images and the anchors (benchmarks/_anchors.py; skipped
    # with a message where the bench extra is not installed).
    "large": dict(
        datasets=["fashion-mnist", "covtype"],
        models=[
            "base",
            "tree-hard",
            "tree-soft",
            "ctrl-epochs",
            "ctrl-ensemble",
            "ctrl-wide",
            "width-0.5x",
            "width-2x",
            "width-4x",
            "width-8x",
            "conv",
            "lgbm",
            "lgbm-1000",
            "hgb-1000",
            "realmlp-td",
            "tabm-d",
        ],
        seeds=2,
        epochs=40,
        expert_epochs=None,
        max_depth=2,
        n_clusters_grid=(2, 3, 4, 5),
        max_rows=None,
        rf_trees=100,
        scaling_rows=None,
        name="large",
    ),
    "quick": dict(
        datasets=["digits", "subclasses"],
        models="quick",
        seeds=2,
        epochs=10,
        expert_epochs=3,
        max_depth=2,
        n_clusters_grid=(2, 3),
        max_rows=600,
        rf_trees=50,
        scaling_rows=150,
        name="quick",
    ),
}


def _csv_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=(
            "Benchmark hemoe_sk against its base network, two honest controls, "
            "scikit-learn models and peer packages, on the same splits. Writes "
            "Markdown, JSON and a PNG figure."
        ),
        epilog=(
            "Subcommands (instead of the suite): `dec` (DEC/IDEC against k-means), "
            "`moe` (flat mixture of experts and DeepMoE), `routers` (node routers), "
            "`regress`, `parallel`, `pareto` (accuracy against predict throughput "
            "and fit time, from the result files); "
            "`python -m benchmarks.run SUBCOMMAND --help` lists their options."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run (< 5 min on 2 cores): 2 data sets of 600 "
        "rows, 2 seeds, tiny epochs, the quick models",
    )
    p.add_argument(
        "--tier",
        choices=["small", "large"],
        default="small",
        help="'large': the scale tier, Fashion-MNIST (official split) and "
        "covtype (stratified 70/30) from ../shared/data, 2 seeds, the "
        "classifier's default budget (40+10 epochs), base, trees and the three "
        "controls; skipped with a message where the files are absent",
    )
    p.add_argument(
        "--datasets",
        type=_csv_list,
        metavar="A,B",
        help=f"data sets to run (known: {', '.join(_data.DATASETS)})",
    )
    p.add_argument(
        "--models",
        type=_csv_list,
        metavar="A,B",
        help=f"models to run (known: {', '.join(MODELS)}); `mechanisms` "
        "stands for the default tree, tree-refine and one row per issue-12 "
        "mechanism; `base` and the models a control needs are added",
    )
    p.add_argument(
        "--exclude-models",
        type=_csv_list,
        default=[],
        metavar="A,B",
        help="models to leave out of the selection",
    )
    p.add_argument(
        "--csv",
        type=Path,
        metavar="PATH",
        help="also (or, without --datasets, only) benchmark this CSV file",
    )
    p.add_argument(
        "--target",
        metavar="COLUMN",
        help="label column of --csv (default: 'class', else the last)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=_data.DEFAULT_DATA_DIR,
        help="folder of the project's CSV files (default: ../shared/data)",
    )
    p.add_argument(
        "--seeds", type=int, help="number of seeds = splits (default 3; --quick 2)"
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed .. first-seed + seeds - 1 (default 0): "
        "add a seed to an earlier run; `pareto` merges the seeds of several files",
    )
    p.add_argument(
        "--test-size",
        type=float,
        default=0.3,
        help="test fraction of each stratified split (default 0.3)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        help="stratified subsample of each data set to at most this many "
        "rows (default: all; --quick 600)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="max_epochs of the base/root network (default 15; --quick 10)",
    )
    p.add_argument(
        "--expert-epochs",
        type=int,
        help="expert_max_epochs (default: the classifier's max_epochs // 4; "
        "--quick 3)",
    )
    p.add_argument("--max-depth", type=int, help="max_depth of the trees (default 2)")
    p.add_argument(
        "--n-clusters-grid",
        type=lambda s: tuple(int(k) for k in _csv_list(s)),
        metavar="2,3,...",
        help="candidate K at every node (default 2,3,4,5; --quick 2,3)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="batch size of every neural model (default 64)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate of hemoe_sk's networks and nt-hmoe (default 1e-3)",
    )
    p.add_argument(
        "--tree-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a parameter on every tree of the run (not on base or the "
        "controls), e.g. --tree-param split_test=none to compare mechanisms on "
        "forced splits; VALUE is read as a Python literal where it is one",
    )
    p.add_argument(
        "--rf-trees",
        type=int,
        help="trees of the random forest (default 200; --quick 50)",
    )
    p.add_argument(
        "--scaling-rows",
        type=int,
        help="training rows of the 1x point of the scaling run "
        "(default 500; --quick 150)",
    )
    p.add_argument(
        "--scaling-factors",
        type=lambda s: tuple(int(k) for k in _csv_list(s)),
        default=(1, 2, 4, 8),
        metavar="1,2,4,8",
        help="multiples of --scaling-rows to fit (default 1,2,4,8)",
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling run")
    p.add_argument(
        "--no-base",
        action="store_true",
        help="do not add the ratio baseline (base) to the models; time and "
        "memory ratios are then left out (e.g. a second run of a slow anchor "
        "on splits whose base was already measured)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/BLAS/OpenMP threads per fit (default 1)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds before a single fit is killed (default 1800)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="fit in this process (debugging; memory figures meaningless)",
    )
    p.add_argument("--name", help="report name (default: 'quick' or 'full')")
    p.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where <name>.md/.json/.png go (default benchmarks/results)",
    )
    p.add_argument(
        "--out", type=Path, help="JSON path (default <results-dir>/<name>.json)"
    )
    p.add_argument(
        "--list", action="store_true", help="list data sets and models, exit"
    )
    return p


def _settings(args):
    if args.quick and args.tier == "large":
        raise SystemExit("--quick and --tier large exclude each other")
    key = "quick" if args.quick else ("large" if args.tier == "large" else "full")
    preset = dict(PRESETS[key])
    for key in (
        "datasets",
        "models",
        "seeds",
        "max_rows",
        "name",
        "rf_trees",
        "scaling_rows",
        "n_clusters_grid",
        "max_depth",
    ):
        value = getattr(args, key)
        if value is not None:
            preset[key] = value
    if args.epochs is not None:
        preset["epochs"] = args.epochs
    if args.expert_epochs is not None:
        preset["expert_epochs"] = args.expert_epochs
    if args.csv is not None and args.datasets is None:
        preset["datasets"] = []
    return preset


def _tree_params(items):
    """``["a=1", "b=none"]`` -> ``{"a": 1, "b": "none"}``."""
    import ast

    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--tree-param wants NAME=VALUE, got {item!r}")
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def _pipeline(data, estimator):
    steps = []
    if data.has_missing:
        steps.append(SimpleImputer(strategy="median"))
    steps.append(MinMaxScaler() if data.scaling == "minmax" else StandardScaler())
    steps.append(estimator)
    return make_pipeline(*steps)


def _machine():
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": load,
    }


def _versions():
    out = {}
    for mod in (
        "numpy",
        "scipy",
        "sklearn",
        "torch",
        "skorch",
        "hemoe_sk",
        "datalets",
        "neural_trees",
        "matplotlib",
    ):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional package
            out[mod] = None
    return out


def _say(message):
    print(message, flush=True)


def _line(dataset, seed, model, res, base, started, note=""):
    elapsed = time.perf_counter() - started
    if res is None:
        return
    ratio = ""
    if base is not None and model != BASELINE and base["fit_s"] > 0:
        ratio = f" ({res['fit_s'] / base['fit_s']:.2f}x base)"
    _say(
        f"  [{elapsed:7.0f}s] {dataset:<18} seed {seed}  {model:<14} "
        f"acc {res['accuracy']:.4f}  fit {res['fit_s']:7.2f}s{ratio}  "
        f"predict {res['predict_rows_per_s']:,.0f} rows/s  "
        f"fit mem {res['fit_mem_mb']:.0f} MiB{note}"
    )


def run_benchmarks(settings, args, runner, started):
    """All (data set, seed, model) fits; returns (runs, datasets, skips)."""
    config = settings["config"]
    specs = settings["specs"]
    runs, datasets, skipped, skipped_datasets = [], {}, {}, {}
    jobs = [(name, None) for name in settings["datasets"]]
    if args.csv is not None:
        jobs.append((args.csv.stem, args.csv))
    for name, csv_path in jobs:
        try:
            data = _data.load(name, args.data_dir, csv_path, args.target)
        except _data.DataUnavailable as exc:
            _say(f"skipping data set {name}: {exc}")
            skipped_datasets[name] = str(exc)
            continue
        data = _data.subsample(data, settings["max_rows"])
        desc = (
            _data.DATASETS[name].description
            if csv_path is None
            else f"user CSV {csv_path}"
        )
        datasets[name] = {
            "description": desc,
            "n_rows": int(len(data.y)) + (0 if data.test is None else len(data.test[1])),
            "n_features": int(data.X.shape[1]),
            "n_classes": int(data.n_classes),
            "scaling": data.scaling,
            "source": data.source,
            "notes": data.notes,
        }
        _say(
            f"{name}: {datasets[name]['n_rows']} rows, {data.X.shape[1]} features, "
            f"{data.n_classes} classes"
        )
        for note in data.notes:
            _say(f"  note: {note}")
        _, counts = np.unique(data.y, return_counts=True)
        stratify = data.y if counts.min() >= 2 else None
        for seed in range(args.first_seed, args.first_seed + settings["seeds"]):
            if data.test is not None:  # an official split: the seed varies the models
                X_tr, y_tr, (X_te, y_te) = data.X, data.y, data.test
            else:
                X_tr, X_te, y_tr, y_te = train_test_split(
                    data.X,
                    data.y,
                    test_size=args.test_size,
                    stratify=stratify,
                    random_state=seed,
                )
            ctx = Context(
                seed=seed,
                n_features=X_tr.shape[1],
                n_classes=len(np.unique(y_tr)),
                n_train=len(y_tr),
                config=config,
                X_train=X_tr,
            )
            base = None
            shared = {}
            for spec in specs:
                if spec.name in skipped:
                    continue
                try:
                    estimator = spec.build(ctx)
                except Skip as exc:
                    reason = str(exc)
                    if "from the same split" not in reason:
                        skipped[spec.name] = reason
                        _say(f"  skipping model {spec.name}: {reason}")
                        continue
                    runs.append(
                        {
                            "dataset": name,
                            "seed": seed,
                            "model": spec.name,
                            "error": f"skipped: {reason}",
                        }
                    )
                    _say(f"  {name} seed {seed} {spec.name}: skipped ({reason})")
                    continue
                except Exception as exc:  # noqa: BLE001 - reported, the suite goes on
                    runs.append(
                        {
                            "dataset": name,
                            "seed": seed,
                            "model": spec.name,
                            "error": f"building failed: {type(exc).__name__}: {exc}",
                        }
                    )
                    _say(f"  {name} seed {seed} {spec.name}: FAILED to build: {exc}")
                    continue
                record = {"dataset": name, "seed": seed, "model": spec.name}
                if spec.name in shared:
                    # evaluated on another model's fit (see ModelSpec.shares_fit)
                    res, err, owner = shared.pop(spec.name)
                    record["shared_fit_with"] = owner
                else:
                    variants = {
                        other.name: other.shares_fit[1]
                        for other in specs
                        if other.shares_fit and other.shares_fit[0] == spec.name
                    }
                    res, err = runner.run(
                        _pipeline(data, estimator),
                        X_tr,
                        y_tr,
                        X_te,
                        y_te,
                        record=spec.record,
                        variants=variants or None,
                    )
                    for vname, vres in (
                        (res or {}).pop("variants", None) or {}
                    ).items():
                        fit = {k: res[k] for k in _FIT_FIGURES}
                        shared[vname] = ({**vres, **fit}, None, spec.name)
                if err is not None:
                    record["error"] = err
                    _say(f"  {name} seed {seed} {spec.name}: FAILED: {err}")
                else:
                    record.update(res)
                    record["error"] = None
                    ctx.info[spec.name] = res["info"]
                    if spec.name == BASELINE:
                        base = res
                    owner = record.get("shared_fit_with")
                    _line(
                        name,
                        seed,
                        spec.name,
                        res,
                        base,
                        started,
                        f"  (on {owner}'s fit)" if owner else "",
                    )
                runs.append(record)
    return runs, datasets, skipped, skipped_datasets


def run_scaling(settings, runner, started, factors=(1, 2, 4, 8)):
    """Fit time and memory of tree-hard and base at 1x..8x generated rows."""
    n1 = settings["scaling_rows"]
    config = settings["config"]
    points, errors = [], []
    n_test = 300
    for factor in factors:
        n = n1 * factor
        X, y = _data.make_subclass_task(n_samples=n + n_test, random_state=0)
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=n_test, stratify=y, random_state=0
        )
        data = _data.Data(X_tr, y_tr)
        ctx = Context(
            seed=0, n_features=X.shape[1], n_classes=3, n_train=n, config=config
        )
        point = {"factor": factor, "n_train": n}
        for key, model in (("base", BASELINE), ("tree", "tree-hard")):
            spec = MODELS[model]
            try:
                est = spec.build(ctx)
            except Skip as exc:
                errors.append(f"{model}: skipped ({exc})")
                continue
            res, err = runner.run(
                _pipeline(data, est), X_tr, y_tr, X_te, y_te, record=spec.record
            )
            if err is not None:
                errors.append(f"{model} at {n} rows: {err}")
                _say(f"  scaling {model} {n} rows: FAILED: {err}")
                continue
            point[f"{key}_fit_s"] = res["fit_s"]
            point[f"{key}_fit_mem_mb"] = res["fit_mem_mb"]
            point[f"{key}_peak_rss_mb"] = res["peak_rss_mb"]
            point[f"{key}_accuracy"] = res["accuracy"]
            point[f"{key}_n_leaves"] = res["info"].get("n_leaves_")
            _say(
                f"  [{time.perf_counter() - started:7.0f}s] scaling {model:<10} "
                f"{n:>6} rows: fit {res['fit_s']:.2f}s, fit mem "
                f"{res['fit_mem_mb']:.0f} MiB, leaves {res['info'].get('n_leaves_')}"
            )
        points.append(point)
    sizes = [p["n_train"] for p in points]
    exponents = {
        f"{key}_{fig}": _report.growth_exponent(
            sizes, [p.get(f"{key}_{fig}") for p in points]
        )
        for key in ("tree", "base")
        for fig in ("fit_s", "fit_mem_mb", "peak_rss_mb")
    }
    return {
        "description": f"Generated sub-class task (as `subclasses`), {n1:,} to "
        f"{max(factors) * n1:,} training rows, seed 0",
        "points": points,
        "exponents": exponents,
        "errors": errors,
    }


def main(argv=None):
    """Run the suite, or the subcommand named by ``argv[0]`` (see ``SUBCOMMANDS``).

    Returns the suite's result dict (also written to disk), or what the
    subcommand's ``main`` returns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(f".{SUBCOMMANDS[argv[0]]}", __package__)
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list:
        print("data sets:")
        for d in _data.DATASETS.values():
            print(f"  {d.name:<20} {'(quick) ' if d.quick else ''}{d.description}")
        print("models:")
        for m in MODELS.values():
            print(
                f"  {m.name:<14} [{m.group}] {'(quick) ' if m.quick else ''}"
                f"{m.description}"
            )
        return None
    if (args.target is not None) and args.csv is None:
        raise SystemExit("--target needs --csv")
    os.environ.setdefault("DATALETS_QUIET", "1")

    s = _settings(args)
    unknown = [d for d in s["datasets"] if d not in _data.DATASETS]
    if unknown:
        raise SystemExit(
            f"unknown data set(s) {', '.join(unknown)}; known: "
            f"{', '.join(_data.DATASETS)}"
        )
    config = Config(
        max_epochs=s["epochs"],
        expert_max_epochs=s["expert_epochs"],
        max_depth=s["max_depth"],
        n_clusters_grid=tuple(s["n_clusters_grid"]),
        batch_size=args.batch_size,
        lr=args.lr,
        rf_trees=s["rf_trees"],
        tree_params=_tree_params(args.tree_param),
        threads=args.threads,
    )
    if s["models"] == "quick":
        names = [m.name for m in MODELS.values() if m.quick]
    elif s["models"] is None:
        # every model but the per-mechanism rows, which --models mechanisms asks for
        names = [m for m in MODELS if m not in _models.MECHANISMS]
    else:
        names = []
        for n in s["models"]:
            if n == "mechanisms":
                names += ["tree-hard", "tree-soft", "tree-refine", *_models.MECHANISMS]
            else:
                names.append(n)
    names = [n for n in names if n not in set(args.exclude_models)]
    specs, added = _models.resolve(names, baseline=not args.no_base)
    if added:
        _say(
            f"added model(s) {', '.join(added)} (the ratio baseline, or needed "
            "by a control)"
        )
    s["config"], s["specs"] = config, specs

    name = s["name"]
    results_dir = args.results_dir
    json_path = args.out or results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    png_path = results_dir / f"{name}.png"

    started = time.perf_counter()
    _say(
        f"hemoe_sk benchmarks '{name}': data sets {', '.join(s['datasets']) or '-'}"
        f"{' + ' + str(args.csv) if args.csv else ''}; models "
        f"{', '.join(sp.name for sp in specs)}; {s['seeds']} seed(s)"
    )
    runner = Runner(
        n_threads=args.threads, timeout=args.timeout, isolate=not args.in_process
    )

    runs, datasets, skipped, skipped_datasets = run_benchmarks(s, args, runner, started)
    _report.add_ratios(runs)
    scaling = (
        None
        if args.no_scaling or s["scaling_rows"] is None
        else run_scaling(s, runner, started, args.scaling_factors)
    )

    result = {
        "meta": {
            "name": name,
            "quick": bool(args.quick),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m benchmarks.run " + shlex.join(argv),
            "machine": _machine(),
            "versions": _versions(),
            "duration_s": None,
            "config": {
                "seeds": s["seeds"],
                "first_seed": args.first_seed,
                "test_size": args.test_size,
                "max_rows": s["max_rows"],
                "max_epochs": config.max_epochs,
                "expert_max_epochs": config.expert_max_epochs,
                "expert_epochs": config.expert_epochs,
                "path_epochs": config.path_epochs,
                "max_depth": config.max_depth,
                "n_clusters_grid": list(config.n_clusters_grid),
                "batch_size": config.batch_size,
                "lr": config.lr,
                "rf_trees": config.rf_trees,
                "tree_params": config.tree_params,
                "threads": args.threads,
                "baseline": BASELINE,
            },
        },
        "datasets": datasets,
        "skipped_datasets": skipped_datasets,
        "models": {
            sp.name: {"group": sp.group, "description": sp.description}
            for sp in specs
            if sp.name not in skipped
        },
        "skipped": skipped,
        "runs": runs,
        "summary": _report.summarize(runs),
        "issue7": _report.issue7(runs),
        "scaling": scaling,
    }
    result["meta"]["duration_s"] = time.perf_counter() - started
    _report.write_json(result, json_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(_report.markdown(result))
    try:
        _report.figure(result, png_path)
    except ImportError as exc:
        _say(f"no figure: matplotlib is not importable ({exc})")
    _say(
        f"done in {result['meta']['duration_s']:.0f}s: {md_path}, {json_path}, "
        f"{png_path}"
    )
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
