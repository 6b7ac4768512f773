"""Docstring sections that several estimators and functions share.

numpydoc docstrings repeat some sections word for word: scikit-learn's
``n_features_in_`` and ``feature_names_in_`` attributes, the ``X``/``y`` of
an unsupervised ``fit``, the fitted model an Examples section starts from.
Each is written once here, in :data:`SECTIONS`. A docstring names one on a
line of its own, ``%(name)s``, indented like the text around it, and
:func:`fill_doc` puts the section there (indented the same) when the module
is imported, so ``help()``, Sphinx and the doctests all read the whole text.

Examples
--------
>>> @fill_doc
... def f(X):
...     '''Do nothing.
...
...     %(new_X_parameters)s
...     '''
>>> print(f.__doc__.splitlines()[4].strip())
X : array-like of shape (n_samples, n_features)
"""

from __future__ import annotations

import re

__all__ = ["SECTIONS", "fill_doc"]

_MARK = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)

#: The shared sections, unindented; ``%(name)s`` in a docstring names one.
SECTIONS: dict[str, str] = {}


def _section(name, text):
    SECTIONS[name] = text.strip("\n")


_section("recipe_training", """
early_stopping : float in [0, 1), default=0.1
    Share of the rows each network trains on that it holds out to stop
    training after ``patience`` epochs without a lower held-out loss,
    restoring its best epoch (see :doc:`/recipe`); 0 trains every epoch.
patience : int, default=20
    Epochs without a lower held-out loss before early stopping.
lr_schedule : {"warmup_cosine", "constant"}, default="warmup_cosine"
    Linear warm-up over the first 5% of each training call's batches, then
    cosine decay to 0; or ``lr`` throughout.
""")

_section("fitted_features", """
n_features_in_ : int
    Number of features seen during :meth:`fit`.

feature_names_in_ : ndarray of shape (`n_features_in_`,)
    Names of features seen during :meth:`fit`. Defined only when `X`
    has feature names that are all strings.
""")

_section("fit_X_y_ignored", """
X : array-like of shape (n_samples, n_features)
    Training data.

y : Ignored
    Not used, present for API consistency by convention.
""")

_section("new_X_parameters", """
Parameters
----------
X : array-like of shape (n_samples, n_features)
    New data (no labels needed), with the features seen in :meth:`fit`.
""")

_section("X_samples", """
Parameters
----------
X : array-like of shape (n_samples, n_features)
    Samples.
""")

_section("X_training", """
Parameters
----------
X : array-like of shape (n_samples, n_features)
    Training data.
""")



# hemoe_sk.nn ------------------------------------------------------------

_section("image_module_inputs", """
n_features : int
    Number of input features; must equal ``prod(image_shape)``.
n_classes : int
    Number of output logits.
image_shape : tuple of int, default=(1, 8, 8)
    ``(channels, height, width)`` of one image.
""")


# hemoe_sk.inspection ----------------------------------------------------

_section("fitted_tree_example", """
>>> from sklearn.cluster import KMeans
>>> from sklearn.datasets import make_blobs
>>> from hemoe_sk import HierarchicalEmbeddingMoEClassifier
>>> X, c = make_blobs(n_samples=200, centers=6, random_state=0)
>>> y = c % 2
>>> clf = HierarchicalEmbeddingMoEClassifier(
...     clusterer=KMeans(n_init=3), n_clusters_grid=(2,),
...     split_test="none",
...     max_depth=1, min_cluster_size=20, max_epochs=5, random_state=0,
... ).fit(X, y)
""")

_section("fitted_moe_example", """
>>> from sklearn.datasets import make_blobs
>>> from hemoe_sk import MixtureOfExpertsClassifier
>>> X, y = make_blobs(n_samples=60, centers=3, random_state=0)
>>> clf = MixtureOfExpertsClassifier(n_experts=2, max_epochs=3,
...                                  random_state=0).fit(X, y)
""")

_section("moe_estimator_X_y", """
estimator : MixtureOfExpertsClassifier, MixtureOfExpertsRegressor or Pipeline
    Fitted (any estimator with ``gate_weights``); a pipeline's first steps
    transform ``X``.
X : array-like of shape (n_samples, n_features)
    Samples.
y : array-like of shape (n_samples,)
    Their labels (need not be predicted ones; for a regressor, any grouping
    of the samples, such as binned targets).
""")

_section("csv_path_parameter", """
path : str or path-like
    Destination file (overwritten).
""")

_section("heatmap_parameters", """
ax : matplotlib Axes or None, default=None
    Where to draw; a new figure when None.
cmap : str, default="Blues"
    Colormap of the shares.
colorbar : bool, default=True
    Whether to draw a colour bar.
""")


def _filled(doc, where):
    def put(match):
        indent, name = match.groups()
        if name not in SECTIONS:
            raise KeyError(
                f"{where}: the docstring names %({name})s, which is not one of the "
                f"shared sections {sorted(SECTIONS)}."
            )
        return "\n".join(
            indent + line if line else "" for line in SECTIONS[name].split("\n")
        )

    return _MARK.sub(put, doc)


def _fill_one(obj, where):
    doc = getattr(obj, "__doc__", None)
    if doc and "%(" in doc:
        obj.__doc__ = _filled(doc, where)


def fill_doc(obj):
    """Fill the ``%(name)s`` lines of a docstring with :data:`SECTIONS`.

    A decorator. On a class it fills the class docstring and those of the
    methods and properties the class itself defines.

    Parameters
    ----------
    obj : class or function
        Its ``__doc__`` is filled in place (a missing docstring, as under
        ``python -OO``, is left alone).

    Returns
    -------
    obj : class or function
        ``obj`` itself.
    """
    where = getattr(obj, "__qualname__", repr(obj))
    _fill_one(obj, where)
    if isinstance(obj, type):
        for name, member in vars(obj).items():
            if isinstance(member, property):
                member = member.fget
            member = getattr(member, "__func__", member)  # classmethod, staticmethod
            if callable(member):
                _fill_one(member, f"{where}.{name}")
    return obj
