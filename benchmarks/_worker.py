"""Fit and measure one model in a child process.

Each fit runs in its own process, forked from a ``forkserver`` that has
already imported numpy, scikit-learn, torch, skorch and hemoe_sk and run one
tiny torch training step (so lazily initialised kernels are paid once, not by
whichever model happens to fit first). That keeps the start of a child cheap
(~0.2 s instead of several seconds of imports) while every fit still gets a
process of its own, so the operating system's peak-memory figure
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that fit alone.

Memory figures, in MiB:

* ``rss_before_mb``: resident memory of the child just before ``fit``
  (interpreter, libraries, the training and test data);
* ``peak_rss_mb``: ``ru_maxrss`` right after ``fit`` (before predicting);
* ``fit_mem_mb``: ``peak_rss_mb - rss_before_mb``, the memory the fit itself
  added at its peak. This is the figure compared between models.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import time
import traceback

import numpy as np

#: Modules the forkserver imports once, so children start warm.
PRELOAD = [
    "numpy",
    "scipy",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "torch",
    "skorch",
    "hemoe_sk",
    "hemoe_sk.nn",
    "benchmarks._worker",
]

_MIN_PREDICT_SECONDS = 0.2
_MAX_PREDICT_REPEATS = 50


def _warm_torch():
    """A tiny training run through the shared skorch layer.

    Run once in the forkserver and again in every child before its baseline
    is read: a forked child faults shared-library code in lazily, so without
    this the first torch fit in each child would be charged ~25 MiB of
    libtorch code pages that are not memory the fit allocated.
    """
    try:
        import torch

        from hemoe_sk.nn import embed, predict_proba, train_net
        from hemoe_sk.nn.build import build_embedder_net
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    rng = np.random.RandomState(0)
    X = rng.rand(64, 8).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.int64)
    with torch.random.fork_rng(devices=[]):
        net = build_embedder_net(
            None, n_features=8, n_classes=2, max_epochs=1, batch_size=16
        )
        train_net(net, X, y, seed=0, stage="warm-up")
        train_net(net, X, y, seed=1, stage="warm-up", partial=True, max_epochs=1)
        embed(net, X)
        predict_proba(net, X)


if os.environ.get("HEMOE_BENCH_FORKSERVER") == "1":  # pragma: no cover
    _warm_torch()


def _rss_mb():
    """Current resident set size of this process, MiB (Linux /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # not Linux: fall back to the peak so far
        return _maxrss_mb()


def _maxrss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _limit_threads(n_threads):
    if not n_threads:
        return
    try:
        import torch

        torch.set_num_threads(int(n_threads))
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n_threads))
    except ImportError:  # pragma: no cover
        pass


def _final_estimator(model):
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _evaluate(model, X_test, y_test, record):
    """Accuracy, timed prediction and recorded attributes of a fitted model."""
    start = time.perf_counter()
    pred = model.predict(X_test)
    first = time.perf_counter() - start
    accuracy = float(np.mean(pred == y_test))
    repeats, elapsed = 1, first
    while elapsed < _MIN_PREDICT_SECONDS and repeats < _MAX_PREDICT_REPEATS:
        start = time.perf_counter()
        model.predict(X_test)
        elapsed += time.perf_counter() - start
        repeats += 1
    predict_s = elapsed / repeats

    final = _final_estimator(model)
    info = {}
    for name in record:
        value = getattr(final, name, None)
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None:
            info[name] = value
    return {
        "accuracy": accuracy,
        "predict_s": predict_s,
        "predict_rows_per_s": (
            len(X_test) / predict_s if predict_s > 0 else float("nan")
        ),
        "info": info,
    }


def measure(
    model, X_train, y_train, X_test, y_test, record=(), n_threads=1, variants=None
):
    """Fit ``model`` and measure it, in the current process.

    Returns a dict with ``accuracy``, ``fit_s``, ``predict_s`` (one pass over
    the test set, timed over repeated passes), ``predict_rows_per_s``,
    memory figures (see the module docstring) and ``info`` (the fitted
    attributes named in ``record``, read from the pipeline's last step).

    ``variants`` maps a name to parameters that change prediction only (such
    as ``{"routing": "soft"}``): after the model is measured, each variant's
    parameters are set on the fitted last step and it is evaluated again,
    without refitting; the results are under ``"variants"``.
    """
    _limit_threads(n_threads)
    _warm_torch()
    rss_before = _rss_mb()
    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    peak = _maxrss_mb()

    result = _evaluate(model, X_test, y_test, record)
    result.update(
        {
            "fit_s": fit_s,
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak,
            "fit_mem_mb": max(0.0, peak - rss_before),
        }
    )
    if variants:
        final = _final_estimator(model)
        original = final.get_params(deep=False)
        result["variants"] = {}
        for name, params in variants.items():
            final.set_params(**params)
            result["variants"][name] = _evaluate(model, X_test, y_test, record)
            final.set_params(**{k: original[k] for k in params})
    return result


def _child(conn, payload):
    try:
        result = measure(**payload)
        conn.send(("ok", result))
    except BaseException as exc:  # report anything, the parent decides
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


class Runner:
    """Runs :func:`measure` in fresh child processes of one forkserver.

    ``isolate=False`` measures in the calling process instead (no per-fit
    memory figure worth the name; meant for debugging only).
    """

    def __init__(self, n_threads=1, timeout=None, isolate=True, preload=()):
        self.n_threads = n_threads
        self.timeout = timeout
        self.isolate = isolate
        self._ctx = None
        if isolate:
            method = (
                "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            )
            self._ctx = mp.get_context(method)
            if method == "forkserver":
                os.environ["HEMOE_BENCH_FORKSERVER"] = "1"
                self._ctx.set_forkserver_preload([*PRELOAD, *preload])

    def run(self, model, X_train, y_train, X_test, y_test, record=(), variants=None):
        """Return ``(result_dict, None)`` or ``(None, error_message)``."""
        payload = dict(
            model=model,
            X_train=X_train,
            y_train=y_train,
            X_test=X_test,
            y_test=y_test,
            record=tuple(record),
            n_threads=self.n_threads,
            variants=variants,
        )
        if not self.isolate:
            try:
                return measure(**payload), None
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                return None, f"{type(exc).__name__}: {exc}"
        parent, child = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_child, args=(child, payload))
        proc.start()
        child.close()
        try:
            if not parent.poll(self.timeout):
                proc.kill()
                proc.join()
                return None, f"timed out after {self.timeout:g} s"
            message = parent.recv()
        except EOFError:
            proc.join()
            return None, f"child process died (exit code {proc.exitcode})"
        finally:
            parent.close()
        proc.join()
        if message[0] == "ok":
            return message[1], None
        return None, message[1]
