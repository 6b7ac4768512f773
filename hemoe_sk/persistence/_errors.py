"""The errors of the safe format and the limits loading enforces.

Every limit is a module constant, documented in ``docs/persistence.rst``
(the threat model); tests and the loader read them from here.
"""

from __future__ import annotations

__all__ = [
    "MAX_CENTRAL_DIRECTORY",
    "MAX_COMPRESSION_RATIO",
    "MAX_MANIFEST",
    "MAX_MEMBERS",
    "MAX_NPY_HEADER",
    "MAX_N_JOBS",
    "MAX_OBJECTS",
    "MAX_SIZE",
    "MAX_TENSOR_HEADER",
    "RATIO_CHECKED_ABOVE",
    "ModelFileError",
    "ModelVersionWarning",
    "UnsupportedComponentError",
    "UntrustedTypeError",
    "fail",
]

#: Default cap on the uncompressed size of a file, in bytes (``load``'s
#: ``max_size``); checked on the sizes the zip declares before reading, and
#: enforced on the bytes actually inflated.
MAX_SIZE = 8 * 2**30
#: Most members a file may have; read from the zip's end-of-central-directory
#: record before :mod:`zipfile` parses a single entry.
MAX_MEMBERS = 32_768
#: Largest central directory (the zip's table of members) accepted, in bytes.
MAX_CENTRAL_DIRECTORY = 8 * 2**20
#: Largest ``manifest.json``, in bytes.
MAX_MANIFEST = 2 * 2**20
#: Most object records in a manifest.
MAX_OBJECTS = 50_000
#: Largest JSON header of a ``.safetensors`` member, in bytes.
MAX_TENSOR_HEADER = 2**20
#: Largest header of a ``.npy`` member, in bytes.
MAX_NPY_HEADER = 10_000
#: Members larger than this (uncompressed) may not compress better than
#: :data:`MAX_COMPRESSION_RATIO` to 1 (float weights compress about 1.1:1).
RATIO_CHECKED_ABOVE = 2**20
MAX_COMPRESSION_RATIO = 200
#: Largest ``n_jobs`` a scikit-learn part may carry (threads at predict).
MAX_N_JOBS = 256


class ModelFileError(ValueError):
    """The file is not a readable hemoe_sk model (corrupted, truncated,
    tampered with, malicious, or written by another format version)."""


class UntrustedTypeError(TypeError):
    """The file names a class that hemoe_sk's table does not know and that
    was not passed in ``trusted=``."""


class UnsupportedComponentError(TypeError):
    """:func:`save` met an object the safe format cannot express."""


class ModelVersionWarning(UserWarning):
    """The file was written under other library versions than the running
    ones; predictions may differ."""


def fail(path, why):
    """The :class:`ModelFileError` of ``path``, saying ``why``."""
    return ModelFileError(f"Cannot load {path!r} as a hemoe_sk model: {why}")
