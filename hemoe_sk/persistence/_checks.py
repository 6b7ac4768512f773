"""Archive checks: everything verified before a byte of a member is used.

* the zip's end-of-central-directory record is read first: more than
  :data:`MAX_MEMBERS` members or a central directory over
  :data:`MAX_CENTRAL_DIRECTORY` bytes is refused before :mod:`zipfile`
  parses a single entry;
* member names from a fixed pattern (no paths), no duplicates (one linear
  pass), sizes within ``max_size``, compression ratios within
  :data:`MAX_COMPRESSION_RATIO`, stored or deflated only, no encryption;
* the manifest within :data:`MAX_MANIFEST` bytes and :data:`MAX_OBJECTS`
  records, of this format and version;
* a member's declared size (zip and manifest) must equal what its own header
  implies (``.npy``: dtype x shape; ``.safetensors``: its tensors' byte
  ranges) *before* its body is inflated, and no read inflates more than the
  declared size; then the SHA-256 digest.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import os
import re
import struct
import zipfile

import numpy as np

from ._errors import (
    MAX_CENTRAL_DIRECTORY,
    MAX_COMPRESSION_RATIO,
    MAX_MANIFEST,
    MAX_MEMBERS,
    MAX_NPY_HEADER,
    MAX_OBJECTS,
    MAX_SIZE,
    MAX_TENSOR_HEADER,
    RATIO_CHECKED_ABOVE,
    fail,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "MemberReader",
    "descr",
    "first_line",
    "open_archive",
    "shown_name",
]

#: Version of the file layout. 2: explicit state codecs, safetensors weights
#: (hemoe_sk 0.2); 1: generic object graph, torch pickles (hemoe_sk 0.1).
FORMAT_VERSION = 2
FORMAT_NAME = "hemoe_sk-safe-model"
MANIFEST = "manifest.json"
_MEMBER_NAME = re.compile(r"(arrays/[0-9]{1,9}\.npy|tensors/[0-9]{1,9}\.safetensors)\Z")

#: safetensors dtype codes -> (torch dtype name, item size).
_ST_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
_MAX_DIM = 2**40
#: What zipfile raises on a damaged archive (a flipped bit in a header can
#: ask for an unknown zip version: NotImplementedError).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    struct.error,
)


def json_loads(text, **kwargs):
    """``json.loads`` with the garbage collector paused: a manifest of many
    small containers otherwise triggers a collection every few hundred."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text, **kwargs)
    finally:
        if enabled:
            gc.enable()


def first_line(exc):
    text = str(exc)
    return text.splitlines()[0] if text else ""


def descr(dtype):
    """JSON form of a numpy dtype as written in ``.npy`` headers."""
    return json.loads(json.dumps(np.lib.format.dtype_to_descr(dtype)))


def shown_name(path):
    shown = (
        path
        if isinstance(path, (str, os.PathLike))
        else getattr(path, "name", "<file>")
    )
    return os.fspath(shown) if isinstance(shown, os.PathLike) else shown


# -- the zip's own table, read before zipfile parses it -----------------------


def _end_record(f):
    """(member count, central directory size) from the end records."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    tail_len = min(size, 22 + 65_535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < 22:
        raise ValueError("no end of central directory record")
    count, cd_size = struct.unpack("<xxxxxxxxHI", tail[pos + 2 : pos + 16])[0:2]
    if count == 0xFFFF or cd_size == 0xFFFFFFFF:  # zip64: read its own record
        loc = pos - 20
        if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
            raise ValueError("bad zip64 locator")
        (offset,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
        if offset > size - 56:
            raise ValueError("bad zip64 record offset")
        f.seek(offset)
        record = f.read(56)
        if record[:4] != b"PK\x06\x06":
            raise ValueError("bad zip64 record")
        count, cd_size = struct.unpack("<QQ", record[32:48])
    return count, cd_size


def _precheck(path, shown):
    owned = isinstance(path, (str, os.PathLike))
    f = open(path, "rb") if owned else path
    try:
        start = None if owned else f.tell()
        count, cd_size = _end_record(f)
        if start is not None:
            f.seek(start)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, struct.error) as exc:
        raise fail(
            shown,
            "not a hemoe_sk model file, or the file is truncated or corrupted "
            f"({exc}).",
        ) from None
    finally:
        if owned:
            f.close()
    if count > MAX_MEMBERS:
        raise fail(shown, f"it has {count} members (at most {MAX_MEMBERS}).")
    if cd_size > MAX_CENTRAL_DIRECTORY:
        raise fail(
            shown,
            f"its central directory is {cd_size} bytes (at most "
            f"{MAX_CENTRAL_DIRECTORY}).",
        )


def open_archive(path, max_size=None):
    """(zipfile, manifest, shown name) of ``path``, after every structural
    check; a clear :class:`ModelFileError` otherwise."""
    shown = shown_name(path)
    max_size = MAX_SIZE if max_size is None else int(max_size)
    if not isinstance(path, (str, os.PathLike)) and not hasattr(path, "seek"):
        raise TypeError("path must be a path or a seekable binary file object.")
    _precheck(path, shown)
    try:
        zf = zipfile.ZipFile(path, "r")
    except FileNotFoundError:
        raise
    except _ZIP_ERRORS as exc:
        raise fail(
            shown,
            "not a hemoe_sk model file, or the file is truncated or corrupted "
            f"({exc}).",
        ) from None
    try:
        manifest = _check_archive(zf, shown, max_size)
    except BaseException:
        zf.close()
        raise
    return zf, manifest, shown


def _check_members(infos, shown, max_size):
    if len(infos) > MAX_MEMBERS:
        raise fail(shown, f"it has {len(infos)} members (at most {MAX_MEMBERS}).")
    seen, dupes = set(), set()
    for info in infos:
        (dupes if info.filename in seen else seen).add(info.filename)
    if dupes:
        raise fail(shown, f"duplicate members {sorted(dupes)[:5]}.")
    total = sum(i.file_size for i in infos)
    if total > max_size:
        raise fail(
            shown,
            f"it would uncompress to {total} bytes, more than max_size={max_size} "
            "(pass a larger max_size to load() if you expect a model this big).",
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise fail(shown, f"member {info.filename!r} is encrypted.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise fail(
                shown, f"member {info.filename!r} uses an unsupported compression."
            )
        if (
            info.file_size > RATIO_CHECKED_ABOVE
            and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
        ):
            raise fail(
                shown,
                f"member {info.filename!r} would inflate {info.compress_size} bytes "
                f"to {info.file_size} (more than {MAX_COMPRESSION_RATIO}:1).",
            )


def _read_manifest(zf, shown):
    info = zf.getinfo(MANIFEST)
    if info.file_size > MAX_MANIFEST:
        raise fail(shown, f"its {MANIFEST} is larger than {MAX_MANIFEST} bytes.")
    try:
        with zf.open(info) as f:
            raw = f.read(MAX_MANIFEST + 1)
        if len(raw) > MAX_MANIFEST:
            raise ValueError(f"{MANIFEST} inflates beyond {MAX_MANIFEST} bytes")
        return json_loads(raw.decode("utf-8"))
    except RecursionError:
        raise fail(shown, f"its {MANIFEST} is nested too deeply.") from None
    except Exception as exc:  # noqa: BLE001 - any bad manifest
        raise fail(shown, f"the file is truncated or corrupted ({exc}).") from None


def _check_version(manifest, shown):
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise fail(shown, "it was not written by hemoe_sk.save.")
    version = manifest.get("format_version")
    if version == 1:
        raise fail(
            shown,
            "it was written by hemoe_sk 0.1 (format version 1), which this version no "
            "longer reads: format 1 could name any torch.nn or torch.optim class. Load "
            "it under hemoe_sk 0.1 and save it with joblib (a file you trust), or "
            "refit the model and save it again.",
        )
    if isinstance(version, bool) or not isinstance(version, int):
        raise fail(shown, f"unknown format version {version!r:.40}.")
    if version > FORMAT_VERSION:
        raise fail(
            shown,
            f"it uses format version {version!r}; this hemoe_sk reads up to "
            f"{FORMAT_VERSION}. Upgrade hemoe_sk.",
        )
    if version != FORMAT_VERSION:
        raise fail(shown, f"unknown format version {version!r}.")


def _check_archive(zf, shown, max_size):
    infos = zf.infolist()
    _check_members(infos, shown, max_size)
    if MANIFEST not in zf.NameToInfo:
        raise fail(shown, f"it has no {MANIFEST} (not written by hemoe_sk.save).")
    manifest = _read_manifest(zf, shown)
    _check_version(manifest, shown)
    for info in infos:
        if info.filename != MANIFEST and not _MEMBER_NAME.match(info.filename):
            raise fail(shown, f"unexpected member name {info.filename!r:.100}.")
    objects = manifest.get("objects")
    if not isinstance(objects, list):
        raise fail(shown, "the manifest has no object table.")
    if len(objects) > MAX_OBJECTS:
        raise fail(shown, f"it has {len(objects)} objects (at most {MAX_OBJECTS}).")
    members = manifest.get("members")
    if not isinstance(members, dict):
        raise fail(shown, "the manifest has no member table.")
    if len(members) > MAX_MEMBERS:
        raise fail(shown, f"the manifest lists {len(members)} members.")
    in_zip = {i.filename: i for i in infos if i.filename != MANIFEST}
    unlisted = sorted(set(in_zip) - set(members))
    if unlisted:
        raise fail(shown, f"members {unlisted[:5]} are not listed in the manifest.")
    for name, entry in members.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise fail(shown, f"the manifest entry of {name!r:.100} is malformed.")
        if name in in_zip and in_zip[name].file_size != size:
            raise fail(
                shown,
                f"member {name!r} declares {in_zip[name].file_size} bytes in the zip "
                f"and {size} in the manifest.",
            )
    return manifest


# -- members --------------------------------------------------------------------


class MemberReader:
    """Reads arrays and tensors, each checked against its header first."""

    def __init__(self, zf, members, shown):
        self.zf = zf
        self.members = members
        self.shown = shown
        self.used = set()  # a file references each member once
        self.open_heads = {}  # name -> (open member, its header's bytes)

    def close(self):
        """Close the members whose header was read and whose body was not."""
        while self.open_heads:
            self.open_heads.popitem()[1][0].close()

    def _info(self, name, suffix):
        info = self.members.get(name) if isinstance(name, str) else None
        if not isinstance(info, dict):
            raise fail(self.shown, f"member {name!r:.100} is not listed in the manifest.")
        if not name.endswith(suffix):
            raise fail(self.shown, f"{name!r} is not a {suffix} member.")
        if (name, suffix) in self.used:
            raise fail(
                self.shown,
                f"member {name!r} is referenced twice (save writes each array and "
                "state dict once; a shared member would multiply the work of loading).",
            )
        self.used.add((name, suffix))
        return info

    def _open(self, name):
        try:
            return self.zf.open(name)
        except KeyError:
            raise fail(
                self.shown, f"member {name!r} is missing (truncated file?)."
            ) from None
        except _ZIP_ERRORS as exc:
            raise fail(self.shown, f"member {name!r} is corrupted ({exc}).") from None

    def _read(self, f, n, name):
        try:
            return f.read(n)
        except _ZIP_ERRORS as exc:
            raise fail(self.shown, f"member {name!r} is corrupted ({exc}).") from None

    def _finish(self, f, head, info, name):
        """The whole member: ``head`` plus the rest, at most the declared size,
        checked against the size and the digest."""
        size = info["size"]
        data = head + self._read(f, size - len(head) + 1, name)
        if len(data) != size:
            raise fail(
                self.shown,
                f"member {name!r} holds {len(data)} bytes where {size} are declared.",
            )
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise fail(self.shown, f"member {name!r} does not match its checksum.")
        return data

    # -- numpy ----------------------------------------------------------------
    def array(self, name):
        info = self._info(name, ".npy")
        with self._open(name) as f:
            head = self._read(f, min(info["size"], MAX_NPY_HEADER + 16), name)
            buf = io.BytesIO(head)
            try:
                version = np.lib.format.read_magic(buf)
                read_header = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = read_header(buf, max_header_size=MAX_NPY_HEADER)
            except Exception as exc:  # noqa: BLE001 - any bad header
                raise fail(
                    self.shown, f"array {name!r} has a bad header ({exc})."
                ) from None
            if dtype.hasobject:
                raise fail(
                    self.shown,
                    f"array {name!r} was refused: it holds Python objects (pickle).",
                )
            if descr(dtype) != info.get("dtype") or list(shape) != info.get("shape"):
                raise fail(
                    self.shown,
                    f"array {name!r} is {descr(dtype)} {list(shape)} but the manifest "
                    f"declares {info.get('dtype')!r:.60} {info.get('shape')!r:.60}.",
                )
            if buf.tell() + math.prod(shape) * dtype.itemsize != info["size"]:
                raise fail(
                    self.shown, f"array {name!r} does not match its declared shape."
                )
            start = buf.tell()
            data = self._finish(f, head, info, name)
        # the header is parsed and checked: the body is dtype x shape bytes
        flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)
        return flat.reshape(shape, order="F" if fortran else "C").copy(
            order="F" if fortran else "C"
        )

    # -- safetensors -------------------------------------------------------------
    def _parse_header(self, raw, body_size, name):
        def no_duplicates(pairs):
            keys = [k for k, _ in pairs]
            if len(set(keys)) != len(keys):
                raise ValueError("duplicate keys")
            return dict(pairs)

        header = json_loads(raw, object_pairs_hook=no_duplicates)
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(
            isinstance(v, str) for v in meta.values()
        ):
            raise ValueError("bad __metadata__")
        spans, out = [], {}
        for key, entry in header.items():
            if not isinstance(entry, dict) or set(entry) != {
                "dtype",
                "shape",
                "data_offsets",
            }:
                raise ValueError(f"bad entry {key!r:.60}")
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
            if dtype not in _ST_DTYPES:
                raise ValueError(f"unsupported dtype {dtype!r:.20}")
            if not isinstance(shape, list) or not all(
                type(s) is int and 0 <= s <= _MAX_DIM for s in shape
            ):
                raise ValueError(f"bad shape of {key!r:.60}")
            if not (
                isinstance(offsets, list)
                and len(offsets) == 2
                and all(type(o) is int for o in offsets)
            ):
                raise ValueError(f"bad offsets of {key!r:.60}")
            torch_dtype, itemsize = _ST_DTYPES[dtype]
            if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
                raise ValueError(f"{key!r:.60} does not match its byte range")
            spans.append(tuple(offsets))
            out[key] = {"dtype": torch_dtype, "shape": shape}
        end = 0
        for start, stop in sorted(spans):
            if start != end:
                raise ValueError("tensor byte ranges overlap or leave gaps")
            end = stop
        if end != body_size:
            raise ValueError("the tensors do not fill the member")
        return out

    def tensor_header(self, name):
        """``{key: {"dtype", "shape"}}`` from the real header of a weights
        member, verified against its size and the manifest, without reading
        (or allocating) the weights."""
        info = self._info(name, ".safetensors")
        declared = info.get("tensors")
        if not isinstance(declared, dict):
            raise fail(self.shown, f"{name!r} is not a tensor member.")
        f = self._open(name)
        try:
            first = self._read(f, 8, name)
            n = int.from_bytes(first, "little") if len(first) == 8 else -1
            if not 0 < n <= min(info["size"] - 8, MAX_TENSOR_HEADER):
                raise ValueError(f"bad header length (at most {MAX_TENSOR_HEADER} bytes)")
            raw = self._read(f, n, name)
            header = self._parse_header(raw, info["size"] - 8 - n, name)
        except (ValueError, RecursionError, UnicodeDecodeError) as exc:
            f.close()
            raise fail(
                self.shown,
                f"tensor member {name!r} was refused: not a valid safetensors file "
                f"({type(exc).__name__}: {first_line(exc)}).",
            ) from None
        except BaseException:
            f.close()
            raise
        # kept open at the end of the header: tensors() reads on from there
        self.open_heads[name] = (f, first + raw)
        if set(header) != set(declared):
            raise fail(
                self.shown, f"{name!r} holds other tensors than the manifest lists."
            )
        for key, real in header.items():
            if declared[key] != real:
                raise fail(
                    self.shown,
                    f"tensor {key!r} in {name!r} is {real['dtype']} {real['shape']} "
                    f"but the manifest declares {declared[key]!r:.80}.",
                )
        return header

    def tensors(self, name, header):
        """The tensors of a member whose ``header`` was verified."""
        from safetensors.torch import load as st_load

        info = self.members[name]
        f, head = self.open_heads.pop(name, (None, b""))
        with f if f is not None else self._open(name) as f:
            data = self._finish(f, head, info, name)
        try:
            tensors = st_load(data)
        except Exception as exc:  # noqa: BLE001 - pickles, lies, garbage
            raise fail(
                self.shown,
                f"tensor member {name!r} was refused: not a valid safetensors file "
                f"({type(exc).__name__}: {first_line(exc)}).",
            ) from None
        got = {
            k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
            for k, t in tensors.items()
        }
        if got != header:
            raise fail(self.shown, f"{name!r} changed between two reads.")
        return tensors
