"""Fuzzing the safe format with mutations of real files (fixed seed, bounded
budget): bit flips, truncations, member swaps and JSON value mutations.

Every mutated file is either refused cleanly (ModelFileError or
UntrustedTypeError, nothing else) or loads. A file whose bytes were damaged
(flip, truncation, a swap of two members) that still loads predicts exactly
as the original (the damage was where it does not matter). A manifest value
mutation, or a swap whose digests the attacker rewrote, may turn the file
into another valid model (``routing`` "soft" -> "hard", two arrays of one
shape exchanged), so a loaded one must predict cleanly: finite
probabilities, rows summing to one, no exception.
"""

import contextlib
import io
import json
import signal
import time
import warnings

import numpy as np
import pytest
from _crafted import data, fit_models, pack, unpack

from hemoe_sk.persistence import ModelFileError, UntrustedTypeError, load

X, Y = data()
SEED = 0
#: Mutations per model and kind, and a wall-clock cap per kind (seconds).
BUDGET = {"flip": 60, "truncate": 25, "swap": 25, "swap-declared": 25, "json": 150}
SECONDS = 4.0
#: Longest a single load may take (it found a float n_experts of 1e308).
LOAD_SECONDS = 5.0
#: Mutations that rewrite the digests as an attacker would: the result may be
#: another valid model, which must then predict cleanly.
_EDITS = ("json", "swap-declared")

_VALUES = [
    None, True, False, 0, 1, -1, 2, 3, 10**9, -(10**9), 2**63, 0.5, 1e308, -1e-308,
    1e9, 2.5, -3.0, "1000000000", "3",
    "", "meta", "cuda", "auto", "x" * 200, [], [0], [0, 1, 2], {}, {"$ref": 0},
    {"$ref": 10**6}, {"$class": "os:system"}, {"$class": "torch.optim.SGD"},
    {"$float": "nan"}, {"$float": "inf"}, {"$tuple": [10**6]}, {"$array": "arrays/0.npy"},
    {"$device": "meta"}, {"$objarray": {"shape": [2], "items": [1]}}, {"$dict": [[1]]},
]


@pytest.fixture(scope="module")
def models():
    fitted = fit_models()
    return {k: fitted[k] for k in ("tree", "lora", "reg", "mixae")}


def _outputs(est):
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X)
    if hasattr(est, "transform"):
        return est.transform(X)
    return est.predict(X)


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds):
    """Fail (instead of hanging the test run) when a load takes longer."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - Windows
        yield
        return

    def expired(*_):
        raise _Hang(f"loading took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _load(blob):
    with warnings.catch_warnings(), _deadline(LOAD_SECONDS):
        warnings.simplefilter("ignore")
        return load(io.BytesIO(blob))


def _leaves(value, path=()):
    """Paths to every scalar and container inside a JSON value."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))


def _set(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _mutations(blob, kind, rng):
    if kind == "flip":
        raw = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(len(raw))
            raw[pos] ^= 1 << rng.randint(8)
        return bytes(raw)
    if kind == "truncate":
        return blob[: rng.randint(len(blob))]
    members, meta = unpack(blob)
    if kind in ("swap", "swap-declared"):
        names = sorted(n for n in members if n != "manifest.json")
        a, b = rng.choice(len(names), size=2, replace=False)
        members[names[a]], members[names[b]] = members[names[b]], members[names[a]]
        return pack(members, meta, declare=kind == "swap-declared")
    paths = [p for p in _leaves(meta) if p]
    for _ in range(rng.randint(1, 3)):
        path = paths[rng.randint(len(paths))]
        try:
            _set(meta, path, json.loads(json.dumps(_VALUES[rng.randint(len(_VALUES))])))
        except (TypeError, KeyError, IndexError):
            pass
    try:  # an attacker fixes the digests, where the member table survived
        return pack(members, meta)
    except (TypeError, AttributeError, KeyError):
        return pack(members, meta, declare=False)


@pytest.mark.parametrize("kind", sorted(BUDGET))
def test_mutated_files_are_refused_cleanly_or_predict(models, kind):
    rng = np.random.RandomState(SEED)
    counts = {"refused": 0, "identical": 0, "other model": 0}
    start = time.perf_counter()
    for name, (est, blob) in models.items():
        expected = _outputs(est)
        np.testing.assert_array_equal(_outputs(_load(blob)), expected)  # unmutated
        for i in range(BUDGET[kind]):
            if time.perf_counter() - start > SECONDS:
                break
            mutated = _mutations(blob, kind, rng)
            try:
                loaded = _load(mutated)
            except (ModelFileError, UntrustedTypeError):
                counts["refused"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the failure this test finds
                pytest.fail(f"{name} {kind} #{i}: {type(exc).__name__}: {exc}")
            try:
                got = _outputs(loaded)
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{name} {kind} #{i} loaded but fails: {exc!r:.300}")
            if np.array_equal(got, expected):
                counts["identical"] += 1
                continue
            assert kind in _EDITS, f"{name} {kind} #{i}: damaged bytes changed outputs"
            counts["other model"] += 1
            assert np.isfinite(got).all(), f"{name} {kind} #{i}"
            if hasattr(loaded, "predict_proba"):
                np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    assert counts["refused"] > 0
    if kind == "json":  # not vacuous: some edited manifests still load
        assert counts["identical"] + counts["other model"] > 0, counts
    print(kind, counts)
