"""Data sets of the benchmark suite, as a registry.

Every loader returns a :class:`Data`: a float matrix, the labels and how the
features should be scaled. Nothing is downloaded: the data sets come with
scikit-learn, are generated, or are read from CSV files on disk (the
project's ``../shared/data`` folder, or any file given with ``--csv``).

Add a data set with one decorated function::

    @register_dataset("iris", "Fisher's iris, 150 rows, 3 classes")
    def _iris(data_dir):
        X, y = load_iris(return_X_y=True)
        return Data(X, y)
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, make_classification

#: Where the project's CSV files live: ``../shared/data`` next to the checkout.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_MISSING = {"", "na", "nan", "null", "none", "?"}


class DataUnavailable(RuntimeError):
    """A data set cannot be loaded here (e.g. its file is absent)."""


@dataclass
class Data:
    """A classification data set.

    ``scaling`` is ``"minmax"`` for pixel/count data (kept in [0, 1]) and
    ``"standard"`` otherwise.
    """

    X: np.ndarray
    y: np.ndarray
    scaling: str = "standard"
    source: str = ""
    notes: list = field(default_factory=list)
    #: ``(X_test, y_test)`` of an official split, used for every seed instead
    #: of a fresh stratified split (the seed then varies the models only).
    test: tuple | None = None

    @property
    def n_classes(self):
        return len(np.unique(self.y))

    @property
    def has_missing(self):
        return bool(np.isnan(self.X).any())


@dataclass
class DatasetSpec:
    name: str
    description: str
    loader: Callable
    quick: bool = False
    large: bool = False


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name, description, *, quick=False, large=False):
    """Decorator registering ``loader(data_dir) -> Data`` under ``name``.

    ``large`` data sets belong to the scale tier (``--tier large``).
    """

    def wrap(loader):
        DATASETS[name] = DatasetSpec(name, description, loader, quick, large)
        return loader

    return wrap


# -- scikit-learn's own ------------------------------------------------------


@register_dataset(
    "digits",
    "scikit-learn load_digits: 1,797 8x8 digit images, 64 pixel counts, 10 classes",
    quick=True,
)
def _digits(data_dir):
    X, y = load_digits(return_X_y=True)
    return Data(
        X.astype(np.float64), y, scaling="minmax", source="sklearn.datasets.load_digits"
    )


#: Coarse groups of digits by how they are drawn. Each coarse class hides 3-4
#: very different fine classes: the "few labels, many sub-classes" case on
#: real images.
DIGIT_GROUPS = {
    "loops (0,6,8,9)": (0, 6, 8, 9),
    "strokes (1,4,7)": (1, 4, 7),
    "curves (2,3,5)": (2, 3, 5),
}


@register_dataset(
    "digits-coarse3",
    "load_digits relabelled into 3 coarse groups: loops {0,6,8,9}, strokes {1,4,7}, "
    "curves {2,3,5} (each label hides 3-4 digits)",
)
def _digits_coarse(data_dir):
    X, fine = load_digits(return_X_y=True)
    y = np.empty(len(fine), dtype=object)
    for label, members in DIGIT_GROUPS.items():
        y[np.isin(fine, members)] = label
    return Data(
        X.astype(np.float64),
        y.astype(str),
        scaling="minmax",
        source="sklearn.datasets.load_digits, grouped",
    )


SUBCLASS_TASK = dict(
    n_samples=3000,
    n_features=20,
    n_informative=5,
    n_redundant=2,
    n_repeated=0,
    n_classes=3,
    n_clusters_per_class=4,
    class_sep=2.0,
    flip_y=0.01,
    random_state=0,
)


def make_subclass_task(n_samples=None, random_state=None):
    """The generated "few labels, many sub-classes" task.

    3 classes, each the union of 4 Gaussian clusters placed on the vertices of
    a hypercube in a 5-dimensional informative subspace, plus 2 redundant and
    13 noise features. No single linear boundary separates a class.
    """
    params = dict(SUBCLASS_TASK)
    if n_samples is not None:
        params["n_samples"] = int(n_samples)
    if random_state is not None:
        params["random_state"] = random_state
    X, y = make_classification(**params)
    return X, y


@register_dataset(
    "subclasses",
    "generated: make_classification, 3,000 rows, 20 features (5 informative), "
    "3 classes x 4 clusters per class",
    quick=True,
)
def _subclasses(data_dir):
    X, y = make_subclass_task()
    return Data(X, y, source=f"sklearn.datasets.make_classification({SUBCLASS_TASK})")


# -- the project's CSV files -------------------------------------------------


def load_csv(path, target=None):
    """Read a CSV file with a header into a :class:`Data`.

    ``target`` names the label column (default: ``class`` when present, else
    the last column). Numeric columns become floats (empty, ``NA``, ``?`` and
    the like become NaN, handled by an imputer in the pipelines); other
    columns are one-hot encoded. Rows without a label are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataUnavailable(f"CSV file not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataUnavailable(f"{path} has no data rows")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    notes = []
    if body and all(len(r) == len(header) + 1 for r in body):
        # Every row has one field more than the header names (optdigits.csv
        # is like this): align the names to the last fields, so the label
        # stays the last column, and name the first one.
        header = ["column_0", *header]
        notes.append(
            "the header names one column fewer than every row has: names were "
            "aligned to the last columns (the label stays last) and the first "
            "column named 'column_0'"
        )
    if target is None:
        target = "class" if "class" in header else header[-1]
    if target not in header:
        raise DataUnavailable(
            f"column {target!r} not in {path.name}; columns are {header}"
        )
    t = header.index(target)
    width = len(header)
    bad = [i + 2 for i, r in enumerate(body) if len(r) != width]
    if bad:
        raise DataUnavailable(
            f"{path.name}: rows {bad[:5]} do not have {width} fields like the header"
        )
    labels = np.array([r[t].strip() for r in body], dtype=object)
    keep = np.array([v.lower() not in _MISSING for v in labels])
    body = [r for r, k in zip(body, keep) if k]
    labels = labels[keep]
    columns = []
    for j, name in enumerate(header):
        if j == t:
            continue
        raw = [r[j].strip() for r in body]
        try:
            col = np.array([np.nan if v.lower() in _MISSING else float(v) for v in raw])
            columns.append(col[:, None])
        except ValueError:
            cats = sorted({v for v in raw if v.lower() not in _MISSING})
            onehot = np.array([[v == c for c in cats] for v in raw], dtype=float)
            columns.append(onehot)
            notes.append(f"column {name!r} one-hot encoded ({len(cats)} values)")
    X = np.hstack(columns)
    try:
        numeric = np.array([float(v) for v in labels])
        y = (
            numeric.astype(int)
            if np.all(numeric == np.round(numeric))
            else labels.astype(str)
        )
    except ValueError:
        y = labels.astype(str)
    if not keep.all():
        notes.append(f"{int((~keep).sum())} rows without a label dropped")
    return Data(X, y, source=str(path), notes=notes)


def _shared_csv(filename, scaling):
    def loader(data_dir):
        path = Path(data_dir) / filename
        if not Path(data_dir).is_dir():
            raise DataUnavailable(
                f"data folder {data_dir} is absent (it is the project's "
                "../shared/data; pass --data-dir to point elsewhere)"
            )
        data = load_csv(path, "class")
        data.scaling = scaling
        return data

    return loader


register_dataset(
    "optdigits",
    "UCI optical digits (training part): 3,823 8x8 images, 64 counts 0-16, 10 classes",
)(_shared_csv("optdigits.csv", "minmax"))
register_dataset(
    "segment",
    "UCI image segmentation: 2,310 regions, 19 real features, 7 classes",
)(_shared_csv("segment.csv", "standard"))
register_dataset(
    "winequality-white",
    "UCI wine quality, white: 4,898 wines, 11 features, 7 very unbalanced classes",
)(_shared_csv("winequality-white.csv", "standard"))


# -- the scale tier (large NumPy files) ------------------------------------------


def _npz(data_dir, filename):
    path = Path(data_dir) / filename
    if not path.is_file():
        raise DataUnavailable(
            f"{path} is absent: the scale tier reads the project's "
            "../shared/data/*.npz files (pass --data-dir to point elsewhere)"
        )
    return np.load(path, allow_pickle=False)


@register_dataset(
    "fashion-mnist",
    "Fashion-MNIST, official split: 60,000 training + 10,000 test 28x28 images, "
    "784 pixels, 10 classes (large)",
    large=True,
)
def _fashion_mnist(data_dir):
    f = _npz(data_dir, "fashion_mnist.npz")
    scale = np.float32(1.0 / 255.0)
    return Data(
        f["X_train"].astype(np.float32) * scale,
        f["y_train"].astype(np.int64),
        scaling="minmax",
        source="../shared/data/fashion_mnist.npz (Zalando Research, MIT licence)",
        notes=["official train/test split, the same for every seed"],
        test=(f["X_test"].astype(np.float32) * scale, f["y_test"].astype(np.int64)),
    )


@register_dataset(
    "covtype",
    "UCI Covertype, 100,000-row subsample: 54 features (10 numeric, 44 binary), "
    "7 very unbalanced classes; stratified 70/30 per seed (large)",
    large=True,
)
def _covtype(data_dir):
    f = _npz(data_dir, "covtype.npz")
    return Data(
        f["X"].astype(np.float32),
        f["y"].astype(np.int64),
        source="../shared/data/covtype.npz (UCI, CC BY 4.0)",
    )


def load(name, data_dir=DEFAULT_DATA_DIR, csv_path=None, target=None):
    """Load the data set ``name`` (or the user's CSV when ``csv_path``)."""
    if csv_path is not None:
        return load_csv(csv_path, target)
    try:
        spec = DATASETS[name]
    except KeyError:
        raise DataUnavailable(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)}"
        ) from None
    return spec.loader(data_dir)


def subsample(data, max_rows, seed=0):
    """Stratified subsample of at most ``max_rows`` rows (None: all)."""
    if max_rows is None or len(data.y) <= max_rows:
        return data
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(data.y, return_counts=True)
    stratify = data.y if counts.min() >= 2 else None
    idx, _ = train_test_split(
        np.arange(len(data.y)),
        train_size=int(max_rows),
        stratify=stratify,
        random_state=seed,
    )
    idx = np.sort(idx)
    return Data(
        data.X[idx],
        data.y[idx],
        scaling=data.scaling,
        source=data.source,
        notes=[
            *data.notes,
            f"stratified subsample of {max_rows} rows"
            + ("" if data.test is None else " of the training part (the test part whole)"),
        ],
        test=data.test,
    )
