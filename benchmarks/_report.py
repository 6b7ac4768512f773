"""Aggregation and reports: summary statistics, Markdown, JSON and a figure."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._models import BASELINE

#: Tree variants and the compute-matched controls (issues 7 and 12).
TREES = ("tree-hard", "tree-soft")  # the default trees; any model named tree* is reported
CONTROLS = ("ctrl-epochs", "ctrl-ensemble", "ctrl-wide")


# -- small numeric helpers ------------------------------------------------------


def clustering_accuracy(y_true, y_pred):
    """Accuracy of the best one-to-one matching of clusters to classes."""
    _, y_true = np.unique(y_true, return_inverse=True)
    _, y_pred = np.unique(y_pred, return_inverse=True)
    k = max(y_true.max(), y_pred.max()) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (y_pred, y_true), 1)
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(y_true)


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _std(values):
    """Sample standard deviation (ddof=1); None with fewer than 2 values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _ratio(a, b, floor=0.0):
    if (
        a is None
        or b is None
        or not math.isfinite(a)
        or not math.isfinite(b)
        or b <= floor
    ):
        return None
    return a / b


def clean(obj):
    """Make ``obj`` JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# -- aggregation ----------------------------------------------------------------

#: Memory deltas below this (MiB) are too small to divide by.
_MEM_FLOOR_MB = 1.0


def add_ratios(runs):
    """Per run, its time and memory figures divided by the baseline's on the
    same data set and seed (in place)."""
    base = {
        (r["dataset"], r["seed"]): r
        for r in runs
        if r["model"] == BASELINE and r.get("error") is None
    }
    for r in runs:
        b = base.get((r["dataset"], r["seed"]))
        if r.get("error") is not None or b is None:
            continue
        r["fit_time_ratio"] = _ratio(r["fit_s"], b["fit_s"])
        r["predict_speed_ratio"] = _ratio(
            r["predict_rows_per_s"], b["predict_rows_per_s"]
        )
        r["fit_mem_ratio"] = _ratio(r["fit_mem_mb"], b["fit_mem_mb"], _MEM_FLOOR_MB)
        r["peak_rss_ratio"] = _ratio(r["peak_rss_mb"], b["peak_rss_mb"])
    return runs


_FIGURES = (
    "accuracy",
    "fit_s",
    "predict_rows_per_s",
    "fit_mem_mb",
    "peak_rss_mb",
    "fit_time_ratio",
    "predict_speed_ratio",
    "fit_mem_ratio",
    "peak_rss_ratio",
)


def summarize(runs):
    """``{dataset: {model: {figure_mean, figure_std, n_seeds, info}}}``."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.get("error") is None:
            groups[r["dataset"]][r["model"]].append(r)
    summary = {}
    for dataset, models in groups.items():
        summary[dataset] = {}
        for model, rs in models.items():
            s = {"n_seeds": len(rs)}
            for fig in _FIGURES:
                vals = [r.get(fig) for r in rs]
                s[f"{fig}_mean"] = _mean(vals)
                s[f"{fig}_std"] = _std(vals)
            info = defaultdict(list)
            for r in rs:
                for k, v in (r.get("info") or {}).items():
                    if isinstance(v, (int, float)):
                        info[k].append(v)
            s["info"] = {k: _mean(v) for k, v in info.items()}
            owners = {r.get("shared_fit_with") for r in rs} - {None}
            if owners:
                s["shared_fit_with"] = sorted(owners)
            summary[dataset][model] = s
    return summary


def _present(names, runs, prefix=None):
    """``names`` (or, with ``prefix``, every model so named) that ran."""
    ran = [r["model"] for r in runs if r.get("error") is None]
    if prefix is not None:
        names = [m for m in dict.fromkeys(ran) if m.startswith(prefix)]
    return tuple(m for m in names if m in ran)


def issue7(runs):
    """Trees against the compute-matched controls, per data set.

    See docs/benchmarks.rst. The trees are every model named ``tree*``; the
    controls those of :data:`CONTROLS` that ran. For each tree: the per-seed
    difference of its accuracy to each control; the "better control" is the
    one with the higher mean accuracy; the tree "beats every control beyond
    seed spread" when, for each control that ran, the mean per-seed gain is
    positive and larger than its standard deviation over seeds.
    """
    acc = defaultdict(dict)
    for r in runs:
        if r.get("error") is None:
            acc[(r["dataset"], r["model"])][r["seed"]] = r["accuracy"]
    datasets = sorted(
        {r["dataset"] for r in runs}, key=[r["dataset"] for r in runs].index
    )
    trees = _present(None, runs, prefix="tree")
    out = {}
    for d in datasets:
        row = {"accuracy": {}}
        for m in (BASELINE, *CONTROLS, *trees):
            vals = list(acc[(d, m)].values())
            if vals:
                row["accuracy"][m] = {
                    "mean": _mean(vals),
                    "std": _std(vals),
                    "n": len(vals),
                }
        controls = [c for c in CONTROLS if c in row["accuracy"]]
        if not controls:
            continue
        better = max(controls, key=lambda c: row["accuracy"][c]["mean"])
        row["better_control"] = better
        row["controls"] = controls
        for t in trees:
            if t not in row["accuracy"]:
                continue
            res = {}
            beats = []
            for c in (BASELINE, *controls):
                seeds = sorted(set(acc[(d, t)]) & set(acc[(d, c)]))
                diffs = [acc[(d, t)][s] - acc[(d, c)][s] for s in seeds]
                if not diffs:
                    continue
                m, sd = _mean(diffs), _std(diffs)
                res[c] = {"gain_mean": m, "gain_std": sd, "n": len(diffs)}
                if c != BASELINE:
                    beats.append(None if sd is None else bool(m > 0 and m > sd))
            res["gain_over_better_control"] = res.get(better)
            if len(beats) == len(controls) and all(b is not None for b in beats):
                res["beats_both_beyond_spread"] = all(beats)
            else:
                res["beats_both_beyond_spread"] = None
            row[t] = res
        out[d] = row
    return out


def growth_exponent(sizes, values):
    """Slope of log(value) against log(size): ~1 is linear growth."""
    pts = [(n, v) for n, v in zip(sizes, values) if v is not None and v > 0]
    if len(pts) < 2:
        return None
    n, v = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(n, v, 1)[0])


# -- formatting -------------------------------------------------------------------


def _f(x):
    if x is None:
        return "–"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.01 or a == 0:
        return f"{x:.2f}"
    return f"{x:.2g}"


def _pm(mean, std, digits=3):
    if mean is None:
        return "–"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _signed(mean, std, digits=3):
    if mean is None:
        return "–"
    s = f"{mean:+.{digits}f}"
    return s if std is None else f"{s} ± {std:.{digits}f}"


def _leaves(n):
    return "–" if n is None else str(n)


def _x(r):
    return "–" if r is None else f"{r:.2f}×"


def _table(header, rows):
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(v, n):
    if v is None:
        return f"n/a ({n} seed{'s' if n != 1 else ''})" if n < 2 else "n/a"
    return "**yes**" if v else "no"


def _issue7_section(result):
    """The issue-7 table: base, controls and trees, with the trees' gains."""
    out = ["## Is the gain from the hierarchy? (issues 7 and 12)", ""]
    out += [
        "Accuracy (mean ± std over seeds) of the base network, the controls "
        "that ran and the trees; a tree's *gain* is its accuracy minus the "
        "better control's, as mean ± std of the per-seed differences. *Beats "
        "all* is yes when, for each control, the mean per-seed gain is positive "
        "and larger than its standard deviation.",
        "",
    ]
    rows = []
    trees = [m for m in next(iter(result["issue7"].values()), {}).get("accuracy", {})
             if m.startswith("tree")]
    controls = [c for c in CONTROLS if any(
        c in row["accuracy"] for row in result["issue7"].values())]
    for d, row in result["issue7"].items():
        a = row["accuracy"]
        cells = [d]
        for m in (BASELINE, *controls, *trees):
            cells.append(_pm(a[m]["mean"], a[m]["std"]) if m in a else "–")
        cells.append(f"`{row.get('better_control', '–')}`")
        for t in trees:
            g = (row.get(t) or {}).get("gain_over_better_control")
            cells.append(_signed(g["gain_mean"], g["gain_std"]) if g else "–")
            n = g["n"] if g else 0
            cells.append(
                _verdict((row.get(t) or {}).get("beats_both_beyond_spread"), n)
            )
        rows.append(cells)
    header = ["data set", BASELINE, *controls, *trees, "better control"]
    for t in trees:
        header += [f"{t} gain", f"{t} beats all"]
    out.append(_table(header, rows))
    out.append("")

    return out


def markdown(result):
    meta = result["meta"]
    cfg = meta["config"]
    out = [f"# hemoe_sk benchmarks: {meta['name']}", ""]
    out += [
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']['platform']}, {meta['machine']['cpu_count']} "
        f"CPU cores ({meta['machine']['processor'] or 'unknown processor'}), "
        f"Python {meta['machine']['python']}, torch {meta['versions'].get('torch')}, "
        f"scikit-learn {meta['versions'].get('sklearn')}, "
        f"skorch {meta['versions'].get('skorch')}",
        f"- duration: {meta['duration_s']:.0f} s",
        f"- load average at start: {meta['machine'].get('loadavg', '–')} "
        "(the machine may be shared: read times as ratios)",
        f"- seeds: {cfg['seeds']} (each seed is a new stratified split, "
        f"{cfg['test_size']:.0%} test, unless a data set notes an official split; "
        "models are seeded with it too)",
        *(
            [f"- every tree (not base, not the controls) with: {cfg['tree_params']}"]
            if cfg.get("tree_params")
            else []
        ),
        f"- neural budget: max_epochs={cfg['max_epochs']}, expert_max_epochs="
        f"{cfg['expert_max_epochs']} (resolved {cfg['expert_epochs']}), "
        f"max_depth={cfg['max_depth']}, "
        f"n_clusters_grid={tuple(cfg['n_clusters_grid'])}, "
        f"batch_size={cfg['batch_size']}, lr={cfg['lr']}; peers and flat MoE get "
        f"{cfg['path_epochs']} epochs (the tree's nominal root-to-leaf path)",
        f"- each fit in a fresh child process limited to {cfg['threads']} "
        "thread(s); features scaled by StandardScaler (MinMaxScaler for pixel "
        "data) in a Pipeline, for every model",
    ]
    if cfg.get("max_rows"):
        out.append(
            f"- data sets subsampled (stratified) to at most {cfg['max_rows']} rows"
        )
    if meta.get("quick"):
        out.append(
            "- **--quick**: tiny budgets, few data sets, models and seeds. It shows "
            "the harness works; its accuracies say nothing about the method."
        )
    out += [
        "",
        "Ratios (×) divide a model's figure by the base network's (`base`, "
        "`max_depth=0`) on the same split in the same run; they are averaged over "
        "seeds. *fit MiB* is the memory the fit added at its peak "
        "(`ru_maxrss` after fit minus resident memory before), *peak RSS* the "
        "whole child process's peak. Predict speed is rows per second over the "
        "test set.",
        "",
    ]

    # models
    out += ["## Models", ""]
    out.append(
        _table(
            ["model", "group", "what it is"],
            [
                [f"`{m}`", v["group"], v["description"]]
                for m, v in result["models"].items()
            ],
        )
    )
    if result["skipped"]:
        out += ["", "Skipped:", ""]
        out += [f"- `{m}`: {why}" for m, why in result["skipped"].items()]
    out.append("")

    # issue 7 / 12
    if result["issue7"]:
        out += _issue7_section(result)

    # per data set
    out += ["## Results per data set", ""]
    for d, models in result["summary"].items():
        info = result["datasets"][d]
        out += [
            f"### {d}",
            "",
            f"{info['description']}. {info['n_rows']:,} rows, {info['n_features']} "
            f"features, {info['n_classes']} classes; scaling: {info['scaling']}.",
            "",
        ]
        if info.get("notes"):
            out += [f"Note: {'; '.join(info['notes'])}.", ""]
        rows = []
        for m, s in sorted(
            models.items(), key=lambda kv: -(kv[1]["accuracy_mean"] or 0)
        ):
            notes = []
            inf = s.get("info", {})
            if "n_leaves_" in inf and (m.startswith("tree") or inf.get("depth_", 0) > 0):
                notes.append(
                    f"leaves {inf['n_leaves_']:.3g}, depth {inf.get('depth_', 0):.2g}"
                )
            if m == "ctrl-epochs" and "max_path_epochs_" in inf:
                notes.append(f"{inf['max_path_epochs_']:.3g} epochs")
            if "n_estimators" in inf:
                n = inf["n_estimators"]
                notes.append(f"{n:.3g} member{'' if n == 1 else 's'}")
            if s.get("shared_fit_with"):
                notes.append(f"fit shared with `{'`, `'.join(s['shared_fit_with'])}`")
            rows.append(
                [
                    f"`{m}`",
                    _pm(s["accuracy_mean"], s["accuracy_std"]),
                    _f(s["fit_s_mean"]),
                    _x(s["fit_time_ratio_mean"]),
                    _f(s["predict_rows_per_s_mean"]),
                    _x(s["predict_speed_ratio_mean"]),
                    _f(s["fit_mem_mb_mean"]),
                    _x(s["fit_mem_ratio_mean"]),
                    _f(s["peak_rss_mb_mean"]),
                    _x(s["peak_rss_ratio_mean"]),
                    s["n_seeds"],
                    "; ".join(notes),
                ]
            )
        out.append(
            _table(
                [
                    "model",
                    "accuracy",
                    "fit s",
                    "fit ×base",
                    "predict rows/s",
                    "predict ×base",
                    "fit MiB",
                    "fit MiB ×base",
                    "peak RSS MiB",
                    "peak RSS ×base",
                    "seeds",
                    "notes",
                ],
                rows,
            )
        )
        errs = [r for r in result["runs"] if r["dataset"] == d and r.get("error")]
        if errs:
            out += ["", "Failures:", ""]
            out += [f"- `{r['model']}` seed {r['seed']}: {r['error']}" for r in errs]
        out.append("")
    for d, why in result.get("skipped_datasets", {}).items():
        out += [f"- data set `{d}` skipped: {why}"]
    if result.get("skipped_datasets"):
        out.append("")

    # scaling
    sc = result.get("scaling")
    if sc:
        out += ["## Scaling", ""]
        out += [
            f"{sc['description']}. Fit time and memory of the default classifier "
            "(`tree-hard`, the run's budget) and of the base network, at "
            f"{', '.join(str(p['factor']) + '×' for p in sc['points'])} the rows. "
            "The growth exponent is the slope of log(figure) against log(rows): "
            "1 is linear.",
            "",
        ]
        rows = []
        for p in sc["points"]:
            rows.append(
                [
                    f"{p['factor']}×",
                    f"{p['n_train']:,}",
                    _f(p.get("tree_fit_s")),
                    _f(p.get("base_fit_s")),
                    _x(_ratio(p.get("tree_fit_s"), p.get("base_fit_s"))),
                    _f(p.get("tree_fit_mem_mb")),
                    _f(p.get("base_fit_mem_mb")),
                    _x(
                        _ratio(
                            p.get("tree_fit_mem_mb"),
                            p.get("base_fit_mem_mb"),
                            _MEM_FLOOR_MB,
                        )
                    ),
                    _f(p.get("tree_peak_rss_mb")),
                    _x(_ratio(p.get("tree_peak_rss_mb"), p.get("base_peak_rss_mb"))),
                    _leaves(p.get("tree_n_leaves")),
                ]
            )
        out.append(
            _table(
                [
                    "size",
                    "train rows",
                    "tree fit s",
                    "base fit s",
                    "time ×base",
                    "tree fit MiB",
                    "base fit MiB",
                    "fit MiB ×base",
                    "tree peak RSS MiB",
                    "peak RSS ×base",
                    "tree leaves",
                ],
                rows,
            )
        )
        e = sc["exponents"]
        out += [
            "",
            f"Growth exponent of fit time: tree {_f(e.get('tree_fit_s'))}, base "
            f"{_f(e.get('base_fit_s'))}; of fit memory: tree "
            f"{_f(e.get('tree_fit_mem_mb'))}, base {_f(e.get('base_fit_mem_mb'))}.",
            "",
        ]
        for err in sc.get("errors", []):
            out.append(f"- {err}")
    out += ["", f"Figure: `{meta['name']}.png` (accuracy against fit time).", ""]
    return "\n".join(out)


def write_json(result, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(clean(result), f, indent=1, allow_nan=False)


_COLOURS = {
    "hemoe_sk": "tab:blue",
    "control": "tab:orange",
    "sklearn": "tab:green",
    "peer": "tab:red",
}


def figure(result, path):
    """Accuracy against fit time, one panel per data set."""
    # The object API renders with Agg without touching pyplot's global backend.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    summary = result["summary"]
    n = max(1, len(summary))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.2 * cols, 4.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (d, models) in zip(axes.flat, summary.items()):
        ys = [
            s["accuracy_mean"]
            for s in models.values()
            if s["accuracy_mean"] is not None
        ]
        y_tol = 0.02 * ((max(ys) - min(ys)) if len(ys) > 1 else 1.0) or 0.01
        placed = []
        for m, s in sorted(models.items(), key=lambda kv: kv[1]["fit_s_mean"] or 0):
            x, y = s["fit_s_mean"], s["accuracy_mean"]
            if x is None or y is None or x <= 0:
                continue
            # stack the labels of points that (nearly) coincide
            stacked = sum(
                1
                for px, py in placed
                if abs(math.log10(px) - math.log10(x)) < 0.15 and abs(py - y) < y_tol
            )
            placed.append((x, y))
            group = result["models"].get(m, {}).get("group", "")
            ax.errorbar(
                x,
                y,
                xerr=s["fit_s_std"] or 0,
                yerr=s["accuracy_std"] or 0,
                fmt="o",
                color=_COLOURS.get(group, "tab:gray"),
                capsize=2,
            )
            ax.annotate(
                m,
                (x, y),
                fontsize=7,
                xytext=(3, 3 + 8 * stacked),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_title(d)
        ax.set_xlabel("fit time, s (log)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = [
        Line2D([], [], marker="o", ls="", color=c, label=g) for g, c in _COLOURS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(
        f"hemoe_sk benchmarks ({result['meta']['name']}): "
        "accuracy vs fit time, mean ± std over seeds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
