"""The Pareto report: accuracy against predict throughput and against fit time.

Run from the repository root::

    python -m benchmarks.run pareto                      # every results/*.json
    python -m benchmarks.run pareto --inputs a.json b.json --datasets covtype

Reads the JSON files that ``python -m benchmarks.run`` writes (by default
every ``benchmarks/results/*.json`` holding one of the large data sets) and,
per data set, writes ``pareto-<data set>.md`` (a table) and
``pareto-<data set>.png`` (two panels: accuracy against predict rows/s and
against fit seconds, both on log axes, with each front drawn) to
``benchmarks/results/``. A model measured in several files keeps the latest
run's figures; every row names the run it comes from, with its date and
threads, because fit times from different runs compare only loosely.

A row is *on the front* of a panel when no other row is at least as accurate
and at least as fast (higher rows/s, or lower fit seconds) with one of the
two strictly better (:func:`pareto_front`). The tree's claim (issue 22,
item 5) is judged on the throughput panel: it pays where no dense network
with the same or higher predict throughput is more accurate
(:func:`dominators`: the dense hemoe_sk networks, the controls and the
anchors are checked).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ._report import _mean, _std

RESULTS = Path(__file__).resolve().parent / "results"

#: Models the report's verdict is about (the hierarchical trees).
TREES = ("tree-hard", "tree-soft")

#: Group of a model when its result file does not say (older files).
_GROUPS = {"base": "hemoe_sk"}


def pareto_front(rows, objectives):
    """Which rows no other row dominates.

    Parameters
    ----------
    rows : list of dict
        One dict per point.
    objectives : list of (str, str)
        ``(key, "max")`` or ``(key, "min")`` per objective. A row with a
        missing or non-finite value of an objective is never on the front.

    Returns
    -------
    list of bool
        ``True`` where no other row is at least as good on every objective
        and strictly better on one (ties are all on the front).

    Examples
    --------
    >>> rows = [{"acc": 0.9, "speed": 10}, {"acc": 0.8, "speed": 100},
    ...         {"acc": 0.7, "speed": 50}]
    >>> pareto_front(rows, [("acc", "max"), ("speed", "max")])
    [True, True, False]
    """
    for key, sense in objectives:
        if sense not in ("max", "min"):
            raise ValueError(f"objective {key!r}: sense must be 'max' or 'min'")

    def values(row):
        out = []
        for key, sense in objectives:
            v = row.get(key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
            out.append(v if sense == "max" else -v)
        return out

    points = [values(r) for r in rows]
    front = []
    for i, p in enumerate(points):
        if p is None:
            front.append(False)
            continue
        dominated = any(
            q is not None
            and j != i
            and all(a >= b for a, b in zip(q, p))
            and any(a > b for a, b in zip(q, p))
            for j, q in enumerate(points)
        )
        front.append(not dominated)
    return front


def dominators(rows, model, speed="predict_rows_per_s",
               groups=("hemoe_sk", "width", "control", "anchor")):
    """Models of ``groups`` (every ``tree*`` model excluded: the dense
    hemoe_sk networks, the controls and the anchors) at least as fast as ``model`` in ``speed`` and
    more accurate: the rows that refute its claim.

    Returns the list of model names, or ``None`` when ``model`` is absent.
    """
    own = next((r for r in rows if r["model"] == model), None)
    if own is None:
        return None
    return [
        r["model"]
        for r in rows
        if not r["model"].startswith("tree")
        and r["model"] != model
        and r.get("group") in groups
        and r.get(speed, -math.inf) >= own[speed]
        and r["accuracy"] > own["accuracy"]
    ]


def _not_comparable(meta):
    """Why a run's figures do not belong on the full data set's front, or ''."""
    config = meta["config"]
    if meta.get("quick"):
        return "a --quick run"
    if config.get("max_rows") is not None:
        return f"subsampled to {config['max_rows']} rows"
    if config.get("tree_params"):
        return f"trees with --tree-param {config['tree_params']}"
    return ""


def collect(paths, datasets=None):
    """``{dataset: [row, ...]}`` from benchmark result files.

    Every fit (data set, model, seed) is read from the files' ``runs``; a
    fit found in several files keeps the latest run's, so seeds measured in
    separate runs (``--first-seed``) add up. A row holds the model, its
    group, the mean accuracy over its seeds (and their standard deviation),
    the mean fit seconds and predict rows/s, the number of seeds and the
    files it comes from. Files of ``--quick`` runs, of subsampled data
    (``--max-rows``) and of trees with ``--tree-param`` are left out (with a
    printed note): their figures are not those of the full data set's
    defaults.
    """
    fits, groups, files = {}, {}, {}
    for path in paths:
        path = Path(path)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read {path}: {exc}") from None
        if not isinstance(result, dict):
            continue  # not a file of the main suite
        runs = result.get("runs")
        meta = result.get("meta", {})
        if not isinstance(runs, list) or "config" not in meta:
            continue  # not a file of the main suite
        why = _not_comparable(meta)
        if why:
            print(f"{path.name} left out: {why}")
            continue
        date = meta.get("date", "")
        files[path.name] = (
            date,
            meta["config"].get("threads"),
            (meta.get("machine") or {}).get("loadavg"),
        )
        for model, m in result.get("models", {}).items():
            groups.setdefault(model, m.get("group"))
        for r in runs:
            if r.get("error") is not None or r.get("accuracy") is None:
                continue
            if datasets is not None and r["dataset"] not in datasets:
                continue
            key = (r["dataset"], r["model"], r["seed"])
            if key not in fits or date >= fits[key][0]:
                fits[key] = (date, path.name, r)
    by_model = {}
    for (dataset, model, _), (_, name, r) in fits.items():
        by_model.setdefault((dataset, model), []).append((name, r))
    out = {}
    for (dataset, model), entries in by_model.items():
        runs = [r for _, r in entries]
        acc = [r["accuracy"] for r in runs]
        sources = sorted({name for name, _ in entries})
        out.setdefault(dataset, []).append({
            "model": model,
            "group": groups.get(model) or _GROUPS.get(model),
            "accuracy": _mean(acc),
            "accuracy_std": _std(acc),
            "fit_s": _mean([r.get("fit_s") for r in runs]),
            "predict_rows_per_s": _mean([r.get("predict_rows_per_s") for r in runs]),
            "n_seeds": len(runs),
            "source": ", ".join(sources),
            "files": {name: files[name] for name in sources},
        })
    for rows in out.values():
        rows.sort(key=lambda r: -r["accuracy"])
        for key, flags in (
            ("front_predict", pareto_front(
                rows, [("accuracy", "max"), ("predict_rows_per_s", "max")])),
            ("front_fit", pareto_front(rows, [("accuracy", "max"), ("fit_s", "min")])),
        ):
            for row, flag in zip(rows, flags):
                row[key] = flag
    return out


def _num(x, digits=0):
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "—"
    return f"{x:,.{digits}f}"


def markdown(dataset, rows):
    """The Pareto table of one data set, with the trees' verdict."""
    sources = sorted({(name, *info) for r in rows for name, info in r["files"].items()})
    lines = [
        f"# Pareto report: {dataset}",
        "",
        "Written by `python -m benchmarks.run pareto` from these result files "
        "(each row names its own; fit times from different runs compare only "
        "loosely, accuracies exactly where the splits are the same):",
        "",
    ]
    for src, date, threads, load in sources:
        lines.append(
            f"- `{src}`: {date}, {threads} thread(s) per fit, load average at "
            f"start {load}"
        )
    lines += [
        "",
        "Means over the seeds. *front (predict)*: no other row is at least as "
        "accurate with at least the predict throughput (one of the two strictly "
        "better); *front (fit)*: the same with fit seconds (lower is better).",
        "",
        "| model | group | accuracy | ± sd | fit s | predict rows/s | seeds | "
        "front (predict) | front (fit) | source |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['group'] or '—'} | {r['accuracy']:.4f} | "
            f"{_num(r['accuracy_std'], 4)} | {_num(r['fit_s'], 1)} | "
            f"{_num(r['predict_rows_per_s'])} | {r['n_seeds']} | "
            f"{'**yes**' if r['front_predict'] else 'no'} | "
            f"{'**yes**' if r['front_fit'] else 'no'} | {r['source']} |"
        )
    lines += ["", "## The trees' claim", ""]
    for tree in TREES:
        beaten = dominators(rows, tree)
        if beaten is None:
            lines.append(f"- `{tree}`: not measured on {dataset}.")
        elif beaten:
            lines.append(
                f"- `{tree}`: does not pay here: "
                + ", ".join(f"`{m}`" for m in beaten)
                + (" predicts" if len(beaten) == 1 else " predict")
                + " at least as fast and more accurately."
            )
        else:
            lines.append(
                f"- `{tree}`: pays here: no other model (dense hemoe_sk networks, "
                "controls, anchors) predicts at least as fast and more accurately."
            )
    return "\n".join(lines) + "\n"


_COLORS = {
    "anchor": "tab:red",
    "hemoe_sk": "tab:blue",
    "width": "tab:green",
    "control": "tab:orange",
    "sklearn": "tab:purple",
    "peer": "tab:brown",
}


def figure(dataset, rows, path):
    """Two panels: accuracy against predict rows/s and against fit seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    panels = (
        ("predict_rows_per_s", "front_predict", "predict throughput (rows/s, log)",
         True),
        ("fit_s", "front_fit", "fit time (s, log)", False),
    )
    for ax, (key, front, label, higher) in zip(axes, panels):
        pts = [r for r in rows if isinstance(r.get(key), (int, float)) and r[key] > 0]
        for r in pts:
            color = _COLORS.get(r["group"], "tab:gray")
            marker = "*" if r["model"] in TREES else "o"
            ax.scatter(r[key], r["accuracy"], c=color, marker=marker,
                       s=120 if marker == "*" else 40, zorder=3,
                       edgecolors="k" if r[front] else "none")
            ax.annotate(r["model"], (r[key], r["accuracy"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        on = sorted((r for r in pts if r[front]), key=lambda r: r[key])
        if len(on) > 1:
            ax.step([r[key] for r in on], [r["accuracy"] for r in on],
                    where="post" if not higher else "pre", color="k", lw=0.8,
                    alpha=0.6, zorder=2)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=g)
        for g, c in _COLORS.items()
        if any(r["group"] == g for r in rows)
    ]
    handles.append(plt.Line2D([], [], marker="*", ls="", color="k", label="tree"))
    axes[0].legend(handles=handles, fontsize=8, loc="lower left")
    fig.suptitle(f"{dataset}: accuracy against predict throughput and fit time "
                 "(outlined: on the front)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_inputs(results_dir=RESULTS):
    """Every result file of the main suite in ``results_dir``."""
    return sorted(p for p in Path(results_dir).glob("*.json")
                  if not p.name.startswith("pareto-"))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run pareto",
        description="Pareto report: accuracy against predict throughput and fit "
        "time per data set, from the suite's result files.",
    )
    parser.add_argument("--inputs", type=Path, nargs="+",
                        help="result JSON files (default: benchmarks/results/*.json)")
    parser.add_argument("--datasets", nargs="+", default=["covtype", "fashion-mnist"],
                        help="data sets to report (default: covtype fashion-mnist)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where pareto-<data set>.md/.png go")
    args = parser.parse_args(argv)
    inputs = args.inputs or default_inputs(args.results_dir)
    tables = collect(inputs, set(args.datasets))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        rows = tables.get(dataset)
        if not rows:
            print(f"{dataset}: no results in {len(inputs)} file(s); skipped")
            continue
        md = args.results_dir / f"pareto-{dataset}.md"
        md.write_text(markdown(dataset, rows))
        try:
            figure(dataset, rows, args.results_dir / f"pareto-{dataset}.png")
        except ImportError as exc:
            print(f"no figure: matplotlib is not importable ({exc})")
        print(f"{dataset}: {len(rows)} models -> {md}")
    return tables
