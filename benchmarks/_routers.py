"""Which node router? Accuracy and fit time of the tree for each router.

Run from the repository root::

    python -m benchmarks.run routers --quick     # a few minutes: the smoke test
    python -m benchmarks.run routers             # full run (see docs/routers.rst)
    python -m benchmarks.run routers --datasets digits --seeds 0 1 2

Every router is plugged into the same ``HierarchicalEmbeddingMoEClassifier``
(same embedder, epochs, depth and seeds), with ``overlap=0`` and
``overlap=0.2``:

* ``dec``: the default router (``clusterer=None``, a small DECClusterer);
* ``kmeans``: ``KMeans(n_init=3)``;
* ``ward``: ``NeighborVoteRouter(AgglomerativeClustering())`` (Ward linkage);
* ``hdbscan``: ``NeighborVoteRouter(HDBSCAN())`` with
  ``cluster_param_grid={"clusterer__min_cluster_size": [...]}`` instead of a
  grid over K, on the embeddings reduced by ``PCA(n_components=8)``
  (density estimates need few dimensions);
* ``mixae``: ``MixtureOfAutoencodersClusterer`` with a node-sized budget;
* ``hdbscan-umap``: as ``hdbscan`` with ``umap.UMAP(n_components=8)`` as the
  reducer, only when the optional umap-learn package is installed;

plus ``max_depth=0`` (the embedder network alone) as the base.

Data: ``load_digits`` (10 classes), the same digits relabelled into 3 coarse
groups (loops / strokes / curves: each label hides 3-4 digits), and
``segment.csv`` and ``optdigits.csv`` from ``../shared/data`` (skipped with a
message where absent). One stratified 70/30 split per seed; features scaled
on the training part (MinMaxScaler for pixels, StandardScaler otherwise).

Printed (and written as Markdown with ``--out``): test accuracy, mean and
standard deviation over the seeds; fit time as a ratio to the default DEC
router with ``overlap=0`` fitted on the same splits in the same run; mean
number of leaves. A second table shows how well each router clusters on its
own (NMI and clustering accuracy against the digit labels, ``load_digits``).

Fits run in this process with ``--threads`` torch/BLAS threads (default 1:
on a shared machine, more threads than free cores slows torch down many
times). Compare ratios within one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from hemoe_sk.classifier import HierarchicalEmbeddingMoEClassifier
from hemoe_sk.cluster.dec import DECClusterer
from hemoe_sk.cluster.mixae import MixtureOfAutoencodersClusterer
from hemoe_sk.cluster.routing import NeighborVoteRouter

from . import _data
from ._report import clustering_accuracy

RESULTS_DIR = Path(__file__).resolve().parent / "results"

DATASETS = ["digits", "digits-coarse3", "segment", "optdigits"]
OVERLAPS = (0.0, 0.2)
BASELINE = ("dec", 0.0)

#: Settings of the two presets; any option given on the command line wins.
PRESETS = {
    "full": dict(
        datasets=DATASETS, seeds=[0, 1, 2], max_rows=None, epochs=20,
        expert_epochs=5, max_depth=2, n_clusters_grid=(2, 3, 4, 5),
        min_cluster_sizes=(10, 20, 40), name="routers-full",
    ),
    "quick": dict(
        datasets=DATASETS, seeds=[0, 1], max_rows=600, epochs=10,
        expert_epochs=3, max_depth=1, n_clusters_grid=(2, 3),
        min_cluster_sizes=(15, 40), name="routers-quick",
    ),
}


def mixae_router(quick):
    """MixAE at a node's budget (the default DEC router's, roughly)."""
    return MixtureOfAutoencodersClusterer(
        hidden_dims=(64,),
        pretrain_epochs=10 if quick else 30,
        init_epochs=3 if quick else 5,
        max_epochs=10 if quick else 30,
    )


def _umap():
    """``umap.UMAP`` when umap-learn is installed (an optional extra), else None."""
    try:
        from umap import UMAP
    except ImportError:
        return None
    return UMAP


def routers(cfg):
    """``name -> (description, classifier parameters)``."""
    hdbscan_grid = {"clusterer__min_cluster_size": list(cfg["min_cluster_sizes"])}
    table = {
        "dec": ("default: DECClusterer (clusterer=None)", {}),
        "kmeans": ("KMeans(n_init=3)", {"clusterer": KMeans(n_init=3)}),
        "ward": (
            "NeighborVoteRouter(AgglomerativeClustering()) (Ward)",
            {"clusterer": NeighborVoteRouter(AgglomerativeClustering())},
        ),
        "hdbscan": (
            "NeighborVoteRouter(HDBSCAN()), min_cluster_size in "
            f"{list(cfg['min_cluster_sizes'])}, reducer=PCA(8)",
            {
                "clusterer": NeighborVoteRouter(HDBSCAN(copy=True)),
                "cluster_param_grid": hdbscan_grid,
                "reducer": PCA(n_components=8),
            },
        ),
        "mixae": (
            "MixtureOfAutoencodersClusterer(hidden_dims=(64,)), "
            f"{'10+3+10' if cfg['quick'] else '30+5+30'} epochs",
            {"clusterer": mixae_router(cfg["quick"])},
        ),
    }
    UMAP = _umap()
    if UMAP is not None:
        table["hdbscan-umap"] = (
            "as `hdbscan`, with reducer=umap.UMAP(n_components=8) (umap-learn "
            "installed)",
            {
                "clusterer": NeighborVoteRouter(HDBSCAN(copy=True)),
                "cluster_param_grid": hdbscan_grid,
                "reducer": UMAP(n_components=8, n_jobs=1),
            },
        )
    return table


def limit_threads(n_threads):
    if not n_threads:
        return
    import torch

    torch.set_num_threads(int(n_threads))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n_threads))
    except ImportError:  # pragma: no cover
        pass


def warm_up():
    """One tiny fit, so that torch's lazy start-up is not charged to the
    first model timed."""
    rng = np.random.RandomState(0)
    X = rng.rand(60, 4).astype(np.float32)
    y = np.arange(60) % 2
    clf = HierarchicalEmbeddingMoEClassifier(max_epochs=1, max_depth=0, random_state=0)
    clf.fit(X, y)


def load_split(name, data_dir, seed, max_rows):
    """Scaled ``(X_train, X_test, y_train, y_test)`` or ``None`` with a message."""
    try:
        data = _data.load(name, data_dir)
    except _data.DataUnavailable as exc:
        print(f"[skip] {name}: {exc}")
        return None
    data = _data.subsample(data, max_rows, seed=0)
    X = np.asarray(data.X, dtype=np.float64)
    if np.isnan(X).any():
        from sklearn.impute import SimpleImputer

        X = SimpleImputer().fit_transform(X)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, data.y, test_size=0.3, stratify=data.y, random_state=seed
    )
    scaler = MinMaxScaler() if data.scaling == "minmax" else StandardScaler()
    X_tr = scaler.fit_transform(X_tr).astype(np.float32)
    X_te = scaler.transform(X_te).astype(np.float32)
    return X_tr, X_te, y_tr, y_te


def fit_one(params, split):
    X_tr, X_te, y_tr, y_te = split
    clf = HierarchicalEmbeddingMoEClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(X_tr, y_tr)
        seconds = time.perf_counter() - start
    return float(np.mean(clf.predict(X_te) == y_te)), seconds, int(clf.n_leaves_)


def run_dataset(name, cfg, table):
    splits = {}
    for seed in cfg["seeds"]:
        split = load_split(name, cfg["data_dir"], seed, cfg["max_rows"])
        if split is None:
            return
        splits[seed] = split
    n = sum(len(s[0]) + len(s[1]) for s in splits.values()) // len(splits)
    print(f"\n== {name}: {n} rows, {splits[cfg['seeds'][0]][0].shape[1]} features ==")
    common = dict(
        max_epochs=cfg["epochs"],
        expert_max_epochs=cfg["expert_epochs"],
        max_depth=cfg["max_depth"],
        n_clusters_grid=tuple(cfg["n_clusters_grid"]),
        min_gain=cfg["min_gain"],
    )
    runs = [("base", None, {**common, "max_depth": 0})]
    for router, (_, params) in routers(cfg).items():
        if cfg["routers"] and router not in cfg["routers"]:
            continue
        for overlap in OVERLAPS:
            runs.append((router, overlap, {**common, **params, "overlap": overlap}))
    for router, overlap, params in runs:
        results = []
        for seed, split in splits.items():
            results.append(fit_one({**params, "random_state": seed}, split))
        acc, sec, leaves = (np.array(v, dtype=float) for v in zip(*results))
        table.setdefault(name, {})[(router, overlap)] = dict(
            acc=acc.mean(), std=acc.std(), seconds=sec.sum(), leaves=leaves.mean()
        )
        label = router if overlap is None else f"{router} overlap={overlap:g}"
        print(f"  {label:<24} acc {acc.mean():.4f} ± {acc.std():.4f}  "
              f"fit {sec.mean():7.1f} s  leaves {leaves.mean():.1f}", flush=True)


def markdown(table, cfg):
    lines = [
        "| data set | router | overlap | accuracy (mean ± sd) | fit time × DEC "
        "| leaves |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in table.items():
        ref = rows.get(BASELINE, {}).get("seconds")
        for (router, overlap), r in rows.items():
            ratio = f"{r['seconds'] / ref:.2f}" if ref else "n/a"
            ov = "—" if overlap is None else f"{overlap:g}"
            label = "base (max_depth=0)" if router == "base" else f"`{router}`"
            lines.append(
                f"| {name} | {label} | {ov} | {r['acc']:.4f} ± {r['std']:.4f} "
                f"| {ratio} | {r['leaves']:.1f} |"
            )
    return "\n".join(lines)


def clustering_table(cfg):
    """Each router clustering the digits on its own (10 clusters)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    quick = cfg["quick"]
    if quick:
        dec = ("DECClusterer(10) (quick: 30 pretraining epochs, 300 steps)",
               DECClusterer(10, pretrain_epochs=30, max_iter=300))
        mixae = ("MixtureOfAutoencodersClusterer(10) (quick: 15+5+15 epochs)",
                 MixtureOfAutoencodersClusterer(
                     10, pretrain_epochs=15, init_epochs=5, max_epochs=15))
    else:
        dec = ("DECClusterer(10)", DECClusterer(10))
        mixae = ("MixtureOfAutoencodersClusterer(10)",
                 MixtureOfAutoencodersClusterer(10))
    models = [
        ("KMeans(10, n_init=10)", KMeans(10, n_init=10)),
        ("NeighborVoteRouter(Ward)",
         NeighborVoteRouter(AgglomerativeClustering(), n_clusters=10)),
        ("NeighborVoteRouter(HDBSCAN(min_cluster_size=20)) on PCA(8)",
         NeighborVoteRouter(HDBSCAN(min_cluster_size=20, copy=True))),
        dec,
        mixae,
    ]
    lines = [
        "| clusterer (load_digits / 16, 10 clusters) | NMI | ACC | fit s | × KMeans |",
        "|---|---|---|---|---|",
    ]
    print("\n== router clustering quality: load_digits ==")
    t_km = None
    seed = cfg["seeds"][0]
    for label, model in models:
        model.set_params(random_state=seed)
        Xin = PCA(8, random_state=seed).fit_transform(X) if "PCA" in label else X
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = model.fit(Xin).labels_
        seconds = time.perf_counter() - start
        t_km = t_km or seconds
        nmi = normalized_mutual_info_score(y, labels)
        acc = clustering_accuracy(y, labels)
        print(f"  {label:<60} NMI {nmi:.3f} ACC {acc:.3f} {seconds:6.1f} s", flush=True)
        lines.append(
            f"| {label} | {nmi:.3f} | {acc:.3f} | {seconds:.1f} "
            f"| {seconds / t_km:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run routers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small preset (subsampled data, few epochs): minutes")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--routers", nargs="+",
                        choices=["dec", "kmeans", "ward", "hdbscan", "mixae",
                                 "hdbscan-umap"],
                        default=None,
                        help="routers to run (default: all; 'dec' is the ratio "
                        "baseline; "
                        "'hdbscan-umap' only when umap-learn is installed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--expert-epochs", type=int, default=None)
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument(
        "--min-gain", default="auto",
        help="the classifier's min_gain ('auto' or a number); 0 keeps any strictly "
        "better split, which compares routers on more splits")
    parser.add_argument("--data-dir", default=str(_data.DEFAULT_DATA_DIR))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/BLAS threads (default 1; 0 leaves the defaults)")
    parser.add_argument("--no-clustering", action="store_true",
                        help="skip the clustering-quality table")
    parser.add_argument("--out", default=None,
                        help="write the Markdown report here (default: "
                        "benchmarks/results/<name>.md)")
    args = parser.parse_args(argv)

    cfg = dict(PRESETS["quick" if args.quick else "full"])
    for key in ("datasets", "seeds", "max_rows", "epochs", "expert_epochs",
                "max_depth"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    cfg.update(quick=args.quick, data_dir=args.data_dir, routers=args.routers,
               min_gain=args.min_gain if args.min_gain == "auto" else float(args.min_gain))
    if args.routers and "dec" not in args.routers:
        print("note: 'dec' not selected: fit-time ratios will read n/a")
    limit_threads(args.threads)
    if _umap() is None:
        print("note: umap-learn is not installed: the 'hdbscan-umap' router is skipped "
              "(pip install umap-learn to add it)")

    import torch

    start = time.perf_counter()
    header = (
        f"preset {'quick' if args.quick else 'full'}: seeds {cfg['seeds']}, "
        f"max_rows {cfg['max_rows']}, epochs {cfg['epochs']}+{cfg['expert_epochs']}, "
        f"max_depth {cfg['max_depth']}, "
        f"n_clusters_grid {tuple(cfg['n_clusters_grid'])}, "
        f"{args.threads or torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}, "
        f"{platform.machine()} {platform.system()}"
    )
    print(header)
    warm_up()
    table = {}
    for name in cfg["datasets"]:
        run_dataset(name, cfg, table)
    clustering = None if args.no_clustering else clustering_table(cfg)
    elapsed = time.perf_counter() - start

    report = [
        f"# Node routers{' (quick run)' if args.quick else ''}",
        "",
        f"`python -m benchmarks.run routers{' --quick' if args.quick else ''}`, "
        f"{_dt.date.today().isoformat()}; {header}; total {elapsed / 60:.1f} min.",
        "",
        "Routers:",
        "",
        *[f"- `{k}`: {d}" for k, (d, _) in routers(cfg).items()
          if not cfg["routers"] or k in cfg["routers"]],
        "- base: `max_depth=0`, the embedder network alone.",
        "",
        "Test accuracy over seeds; fit time summed over seeds, divided by that of "
        "`dec` with overlap 0 on the same data set in this run.",
        "",
        markdown(table, cfg),
    ]
    if clustering:
        report += ["", clustering]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    out = (Path(args.out) if args.out
           else RESULTS_DIR / f"{cfg['name']}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written: {out}")
    return table

