"""Safe save/load: explicit state on safetensors, a file that loading never runs.

``pickle``/``joblib`` files run code when they are loaded, so a model file
from an untrusted source is as dangerous as a script. :func:`save` writes an
estimator (fitted or not) to one zip file that holds only data:

``manifest.json``
    The format name and version, the library versions that wrote it, and
    every saved object as a JSON record: its class *name*, its parameters and
    its fitted state; numbers, strings and small containers inline, arrays
    and weights as references to the members below, each member with its
    size, SHA-256 digest and declared dtype and shape.
``arrays/<i>.npy``
    numpy arrays, read back with ``numpy.load(..., allow_pickle=False)``.
``tensors/<i>.safetensors``
    the state dict of one torch module in the `safetensors
    <https://huggingface.co/docs/safetensors>`_ format: a JSON header and raw
    little-endian tensor bytes, nothing that can execute.

The package is split by concern, as skops' ``io`` is:

``_codecs``
    the trusted-type table: what each supported class saves and how it is
    rebuilt (its *state codec*), and the torch module classes a net may name;
``_allowlist``
    what a file may set: a net's parameters, a module's arguments, each
    scikit-learn class's fitted attributes, device names;
``_writer``
    :func:`save`;
``_checks``
    the archive checks (member count from the zip's end record, names,
    sizes, compression ratios, manifest size and version) and the member
    readers that verify each header before inflating a body;
``_modules``
    torch modules: building on the meta device with arguments capped by the
    real tensors, the expert nets' recipes;
``_reader``
    manifest records back to objects;
``_validate``
    one pass over the decoded model (a tree, ids in range, widths that agree,
    finite scales) before :func:`load` returns it.

Anything outside the table is refused when saving
(:class:`UnsupportedComponentError`, with a pointer to joblib for files you
trust) and when loading (:class:`UntrustedTypeError`); any other problem of a
file is a :class:`ModelFileError` naming it. ``docs/persistence.rst`` states
the threat model and the limits.

Not saved: skorch training histories and optimizer states (a loaded model
predicts exactly as the saved one; ``fit`` retrains from scratch anyway).
"""

from __future__ import annotations

import warnings

import torch

from ._checks import FORMAT_VERSION, first_line, open_archive
from ._codecs import BY_NAME as _BY_NAME
from ._codecs import CODECS as _CODECS  # noqa: F401 - the 0.3 names, for tools
from ._codecs import codec_of as _codec_of  # noqa: F401
from ._codecs import default_trusted_types
from ._codecs import resolve as _resolve  # noqa: F401
from ._codecs import trusted_table as _trusted_table
from ._errors import (
    MAX_MEMBERS,
    MAX_SIZE,
    ModelFileError,
    ModelVersionWarning,
    UnsupportedComponentError,
    UntrustedTypeError,
    fail,
)
from ._reader import Reader
from ._validate import validate
from ._writer import save, versions

__all__ = [
    "FORMAT_VERSION",
    "MAX_MEMBERS",
    "MAX_SIZE",
    "ModelFileError",
    "ModelVersionWarning",
    "UnsupportedComponentError",
    "UntrustedTypeError",
    "default_trusted_types",
    "describe",
    "load",
    "save",
]


def describe(path):
    """What a model file holds, without building anything from it.

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    dict
        ``estimator`` (class name), ``format_version``, ``versions`` (of the
        libraries that wrote it), ``types`` (every class it names),
        ``untrusted_types`` (those outside :func:`default_trusted_types`,
        which :func:`load` needs in ``trusted=``), ``metadata`` (what
        :func:`save` was given), ``n_arrays``, ``n_tensor_files`` and
        ``size`` (uncompressed bytes of the members).
    """
    zf, manifest, _ = open_archive(path)
    zf.close()
    classes = manifest.get("classes", [])
    classes = [t for t in classes if isinstance(t, str)] if isinstance(classes, list) else []
    members = manifest["members"]
    return {
        "estimator": manifest.get("estimator"),
        "format_version": manifest.get("format_version"),
        "versions": manifest.get("versions", {}),
        "types": classes,
        "untrusted_types": [t for t in classes if t not in _BY_NAME],
        "metadata": manifest.get("metadata", {}),
        "n_arrays": sum(n.endswith(".npy") for n in members),
        "n_tensor_files": sum(n.endswith(".safetensors") for n in members),
        "size": sum(e["size"] for e in members.values()),
    }


def load(path, *, trusted=None, device=None, max_size=None):
    """Read an estimator written by :func:`save`.

    Nothing in the file is executed: classes come from hemoe_sk's table of
    state codecs (:func:`default_trusted_types`) plus ``trusted``, arrays
    are read with ``allow_pickle=False`` and weights from safetensors files,
    every header verified before its body is read, every module built on the
    meta device and compared with the real weights before memory is
    allocated. See ``docs/persistence.rst`` for the threat model.

    Parameters
    ----------
    path : str, path-like or binary file object
    trusted : list of classes, optional
        Your own classes the file names (the ones given to :func:`save`).
    device : str, optional
        Torch device for every net. By default each net goes back to the
        device it was saved from; a CUDA net on a machine without CUDA is
        put on the CPU with a warning.
    max_size : int, optional
        Largest uncompressed size accepted, in bytes; default
        :data:`MAX_SIZE`. Guards against zip bombs.

    Returns
    -------
    estimator
        A hemoe_sk estimator or a scikit-learn ``Pipeline``.

    Raises
    ------
    ModelFileError
        The file is truncated, corrupted, tampered with (a pickle payload, a
        lying header, a path in a member name, a size that does not match, a
        setting outside the allowlist, a model whose parts do not fit
        together), too large, or from another format version.
    UntrustedTypeError
        The file names a class outside the codec table and ``trusted``.

    Warns
    -----
    ModelVersionWarning
        When the file was written under other versions of hemoe_sk, torch,
        scikit-learn, skorch or numpy.
    RuntimeWarning
        When CUDA weights are loaded on the CPU.
    """
    if (
        device is not None
        and str(device).startswith("cuda")
        and not torch.cuda.is_available()
    ):
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    trusted = _trusted_table(trusted)
    zf, manifest, shown = open_archive(path, max_size)
    with zf:
        saved = manifest.get("versions")
        saved = saved if isinstance(saved, dict) else {}
        running = versions()
        differ = {k: (saved.get(k), v) for k, v in running.items() if saved.get(k) != v}
        if differ:
            listed = ", ".join(
                f"{k} {str(a)[:40]} (file) vs {b} (now)" for k, (a, b) in differ.items()
            )
            warnings.warn(
                f"{shown!r} was saved with other library versions: {listed}. The model "
                "loads, but its predictions may differ; re-save it under the current "
                "versions once checked.",
                ModelVersionWarning,
                stacklevel=2,
            )
        reader = Reader(zf, manifest, trusted, shown, device)
        try:
            root = reader.decode(manifest.get("root"))
            estimator = validate(root, shown, reader.built)
        except (ModelFileError, UntrustedTypeError):
            raise
        except RecursionError:
            raise fail(shown, "the object graph is nested too deeply.") from None
        except Exception as exc:  # noqa: BLE001 - never a deep traceback
            raise fail(shown, f"{type(exc).__name__}: {first_line(exc)}") from None
        finally:
            reader.members.close()
        if reader.cuda_fallback:
            warnings.warn(
                f"{shown!r} holds networks trained on CUDA, which is not available "
                "here; they were loaded on the CPU.",
                RuntimeWarning,
                stacklevel=2,
            )
    return estimator
