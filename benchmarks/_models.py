"""Models of the benchmark suite, as a registry.

A model is a name, a group and a ``build(ctx)`` function returning an
*unfitted* estimator for one split; the harness puts it in a Pipeline after
the data set's scaler. ``build`` raises :class:`Skip` (with a reason that is
printed and reported) when the model cannot run here, e.g. a package is not
installed. ``needs`` names models whose fitted attributes on the same split
``build`` reads from ``ctx.info`` (the controls need the fitted tree), and
``record`` names the fitted attributes to keep for the report and for later
models.

Adding a model is one line::

    register_model("knn", lambda ctx: KNeighborsClassifier(), group="sklearn",
                   description="k nearest neighbours, k=5")
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

#: Name of the model every time and memory figure is divided by.
BASELINE = "base"


class Skip(Exception):
    """The model cannot run here; the message says why."""


@dataclass
class Config:
    """Training budget shared by every neural model of a run."""

    max_epochs: int = 15
    expert_max_epochs: int | None = None
    max_depth: int = 2
    n_clusters_grid: tuple = (2, 3, 4, 5)
    batch_size: int = 64
    lr: float = 1e-3
    rf_trees: int = 200
    datalets_cv: int = 3
    #: Threads per fit (``--threads``), given to the anchors' ``n_jobs``.
    threads: int = 1
    #: Parameters set on every tree (max_depth > 0) of the run, e.g.
    #: ``{"split_test": "none"}`` to compare mechanisms on forced splits.
    tree_params: dict = field(default_factory=dict)

    @property
    def expert_epochs(self):
        """Epochs per expert, as the classifier resolves ``None``."""
        if self.expert_max_epochs is not None:
            return int(self.expert_max_epochs)
        return max(1, self.max_epochs // 4)

    @property
    def path_epochs(self):
        """Nominal epochs on a full-depth root-to-leaf path of the tree."""
        return self.max_epochs + self.max_depth * self.expert_epochs


@dataclass
class Context:
    """What ``build`` knows about the split it builds a model for."""

    seed: int
    n_features: int
    n_classes: int
    n_train: int
    config: Config
    info: dict = field(default_factory=dict)
    #: The split's training rows (unscaled), for models whose arguments
    #: depend on the data (``benchmarks._width``); not copied.
    X_train: object = None

    def fitted(self, model, attribute):
        """A fitted attribute of an earlier model on this split, or Skip."""
        try:
            return self.info[model][attribute]
        except KeyError:
            raise Skip(
                f"needs {model}.{attribute} from the same split, "
                f"and {model} did not run"
            ) from None


@dataclass
class ModelSpec:
    name: str
    build: Callable
    group: str
    description: str
    needs: tuple = ()
    record: tuple = ()
    quick: bool = True
    #: ``(model, params)``: this model is ``model`` fitted, then with
    #: ``params`` (which change prediction only) set. When ``model`` runs on
    #: the same split, this one is evaluated on that fit instead of fitting
    #: again, and reports that fit's time and memory.
    shares_fit: tuple | None = None


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name, build, *, group, description, needs=(), record=(), quick=True, shares_fit=None
):
    """Add a model to the registry (later registrations replace earlier)."""
    MODELS[name] = ModelSpec(
        name, build, group, description, tuple(needs), tuple(record), quick, shares_fit
    )
    return MODELS[name]


def _import(module, attribute):
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise Skip(f"{module}.{attribute} is not importable ({exc})") from None


def accepted(cls, **params):
    """Keep only the keyword arguments ``cls.__init__`` takes."""
    sig = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        names = set(sig)
        return {k: v for k, v in params.items() if k in names or "__" in k}
    return {k: v for k, v in params.items() if k in sig}


# -- hemoe_sk ----------------------------------------------------------------

TREE_RECORD = ("n_leaves_", "depth_", "max_path_epochs_", "expert_max_epochs_")


def hemoe(ctx, embedder=None, **overrides):
    """The product's classifier with the run's budget, plus ``overrides``."""
    cls = _import("hemoe_sk.classifier", "HierarchicalEmbeddingMoEClassifier")
    c = ctx.config
    params = dict(
        max_epochs=c.max_epochs,
        expert_max_epochs=c.expert_max_epochs,
        max_depth=c.max_depth,
        n_clusters_grid=tuple(c.n_clusters_grid),
        batch_size=c.batch_size,
        lr=c.lr,
        random_state=ctx.seed,
    )
    params.update(overrides)
    if params["max_depth"] > 0:
        params.update(c.tree_params)
    return cls(embedder, **accepted(cls, **params))


def _ensemble(ctx):
    cls = _import("hemoe_sk.baselines", "FineTunedEnsembleClassifier")
    c = ctx.config
    return cls(
        n_estimators=int(ctx.fitted("tree-hard", "n_leaves_")),
        finetune_epochs=int(ctx.fitted("tree-hard", "expert_max_epochs_")),
        max_epochs=c.max_epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        random_state=ctx.seed,
    )


register_model(
    BASELINE,
    lambda ctx: hemoe(ctx, max_depth=0),
    group="hemoe_sk",
    description="max_depth=0: the base embedder network alone (the ratio baseline)",
    record=TREE_RECORD,
)
register_model(
    "tree-hard",
    lambda ctx: hemoe(ctx, routing="hard"),
    group="hemoe_sk",
    description="HierarchicalEmbeddingMoEClassifier, hard routing",
    record=TREE_RECORD,
)
register_model(
    "tree-soft",
    lambda ctx: hemoe(ctx, routing="soft"),
    group="hemoe_sk",
    description="HierarchicalEmbeddingMoEClassifier, soft routing (routing only "
    "changes prediction: evaluated on tree-hard's fit, whose fit time and memory "
    "it reports)",
    record=TREE_RECORD,
    shares_fit=("tree-hard", {"routing": "soft"}),
)
register_model(
    "tree-legacy",
    lambda ctx: hemoe(ctx, selection="node", split_test="margin", routing="soft"),
    group="hemoe_sk",
    description="0.1's selection: the root trains on all rows, each node scores K on "
    "its own validation split, a split is kept above one standard error "
    "(selection='node', split_test='margin'), soft routing",
    record=TREE_RECORD,
    quick=False,
)
register_model(
    "tree-refine",
    lambda ctx: hemoe(ctx, refine_epochs=2, routing="soft"),
    group="hemoe_sk",
    description="the default tree, then 2 epochs of joint refinement of the whole "
    "tree as one soft mixture (refine_epochs=2), soft routing",
    record=TREE_RECORD,
    quick=False,
)
#: One benchmark row per issue-12 mechanism: the default tree with one option
#: changed (soft routing, the default).
MECHANISMS = {
    "tree-mcnemar": (dict(split_test="mcnemar"), "split kept by an exact McNemar test"),
    "tree-head-search": (
        dict(search_expert="head"),
        "K scored with linear heads on frozen embeddings; full experts for the kept K",
    ),
    "tree-outside": (
        dict(outside_share=0.2),
        "experts also train on a random 20% of the node's other clusters",
    ),
    "tree-residual": (dict(expert="residual"), "residual experts (parent + correction)"),
    "tree-lora": (dict(expert="lora"), "LoRA experts (rank 4) on the frozen parent"),
    "tree-kl": (dict(expert_kl=1.0), "fine-tuned experts with a KL penalty to the parent"),
    "tree-confusion": (
        dict(split_signal="confusion"),
        "class groups from the soft confusion matrix (HD-CNN)",
    ),
    "tree-within": (
        dict(split_signal="within-class"),
        "sub-populations within classes, grouped across classes",
    ),
    "tree-balanced": (dict(split_signal="balanced"), "balanced k-means clusters"),
    "tree-pair": (
        dict(pair_expert=True),
        "a cluster-pair expert for the two clusters each split hesitates between most",
    ),
}


def _mechanism(overrides):
    return lambda ctx: hemoe(ctx, **overrides)


for _name, (_overrides, _what) in MECHANISMS.items():
    register_model(
        _name,
        _mechanism(_overrides),
        group="hemoe_sk",
        description=f"the default tree with {_overrides}: {_what}",
        record=TREE_RECORD,
        quick=False,
    )

register_model(
    "ctrl-epochs",
    lambda ctx: hemoe(
        ctx, max_depth=0, max_epochs=int(ctx.fitted("tree-hard", "max_path_epochs_"))
    ),
    group="control",
    description="control 1, equal epochs: max_depth=0 trained for tree-hard's "
    "max_path_epochs_ on this split",
    needs=("tree-hard",),
    record=TREE_RECORD,
)
register_model(
    "ctrl-ensemble",
    _ensemble,
    group="control",
    description="control 2, equal compute: FineTunedEnsembleClassifier with "
    "n_estimators=tree-hard's n_leaves_, finetune_epochs=its expert_max_epochs_",
    needs=("tree-hard",),
    record=("n_estimators", "finetune_epochs_"),
)


def _flat_moe(gating):
    def build(ctx):
        cls = _import("hemoe_sk.moe", "MixtureOfExpertsClassifier")
        c = ctx.config
        return cls(
            **accepted(
                cls,
                gating=gating,
                max_epochs=c.path_epochs,
                batch_size=c.batch_size,
                random_state=ctx.seed,
            )
        )

    return build


for _gating, _quick in (("soft", True), ("topk", False), ("guided", False)):
    register_model(
        f"moe-{_gating}",
        _flat_moe(_gating),
        group="hemoe_sk",
        description=f"flat MixtureOfExpertsClassifier, gating={_gating!r} "
        "(its own defaults; epochs = the tree's nominal path epochs)",
        quick=_quick,
    )



def _deepmoe(ctx):
    """DeepMoE as the base network (max_depth=0), on 8x8 images only."""
    if ctx.n_features != 64:
        raise Skip("DeepMoE needs 8x8 images (64 pixel features)")
    embedder = _import("hemoe_sk.nn", "DeepMoEEmbedder")
    return hemoe(
        ctx, embedder, max_depth=0, max_epochs=ctx.config.path_epochs,
        embedder__image_shape=(1, 8, 8),
    )


register_model(
    "deepmoe",
    _deepmoe,
    group="hemoe_sk",
    description="DeepMoEEmbedder (channel-gated conv net, arXiv 1806.01531) trained "
    "alone (max_depth=0) on 8x8 images; epochs = the tree's nominal path epochs",
    quick=False,
)

# -- scikit-learn --------------------------------------------------------------


def _sklearn(module, name, **params):
    def build(ctx):
        cls = _import(module, name)
        p = dict(params)
        if "random_state" in inspect.signature(cls.__init__).parameters:
            p["random_state"] = ctx.seed
        return cls(**p)

    return build


register_model(
    "logreg",
    _sklearn("sklearn.linear_model", "LogisticRegression", max_iter=2000),
    group="sklearn",
    description="LogisticRegression(max_iter=2000)",
)
register_model(
    "hgb",
    _sklearn("sklearn.ensemble", "HistGradientBoostingClassifier"),
    group="sklearn",
    description="HistGradientBoostingClassifier() (defaults)",
)


def _forest(ctx):
    cls = _import("sklearn.ensemble", "RandomForestClassifier")
    return cls(n_estimators=ctx.config.rf_trees, n_jobs=1, random_state=ctx.seed)


register_model(
    "rf",
    _forest,
    group="sklearn",
    description="RandomForestClassifier(n_estimators=rf_trees, n_jobs=1)",
)

# -- peers ---------------------------------------------------------------------


def _datalets(ctx):
    cls = _import("datalets", "PartitionedClassifier")
    return cls(
        candidates="fast",
        cv=ctx.config.datalets_cv,
        progress=False,
        random_state=ctx.seed,
    )


register_model(
    "datalets",
    _datalets,
    group="peer",
    description="datalets.PartitionedClassifier: k-means datalets (8), per-cluster "
    "tournament of its 'fast' zoo (logreg, naive Bayes, tree, HGB) selected by "
    "macro-F1 with 3-fold CV, soft routing",
    quick=False,
)


def _neural_trees(ctx):
    cls = _import(
        "neural_trees.mixture_of_experts.hierarchical_moe",
        "HierarchicalMixtureOfExperts",
    )
    c = ctx.config
    return cls(
        depth=2,
        branching_factor=2,
        max_epochs=c.path_epochs,
        learning_rate=c.lr,
        batch_size=c.batch_size,
        random_state=ctx.seed,
    )


register_model(
    "nt-hmoe",
    _neural_trees,
    group="peer",
    description="neural_trees HierarchicalMixtureOfExperts (soft gating tree, depth 2, "
    "branching 2, subtree dropout; epochs = the tree's nominal path epochs)",
)


def resolve(names, baseline=True):
    """Models to run, in registry order, with every ``needs`` added.

    The ratio baseline is included unless ``baseline=False``. Returns
    ``(specs, added)`` where ``added`` lists the names pulled in as
    dependencies.
    """
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(
            f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}"
        )
    wanted = set(names) | ({BASELINE} if baseline else set())
    frontier = list(wanted)
    while frontier:
        for dep in MODELS[frontier.pop()].needs:
            if dep not in wanted:
                wanted.add(dep)
                frontier.append(dep)
    added = sorted(wanted - set(names))
    return [spec for name, spec in MODELS.items() if name in wanted], added
