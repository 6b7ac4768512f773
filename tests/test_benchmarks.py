"""The benchmark harness runs end to end on a tiny configuration.

This checks that the suite works (files written, models present, numbers
finite), not how fast anything is: speed and memory are benchmarks' business.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import _data, _report, run  # noqa: E402
from benchmarks._models import MODELS, resolve  # noqa: E402

MODELS_RUN = ["base", "tree-hard", "ctrl-epochs", "ctrl-ensemble", "logreg"]


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_quick_run_end_to_end(tmp_path):
    """One tiny --quick run (a single test, so pytest-xdist runs it once)."""
    out = tmp_path
    argv = [
        "--quick",
        "--datasets",
        "digits",
        "--models",
        ",".join(MODELS_RUN),
        "--max-rows",
        "150",
        "--seeds",
        "2",
        "--epochs",
        "3",
        "--expert-epochs",
        "1",
        "--n-clusters-grid",
        "2",
        "--max-depth",
        "1",
        "--scaling-rows",
        "60",
        "--scaling-factors",
        "1,2",
        "--name",
        "tiny",
        "--results-dir",
        str(out),
        "--out",
        str(out / "json" / "tiny.json"),
    ]
    result = run.main(argv)

    # -- the three files, with the expected models ---------------------------
    md = (out / "tiny.md").read_text()
    data = json.loads((out / "json" / "tiny.json").read_text())
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for model in MODELS_RUN:
        assert f"`{model}`" in md
        assert model in data["summary"]["digits"], model
    assert "## Is the gain from the hierarchy? (issues 7 and 12)" in md
    assert "## Scaling" in md
    assert data["meta"]["config"]["max_epochs"] == 3
    assert data["meta"]["machine"]["cpu_count"] >= 1
    assert data["meta"]["command"].startswith("python -m benchmarks.run --quick")

    # -- finite numbers -----------------------------------------------------------
    runs = [r for r in data["runs"] if r["dataset"] == "digits"]
    assert {r["seed"] for r in runs} == {0, 1}
    for r in runs:
        assert r["error"] is None, r
        for key in (
            "accuracy",
            "fit_s",
            "predict_rows_per_s",
            "fit_mem_mb",
            "peak_rss_mb",
            "fit_time_ratio",
            "peak_rss_ratio",
        ):
            assert _finite(r[key]), (r["model"], key, r[key])
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["peak_rss_mb"] > 0 and r["fit_s"] > 0
    summary = data["summary"]["digits"]
    for model in MODELS_RUN:
        s = summary[model]
        assert s["n_seeds"] == 2
        assert _finite(s["accuracy_mean"]) and _finite(s["accuracy_std"])
        assert _finite(s["fit_time_ratio_mean"])
    assert summary["base"]["fit_time_ratio_mean"] == pytest.approx(1.0)

    # -- the controls are sized from the tree fitted on the same split -------
    by = {(r["model"], r["seed"]): r for r in data["runs"]}
    for seed in (0, 1):
        tree = by[("tree-hard", seed)]["info"]
        ens = by[("ctrl-ensemble", seed)]["info"]
        assert ens["n_estimators"] == tree["n_leaves_"]
        assert ens["finetune_epochs_"] == tree["expert_max_epochs_"]
        assert (
            by[("ctrl-epochs", seed)]["info"]["max_path_epochs_"]
            == tree["max_path_epochs_"]
        )
    row = data["issue7"]["digits"]
    assert row["better_control"] in ("ctrl-epochs", "ctrl-ensemble")
    gain = row["tree-hard"]["gain_over_better_control"]
    assert _finite(gain["gain_mean"]) and gain["n"] == 2
    assert row["tree-hard"]["beats_both_beyond_spread"] in (True, False)

    # -- scaling ----------------------------------------------------------------------
    sc = result["scaling"]
    assert [p["n_train"] for p in sc["points"]] == [60, 120]
    assert all(
        _finite(p["tree_fit_s"]) and _finite(p["base_fit_s"]) for p in sc["points"]
    )
    assert _finite(sc["exponents"]["tree_fit_s"])


def test_missing_data_folder_is_a_message_not_a_traceback(tmp_path, capsys):
    result = run.main(
        [
            "--datasets",
            "segment",
            "--data-dir",
            str(tmp_path / "absent"),
            "--models",
            "logreg",
            "--no-scaling",
            "--results-dir",
            str(tmp_path),
            "--name",
            "absent",
        ]
    )
    assert "segment" in result["skipped_datasets"]
    assert "absent" in capsys.readouterr().out
    assert (tmp_path / "absent.md").exists()


def test_growth_exponent():
    n = np.array([100, 200, 400, 800])
    assert _report.growth_exponent(n, 3.0 * n) == pytest.approx(1.0)
    assert _report.growth_exponent(n, 0.5 * n**2) == pytest.approx(2.0)
    assert _report.growth_exponent(n[:1], n[:1]) is None


def test_issue7_verdict():
    runs = []
    for seed, (tree, c1, c2) in enumerate(
        [(0.9, 0.8, 0.85), (0.92, 0.8, 0.84), (0.91, 0.81, 0.86)]
    ):
        for model, acc in (
            ("tree-hard", tree),
            ("ctrl-epochs", c1),
            ("ctrl-ensemble", c2),
            ("base", 0.7),
        ):
            runs.append(
                {
                    "dataset": "d",
                    "seed": seed,
                    "model": model,
                    "accuracy": acc,
                    "error": None,
                }
            )
    row = _report.issue7(runs)["d"]
    assert row["better_control"] == "ctrl-ensemble"
    gain = row["tree-hard"]["gain_over_better_control"]
    assert gain["gain_mean"] == pytest.approx(0.06)
    assert row["tree-hard"]["beats_both_beyond_spread"] is True
    # a gain smaller than its spread over seeds is not a win
    runs[0]["accuracy"] = 0.80
    row = _report.issue7(runs)["d"]
    assert row["tree-hard"]["beats_both_beyond_spread"] is False


def test_load_csv_with_strings_categories_and_missing(tmp_path):
    path = tmp_path / "toy.csv"
    path.write_text(
        "size,colour,label\n"
        "1.5,red,yes\n"
        "2.0,blue,no\n"
        ",red,yes\n"
        "3.5,green,\n"
    )
    data = _data.load_csv(path, "label")
    assert data.X.shape == (3, 3)  # size + 2 one-hot colours; unlabelled row dropped
    assert list(data.y) == ["yes", "no", "yes"]
    assert data.has_missing
    with pytest.raises(_data.DataUnavailable, match="not in"):
        _data.load_csv(path, "nope")


def test_load_csv_header_one_name_short(tmp_path):
    """optdigits.csv's header names 64 of its 65 columns; the label is last."""
    path = tmp_path / "short.csv"
    path.write_text("b,class\n1,2,0\n3,4,1\n5,6,1\n")
    data = _data.load_csv(path, "class")
    assert data.X.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert data.y.tolist() == [0, 1, 1]
    assert any("header" in note for note in data.notes)


def test_registry_resolves_dependencies():
    specs, added = resolve(["ctrl-ensemble"])
    names = [s.name for s in specs]
    assert names.index("tree-hard") < names.index("ctrl-ensemble")
    assert "base" in names and set(added) == {"base", "tree-hard"}
    assert {"logreg", "hgb", "rf", "datalets", "nt-hmoe"} <= set(MODELS)


def _fake_large_files(folder, rng):
    folder.mkdir()
    np.savez(
        folder / "fashion_mnist.npz",
        X_train=rng.integers(0, 256, size=(120, 784), dtype=np.uint8),
        y_train=np.arange(120) % 10,
        X_test=rng.integers(0, 256, size=(40, 784), dtype=np.uint8),
        y_test=np.arange(40) % 10,
    )
    np.savez(
        folder / "covtype.npz",
        X=rng.normal(size=(140, 54)).astype(np.float32),
        y=np.arange(140) % 7,
    )


def test_large_tier_loaders_official_split_and_scaling(tmp_path):
    _fake_large_files(tmp_path / "data", np.random.default_rng(0))
    fm = _data.load("fashion-mnist", tmp_path / "data")
    assert fm.X.shape == (120, 784) and fm.test[0].shape == (40, 784)
    assert fm.X.dtype == np.float32 and 0.0 <= fm.X.min() and fm.X.max() <= 1.0
    assert _data.subsample(fm, 50).test is fm.test  # the test part is kept whole
    cov = _data.load("covtype", tmp_path / "data")
    assert cov.X.shape == (140, 54) and cov.test is None
    assert {"fashion-mnist", "covtype"} == {
        n for n, spec in _data.DATASETS.items() if spec.large
    }


def test_large_tier_absent_files_are_skipped_with_a_message(tmp_path, capsys):
    result = run.main(
        [
            "--tier",
            "large",
            "--data-dir",
            str(tmp_path / "absent"),
            "--results-dir",
            str(tmp_path),
            "--name",
            "large-absent",
        ]
    )
    out = capsys.readouterr().out
    assert set(result["skipped_datasets"]) == {"fashion-mnist", "covtype"}
    assert "scale tier" in out and "absent" in out
    assert result["runs"] == []


def test_large_tier_runs_on_an_official_split(tmp_path):
    """Tiny stand-ins for the large files: the official test part is used
    for every seed and ctrl-wide is sized from the fitted tree."""
    _fake_large_files(tmp_path / "data", np.random.default_rng(1))
    result = run.main(
        [
            "--tier",
            "large",
            "--datasets",
            "fashion-mnist",
            "--models",
            "base,tree-hard,ctrl-wide",
            "--epochs",
            "2",
            "--expert-epochs",
            "1",
            "--max-depth",
            "1",
            "--n-clusters-grid",
            "2",
            "--in-process",
            "--data-dir",
            str(tmp_path / "data"),
            "--results-dir",
            str(tmp_path),
            "--name",
            "large-tiny",
        ]
    )
    assert result["datasets"]["fashion-mnist"]["n_rows"] == 160
    runs = {(r["model"], r["seed"]): r for r in result["runs"]}
    assert {m for m, _ in runs} == {"base", "tree-hard", "ctrl-wide"}
    assert all(r["error"] is None for r in runs.values())
    assert "ctrl-wide" in result["issue7"]["fashion-mnist"]["controls"]


def test_wide_control_matches_the_leaves_parameters():
    from benchmarks._width import default_module, n_parameters, scaled_module

    # The default module may size itself from the rows (data_defaults).
    X = np.random.RandomState(0).rand(3000, 40).astype(np.float32)
    cls, kwargs = default_module(40, 10, X)
    base = n_parameters(cls(40, 10, **kwargs))
    for n_leaves in (1, 4, 15):
        name, value, n, base_n = scaled_module(cls, kwargs, 40, 10, n_leaves)
        assert base_n == base
        assert n == n_parameters(cls(40, 10, **{**kwargs, name: value}))
        assert n == pytest.approx(n_leaves * base, rel=0.02)


def test_width_sweep_scales_the_default_embedders_width():
    from benchmarks._models import Skip
    from benchmarks._width import scale_width, width_parameter

    assert scale_width((128, 64), 0.5) == (64, 32)
    assert scale_width(3, 0.01) == 1
    assert width_parameter({"dropout": 0.1, "hidden_dims": (8, 4)}) == "hidden_dims"
    assert width_parameter({"d_block": 16, "channels": (2,)}) == "d_block"
    with pytest.raises(Skip, match="no width argument"):
        width_parameter({"dropout": 0.1, "hidden_dims": None, "flag": True})


def test_width_models_build_the_default_embedder_scaled():
    from benchmarks._models import Config, Context
    from benchmarks._width import n_parameters

    X = np.random.RandomState(0).rand(50, 12).astype(np.float32)
    y = np.arange(50) % 3
    ctx = Context(seed=0, n_features=12, n_classes=3, n_train=50,
                  config=Config(max_epochs=1), X_train=X)
    sizes = {}
    for name in ("base", "width-0.5x", "width-4x"):
        est = MODELS[name].build(ctx).fit(X, y)
        sizes[name] = n_parameters(est.embedder_.module_)
    assert sizes["width-0.5x"] == pytest.approx(sizes["base"] / 2, rel=0.1)
    assert sizes["width-4x"] == pytest.approx(sizes["base"] * 4, rel=0.05)


def test_pareto_front_on_a_tiny_table():
    from benchmarks._pareto import pareto_front

    rows = [
        {"model": "a", "acc": 0.90, "speed": 10.0, "fit": 100.0},
        {"model": "b", "acc": 0.85, "speed": 1000.0, "fit": 5.0},
        {"model": "c", "acc": 0.80, "speed": 500.0, "fit": 50.0},  # b beats it
        {"model": "d", "acc": 0.90, "speed": 10.0, "fit": 100.0},  # tie with a
        {"model": "e", "acc": 0.95, "speed": float("nan"), "fit": 1.0},
        {"model": "f", "acc": 0.70, "speed": 2000.0},  # no fit figure
    ]
    speed = pareto_front(rows, [("acc", "max"), ("speed", "max")])
    assert speed == [True, True, False, True, False, True]
    fit = pareto_front(rows, [("acc", "max"), ("fit", "min")])
    # e (0.95 in 1 s) dominates every row with a fit figure.
    assert fit == [False, False, False, False, True, False]
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pareto_front(rows, [("acc", "up")])


def _result_file(path, date, runs, groups, **config):
    """A result file of the suite: ``runs`` maps (data set, model) to one
    (accuracy, fit s, predict rows/s) per seed."""
    path.write_text(json.dumps({
        "meta": {"date": date, "config": {"threads": 1, "max_rows": None, **config},
                 "machine": {"loadavg": "1.0"}},
        "models": {m: {"group": g} for m, g in groups.items()},
        "runs": [
            {"dataset": d, "model": m, "seed": seed, "accuracy": acc, "fit_s": fit,
             "predict_rows_per_s": speed, "error": None}
            for (d, m), figures in runs.items()
            for seed, (acc, fit, speed) in figures.items()
        ] + [{"dataset": "toy", "model": "broken", "seed": 0, "error": "boom"}],
    }))
    return path


def test_pareto_report_from_result_files(tmp_path):
    from benchmarks import _pareto

    old = _result_file(tmp_path / "old.json", "2026-01-01 10:00 UTC", {
        ("toy", "base"): {0: (0.80, 10, 1e5), 1: (0.82, 12, 1e5)},
        ("toy", "tree-hard"): {0: (0.84, 30, 5e4), 1: (0.84, 30, 5e4)},
        ("toy", "lgbm"): {0: (0.83, 3, 4e4)}},
        {"base": "hemoe_sk", "tree-hard": "hemoe_sk", "lgbm": "anchor"})
    new = _result_file(tmp_path / "new.json", "2026-02-01 10:00 UTC", {
        ("toy", "lgbm"): {0: (0.85, 2, 3e4), 1: (0.87, 4, 3e4)},
        ("toy", "width-2x"): {0: (0.86, 20, 6e4)},
        ("other", "lgbm"): {0: (0.5, 1, 1)}},
        {"lgbm": "anchor", "width-2x": "width"})
    # width-2x's second seed measured in a later run: the seeds add up.
    later = _result_file(tmp_path / "later.json", "2026-02-02 10:00 UTC", {
        ("toy", "width-2x"): {1: (0.88, 22, 6e4)}}, {"width-2x": "width"})
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a suite file: ignored
    sub = _result_file(tmp_path / "sub.json", "2026-03-01 10:00 UTC", {
        ("toy", "tree-hard"): {0: (0.99, 1, 1e9)}}, {"tree-hard": "hemoe_sk"},
        max_rows=500)  # a subsample: not the full data set's figures
    tables = _pareto.main(["--inputs", str(old), str(new), str(later),
                           str(tmp_path / "notes.json"), str(sub), "--datasets", "toy",
                           "--results-dir", str(tmp_path)])
    rows = {r["model"]: r for r in tables["toy"]}
    assert set(rows) == {"base", "tree-hard", "lgbm", "width-2x"}
    # lgbm's seed 0 from the newer file, its seed 1 only there.
    assert rows["lgbm"]["accuracy"] == pytest.approx(0.86)
    assert rows["lgbm"]["fit_s"] == pytest.approx(3) and rows["lgbm"]["n_seeds"] == 2
    assert rows["lgbm"]["source"] == "new.json"
    assert rows["width-2x"]["accuracy"] == pytest.approx(0.87)
    assert rows["width-2x"]["source"] == "later.json, new.json"
    assert rows["base"]["accuracy_std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    # width-2x is more accurate and faster than the tree: the tree does not pay.
    assert not rows["tree-hard"]["front_predict"]
    assert rows["width-2x"]["front_predict"] and rows["base"]["front_predict"]
    assert rows["lgbm"]["front_fit"] and not rows["tree-hard"]["front_fit"]
    assert _pareto.dominators(tables["toy"], "tree-hard") == ["width-2x"]
    assert _pareto.dominators(tables["toy"], "tree-soft") is None
    md = (tmp_path / "pareto-toy.md").read_text()
    assert "| `width-2x` | width | 0.8700 |" in md
    assert "`tree-hard`: does not pay here: `width-2x` predicts at least" in md
    assert "`sub.json`" not in md and "`later.json`: 2026-02-02 10:00 UTC" in md
    assert (tmp_path / "pareto-toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "pareto-other.md").exists()


def test_anchors_are_registered_and_skip_without_their_package():
    import importlib.util

    from benchmarks._anchors import square_image_shape
    from benchmarks._models import Config, Context, Skip

    for name in ("lgbm", "lgbm-1000", "hgb-1000", "realmlp-td", "tabm-d", "conv"):
        assert name in MODELS and name in run.PRESETS["large"]["models"]
    ctx = Context(seed=3, n_features=54, n_classes=7, n_train=100,
                  config=Config(threads=1))
    for name, module in (("lgbm-1000", "lightgbm"), ("realmlp-td", "pytabkit")):
        if importlib.util.find_spec(module) is None:
            with pytest.raises(Skip, match="bench extra"):
                MODELS[name].build(ctx)
        else:
            est = MODELS[name].build(ctx)
            params = est.get_params()
            assert params["random_state"] == 3
            assert params.get("n_jobs", params.get("n_threads")) == 1
    hgb = MODELS["hgb-1000"].build(ctx)
    assert (hgb.max_iter, hgb.max_leaf_nodes, hgb.early_stopping) == (1000, 127, True)
    assert square_image_shape(784) == (1, 28, 28)
    with pytest.raises(Skip, match="square"):
        MODELS["conv"].build(ctx)


@pytest.mark.parametrize(
    "name, option",
    [
        ("dec", "--no-reuse"),
        ("moe", "--quick"),
        ("regress", "--large"),
        ("routers", "--no-clustering"),
        ("parallel", "--repeats"),
        ("persistence", "--old-commit"),
        ("pareto", "--inputs"),
    ],
)
def test_subcommand_help_exits_zero(name, option, capsys):
    """``python -m benchmarks.run NAME --help`` reaches that benchmark's parser."""
    with pytest.raises(SystemExit) as exc:
        run.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m benchmarks.run {name}" in out
    assert option in out


def test_regress_summary_ratios_and_table():
    from benchmarks._regress import markdown, piecewise, summarize

    X, y = piecewise(n=200, seed=0)
    assert X.shape == (200, 6) and np.isfinite(y).all() and y.std() > 1
    rows = [
        dict(data="d", seed=s, model=m, r2=r2, fit_s=t, leaves=leaves)
        for s in (0, 1)
        for m, r2, t, leaves in (
            ("base (max_depth=0)", 0.5 + s / 10, 2.0, 1),
            ("tree (soft)", 0.6 + s / 10, 6.0, 3),
            ("HGB", 0.7, 1.0, None),
        )
    ]
    table = {t["model"]: t for t in summarize(rows)}
    assert table["tree (soft)"]["fit_ratio"] == pytest.approx(3.0)
    assert table["tree (soft)"]["r2_mean"] == pytest.approx(0.65)
    assert table["tree (soft)"]["r2_sd"] == pytest.approx(0.05)
    assert table["HGB"]["leaves"] is None and table["tree (soft)"]["leaves"] == 3
    text = markdown(list(table.values()), dict(
        command="c", date="d", seeds=[0, 1], torch="t", threads=1, duration_s=1.0
    ))
    assert "| d | tree (soft) | 0.6500 ± 0.0500 | 3.00 | 3.0 |" in text


def test_clustering_accuracy_matches_best_relabelling():
    # Clusters are a permutation of the classes but one sample: 5/6.
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 0]
    assert _report.clustering_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
