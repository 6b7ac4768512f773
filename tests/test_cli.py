"""The hemoe-sk command line."""

import csv

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hemoe_sk.cli import main, read_csv


@pytest.fixture
def iris_csv(tmp_path):
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    path = tmp_path / "iris.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sepal_l", "sepal_w", "petal_l", "petal_w", "species"])
        for row, label in zip(X, names):
            w.writerow([*row, label])
    return path


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "fit", "predict"):
        assert command in out


def test_fit_then_predict(iris_csv, tmp_path, capsys):
    model = tmp_path / "model.joblib"
    assert main([
        "fit", str(iris_csv), "--target", "species", "--out", str(model),
        "--max-depth", "1", "--max-epochs", "30", "--verbose", "0",
    ]) == 0
    out = capsys.readouterr().out
    assert "node 0" in out and "training accuracy" in out
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(model), str(iris_csv), "--out", str(preds), "--proba"]) == 0
    rows = list(csv.reader(open(preds)))
    assert rows[0] == ["prediction", "proba_setosa", "proba_versicolor", "proba_virginica"]
    assert len(rows) == 151
    truth = [r[-1] for r in list(csv.reader(open(iris_csv)))[1:]]
    accuracy = np.mean([r[0] == t for r, t in zip(rows[1:], truth)])
    assert accuracy >= 0.8


def test_errors_are_one_line(iris_csv, tmp_path, capsys):
    assert main(["fit", str(iris_csv), "--target", "nope"]) == 2
    assert "no column named 'nope'" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "missing.csv"), "--target", "y"]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,x,0\n2,3,1\n")
    assert main(["fit", str(bad), "--target", "y"]) == 2
    assert "column 'b' is not numeric" in capsys.readouterr().err
    assert main(["predict", str(iris_csv), str(iris_csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hemoe-sk: error:") and err.count("\n") == 1


def test_read_csv_labels(iris_csv):
    X, y, names = read_csv(iris_csv, target="species")
    assert X.shape == (150, 4) and names[0] == "sepal_l"
    assert y.dtype == object
