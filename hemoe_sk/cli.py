"""The ``hemoe-sk`` command: ``demo``, ``fit``, ``predict`` and ``explain``.

::

    hemoe-sk demo
    hemoe-sk fit data.csv --target label --out model.hemoe
    hemoe-sk predict model.hemoe new.csv --out predictions.csv
    hemoe-sk explain model.hemoe data.csv --out routes.csv --png figures/

Models are written in hemoe_sk's safe format (:func:`hemoe_sk.save`), which
loading never executes; ``--format joblib`` (or a ``.joblib`` file name)
writes and reads joblib files instead, which run code when loaded.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time

import numpy as np

__all__ = ["main"]


class CLIError(Exception):
    """A user mistake, reported as one line without a traceback."""


# -- CSV ---------------------------------------------------------------------


def read_csv(path, target=None, *, require_target=False):
    """Read a CSV with a header row.

    Returns ``(X, y, feature_names)``; ``y`` is ``None`` when ``target`` is
    ``None`` or absent from the file (an error with ``require_target``).
    Labels stay strings unless every one parses as a number.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(rows) < 2:
        raise CLIError(f"{path}: expected a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    if require_target and target not in header:
        raise CLIError(f"{path}: no column named {target!r}; columns are {header}.")
    body = [r for r in rows[1:] if r]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise CLIError(
                f"{path}, line {i}: {len(r)} fields, but the header has {len(header)}."
            )
    columns = list(zip(*body))
    y = None
    if target is not None and target in header:
        j = header.index(target)
        y = _labels(columns[j])
        feature_idx = [i for i in range(len(header)) if i != j]
    else:
        feature_idx = list(range(len(header)))
    names = [header[i] for i in feature_idx]
    X = np.empty((len(body), len(feature_idx)), dtype=np.float64)
    for out_col, i in enumerate(feature_idx):
        try:
            X[:, out_col] = [float(v) if v.strip() != "" else np.nan for v in columns[i]]
        except ValueError:
            raise CLIError(
                f"{path}: column {header[i]!r} is not numeric; hemoe-sk reads numeric "
                "features only (encode categorical columns first)."
            ) from None
    return X, y, names


def _labels(values):
    values = [v.strip() for v in values]
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        return np.array(values, dtype=object)
    if np.all(numbers == np.round(numbers)):
        return numbers.astype(np.int64)
    return numbers


# -- commands ----------------------------------------------------------------


def _demo(args):
    """fit the classifier on scikit-learn's digits and compare it

    Fit the default classifier on load_digits, print the tree and its
    test accuracy beside the base network and LogisticRegression.
    """
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    from .classifier import HierarchicalEmbeddingMoEClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=args.random_state
    )
    print(
        f"load_digits: {len(X_train)} training and {len(X_test)} test images "
        f"(8x8 pixels, {len(np.unique(y))} classes), stratified 70/30 split.\n"
    )

    def run(name, estimator):
        t0 = time.perf_counter()
        estimator.fit(X_train, y_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = float(np.mean(estimator.predict(X_test) == y_test))
        pred_s = time.perf_counter() - t0
        return {"name": name, "acc": acc, "fit": fit_s, "pred": pred_s, "est": estimator}

    common = {"random_state": args.random_state, "verbose": args.verbose}
    print("Fitting the hierarchical mixture of experts (default parameters)...")
    tree = run(
        "HierarchicalEmbeddingMoEClassifier",
        make_pipeline(MinMaxScaler(), HierarchicalEmbeddingMoEClassifier(**common)),
    )
    clf = tree["est"][-1]
    print("\nThe fitted tree:\n")
    print(clf.export_text())
    print("\nFitting the base network (max_depth=0) and LogisticRegression...")
    base = run(
        "base network (max_depth=0)",
        make_pipeline(
            MinMaxScaler(), HierarchicalEmbeddingMoEClassifier(max_depth=0, **common)
        ),
    )
    logreg = run(
        "LogisticRegression",
        make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=2000)),
    )
    print()
    print(f"{'model':<38} {'test acc':>8} {'fit s':>8} {'x base':>7} {'predict s':>10}")
    for r in (tree, base, logreg):
        print(
            f"{r['name']:<38} {r['acc']:>8.4f} {r['fit']:>8.2f} "
            f"{r['fit'] / base['fit']:>7.2f} {r['pred']:>10.3f}"
        )
    print(
        f"\nTree: {clf.n_leaves_} leaves, depth {clf.depth_}; gain over the base "
        f"network: {100 * (tree['acc'] - base['acc']):+.2f} points."
    )
    return 0


#: File name endings that mean joblib when --format is not given.
_JOBLIB_SUFFIXES = (".joblib", ".pkl", ".pickle")
_JOBLIB_WARNING = (
    "hemoe-sk: warning: {path} is a joblib file: loading it runs code stored in "
    "it, so load it only if you trust whoever wrote it (the default .hemoe "
    "format runs nothing)."
)


def _model_format(args, path):
    if args.format is not None:
        return args.format
    return "joblib" if str(path).lower().endswith(_JOBLIB_SUFFIXES) else "hemoe"


def _save_model(model, names, args):
    metadata = {"feature_names": list(names), "target": args.target}
    if _model_format(args, args.out) == "joblib":
        import joblib

        joblib.dump({"model": model, **metadata}, args.out)
        print(_JOBLIB_WARNING.format(path=args.out), file=sys.stderr)
        return
    from .persistence import save

    save(model, args.out, metadata={**metadata, "written_by": "hemoe-sk fit"})


def _load_model(args):
    """``(model, feature names, target)`` of the file ``args.model``."""
    if _model_format(args, args.model) == "joblib":
        import joblib

        print(_JOBLIB_WARNING.format(path=args.model), file=sys.stderr)
        try:
            bundle = joblib.load(args.model)
        except Exception as exc:  # unpickling garbage can raise almost anything
            raise CLIError(
                f"cannot load {args.model}: not a joblib model file "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(bundle, dict) or "model" not in bundle:
            raise CLIError(f"{args.model} was not written by `hemoe-sk fit`.")
        return bundle["model"], bundle["feature_names"], bundle.get("target")
    from .persistence import ModelFileError, UntrustedTypeError, describe, load

    try:
        info = describe(args.model)
        model = load(args.model)
    except OSError as exc:
        raise CLIError(f"cannot read {args.model}: {exc.strerror or exc}") from None
    except (ModelFileError, UntrustedTypeError) as exc:
        hint = ""
        if "not a hemoe_sk model file" in str(exc):
            hint = " (if it is a joblib file you trust, pass --format joblib)"
        raise CLIError(f"{exc}{hint}") from None
    meta = info.get("metadata") or {}
    if "feature_names" not in meta:
        raise CLIError(f"{args.model} was not written by `hemoe-sk fit`.")
    return model, meta["feature_names"], meta.get("target")


def _fit(args):
    """fit on a CSV file and save the model

    Fit StandardScaler + HierarchicalEmbeddingMoEClassifier on a CSV
    file (header row, numeric features) and save it in hemoe_sk's safe
    format (or with joblib: --format joblib).
    """
    from .classifier import HierarchicalEmbeddingMoEClassifier

    X, y, names = read_csv(args.csv, target=args.target, require_target=True)
    params = {
        "max_depth": args.max_depth,
        "routing": args.routing,
        "max_epochs": args.max_epochs,
        "random_state": args.random_state,
        "verbose": args.verbose,
        "device": args.device,
    }
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), HierarchicalEmbeddingMoEClassifier(**params))
    t0 = time.perf_counter()
    try:
        model.fit(X, y)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot fit {args.csv}: {exc}") from None
    clf = model[-1]
    _save_model(model, names, args)
    print(clf.export_text())
    print(
        f"\nfitted on {len(X)} rows x {len(names)} features in "
        f"{time.perf_counter() - t0:.1f}s; training accuracy "
        f"{model.score(X, y):.4f}; saved to {args.out}"
    )
    return 0


def _load_model_and_rows(args):
    """``(model, feature names, X, y)``: the model file ``args.model`` and the
    rows of ``args.csv``, their feature columns matched to the model's by
    name (``y`` is None where the file has no label column)."""
    model, names, target = _load_model(args)
    X, y, file_names = read_csv(args.csv, target=target)
    missing = [n for n in names if n not in file_names]
    if missing:
        raise CLIError(f"{args.csv}: missing feature columns {missing}.")
    return model, names, X[:, [file_names.index(n) for n in names]], y


def _predict(args):
    """predict a CSV file with a saved model

    Predict every row of a CSV file with a model saved by
    `hemoe-sk fit`. Feature columns are matched by name; a label column
    is ignored. Safe-format files (the default) run nothing when loaded;
    joblib files (--format joblib) run code: load only those you trust.
    """
    model, _, X, _ = _load_model_and_rows(args)
    try:
        pred = model.predict(X)
        proba = model.predict_proba(X) if args.proba else None
    except ValueError as exc:
        raise CLIError(f"cannot predict {args.csv}: {exc}") from None
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(out)
        header = ["prediction"]
        if proba is not None:
            header += [f"proba_{c}" for c in model.classes_]
        writer.writerow(header)
        for i, p in enumerate(pred):
            row = [p]
            if proba is not None:
                row += [f"{v:.6f}" for v in proba[i]]
            writer.writerow(row)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"wrote {len(pred)} predictions to {args.out}", file=sys.stderr)
    return 0


def _explain(args):
    """write every row's route through the tree (CSV, and pictures)

    Route every row of a CSV file through a model saved by
    `hemoe-sk fit`: write one CSV row per sample (label when the file has
    it, leaf, path, routing probability at every depth, prediction), print
    the routes of the first rows, and with --png draw the tree, the
    label-by-leaf heatmap and the routing attributions of the first rows
    (attributions need captum: pip install hemoe_sk[explain]).
    """
    import os

    from . import inspection

    if args.samples < 1:
        raise CLIError(f"--samples must be at least 1, got {args.samples}.")
    model, names, X, y = _load_model_and_rows(args)
    try:
        inspection.export_routing(model, X, y, args.out)
        records = inspection.explain_routes(model, X[: args.samples])
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot explain {args.csv}: {exc}") from None
    print(f"wrote the routes of {len(X)} rows to {args.out}", file=sys.stderr)
    for record in records:
        print(inspection.format_route(record))
    if args.png is None:
        return 0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError(
            "--png needs matplotlib: `pip install hemoe_sk[plot]`."
        ) from None
    os.makedirs(args.png, exist_ok=True)
    written = []

    def save(display, name):
        path = os.path.join(args.png, name)
        display.figure_.tight_layout()
        display.figure_.savefig(path, dpi=args.dpi)
        plt.close(display.figure_)
        written.append(path)

    save(inspection.TreeDisplay.from_estimator(model), "tree.png")
    clf = model.steps[-1][1] if hasattr(model, "steps") else model
    if y is not None and hasattr(clf, "classes_"):
        save(inspection.RoutingDisplay.from_estimator(model, X, y), "routing.png")
    elif y is not None:
        print("no routing.png: a regressor's targets are not labels to count by leaf",
              file=sys.stderr)
    if clf.n_leaves_ < 2:
        print("the tree is a single leaf: no routing attributions", file=sys.stderr)
    else:
        try:
            display = inspection.AttributionDisplay.from_estimator(
                model, X[: args.samples], node=args.node, feature_names=names,
                row_labels=None if y is None else [f"label {v}" for v in y[: args.samples]],
            )
        except ImportError as exc:
            print(f"no attributions.png: {exc}", file=sys.stderr)
        except (ValueError, TypeError) as exc:
            raise CLIError(f"cannot compute routing attributions: {exc}") from None
        else:
            save(display, "attributions.png")
    print("wrote " + ", ".join(written), file=sys.stderr)
    return 0


def _subcommand(sub, name, func):
    """The ``hemoe-sk NAME`` subparser, running ``func(args)``.

    ``func``'s docstring is the command's text: its first line the one-line
    help of ``hemoe-sk --help``, the rest the description of
    ``hemoe-sk NAME --help``.
    """
    # Under ``python -OO`` there are no docstrings, hence no help texts.
    summary, _, rest = (func.__doc__ or "").strip().partition("\n\n")
    parser = sub.add_parser(name, help=summary, description=" ".join(rest.split()))
    parser.set_defaults(func=func)
    return parser


def _add_run_options(parser, *, verbose):
    """``--random-state`` and ``--verbose`` of a command that fits."""
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=verbose)


def _add_model_file_options(parser, *, rows):
    """``MODEL CSV [--format]`` of a command that reads a saved model and
    ``rows``, a CSV file."""
    parser.add_argument("model", help="a file written by `hemoe-sk fit`")
    parser.add_argument("csv", help=f"{rows}, a CSV file with a header row")
    parser.add_argument(
        "--format",
        choices=("hemoe", "joblib"),
        default=None,
        help="model file format; default: joblib for .joblib/.pkl names, else hemoe",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hemoe-sk",
        description="Hierarchical, embedding-routed mixtures of experts.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _subcommand(sub, "demo", _demo)
    _add_run_options(demo, verbose=0)

    fit = _subcommand(sub, "fit", _fit)
    fit.add_argument("csv", help="training data, a CSV file with a header row")
    fit.add_argument("--target", required=True, help="name of the label column")
    fit.add_argument("--out", default="model.hemoe", help="where to save the model")
    fit.add_argument(
        "--format",
        choices=("hemoe", "joblib"),
        default=None,
        help="model file format: hemoe (safe, the default) or joblib (runs code "
        "when loaded); default: joblib for .joblib/.pkl names, else hemoe",
    )
    fit.add_argument("--max-depth", type=int, default=2)
    fit.add_argument("--routing", choices=("hard", "soft"), default="soft")
    fit.add_argument("--max-epochs", type=int, default=100)
    fit.add_argument("--device", default="cpu")
    _add_run_options(fit, verbose=1)

    predict = _subcommand(sub, "predict", _predict)
    _add_model_file_options(predict, rows="rows to predict")
    predict.add_argument("--out", help="write predictions here instead of stdout")
    predict.add_argument(
        "--proba", action="store_true", help="also write class probabilities"
    )

    explain = _subcommand(sub, "explain", _explain)
    _add_model_file_options(explain, rows="rows to explain")
    explain.add_argument("--out", default="routes.csv", help="the routing CSV")
    explain.add_argument(
        "--png", metavar="DIR", help="also write tree.png, routing.png and "
        "attributions.png into DIR"
    )
    explain.add_argument(
        "--samples", type=int, default=3,
        help="rows whose routes are printed and attributed (the first ones)",
    )
    explain.add_argument(
        "--node", type=int, default=None,
        help="attribute the routing of this node only (default: every node on "
        "each row's path)",
    )
    explain.add_argument("--dpi", type=int, default=120)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"hemoe-sk: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
