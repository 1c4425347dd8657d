"""safetensors files: the 8-byte header length and the JSON header, nothing after it.

The header is parsed here rather than with `safe_open`, which maps the whole file, and checked
as the Rust reader checks it (safetensors' `Metadata::validate`), so a file it refuses is
refused here too: no duplicate names (Python's json keeps the last one), `__metadata__` only
as a table of strings, no lone surrogates, the byte ranges sorted by offset tiling the data
region exactly (no gap, no overlap, no trailing bytes), each as long as its shape needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from ckptlint.core.dtypes import ITEMSIZE, SAFETENSORS_DTYPES, shape_problem
from ckptlint.core.errors import CheckpointError
from ckptlint.core.keys import MAX_KEYS
from ckptlint.core.record import record
from ckptlint.core.records import Signature, TensorSpec
from ckptlint.readers import formats
from ckptlint.readers.base import MAX_HEADER_BYTES, CheckpointRead, unreadable
from ckptlint.readers.files import open_regular, size_of

FORMAT = formats.SAFETENSORS
METADATA = "__metadata__"
_U64 = 2**64 - 1  # the Rust reader's shapes and offsets are `usize`
_SURROGATES = range(0xD800, 0xE000)


sniff = formats.safetensors


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    try:
        with open_regular(path) as handle:
            return parse(handle, str(path), state_dict_key).read
    except OSError as exc:
        raise unreadable(path, exc) from None


@record
class Parsed:
    """One file read as `read` reads it, and where each tensor's bytes lie in the file (key as
    `read` names it -> absolute byte range), for `readers.data`."""

    read: CheckpointRead
    spans: Mapping[str, tuple[int, int]]


def parse(handle: BinaryIO, where: str, state_dict_key: str | None = None) -> Parsed:
    """Everything `read` checks, on an open file; no tensor byte is read."""
    header, data_size = header_of(handle, where)
    metadata = _metadata(header.pop(METADATA, None), where)
    if len(header) > MAX_KEYS:
        raise CheckpointError(where, f"names {len(header):,} tensors, more than the "
                                     f"{MAX_KEYS:,} ckptlint reads")
    tensors = {key: _spec(key, entry, where) for key, entry in header.items()}
    _check_offsets(header, tensors, where, data_size)
    start = size_of(handle) - data_size
    spans = {k: (start + e["data_offsets"][0], start + e["data_offsets"][1])
             for k, e in header.items()}
    tied = _tied(metadata, tensors)
    note = ""
    if state_dict_key:
        from ckptlint.readers import statedict  # (and the pickle records): only when asked

        tensors = statedict.under(tensors, state_dict_key, where)
        tied = statedict.under_tied(tied, state_dict_key)
        spans = statedict.under(spans, state_dict_key, where)
        note = f"using the keys under `{state_dict_key}.` (as asked)"
    signature = Signature(tensors=tensors, has_metadata=False, source="checkpoint")
    return Parsed(CheckpointRead(signature, FORMAT, note, tied=tied), spans)


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the size of the data region after it."""
    try:
        with open_regular(path) as handle:
            return header_of(handle, str(path))
    except OSError as exc:
        raise unreadable(path, exc) from None


def header_of(handle: BinaryIO, where: str) -> tuple[dict[str, Any], int]:
    """`read_header` on an open file: the declared length is checked against the file before
    anything is read or allocated."""
    size = size_of(handle)
    handle.seek(0)
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise CheckpointError(where, f"is {size} bytes, too short for a safetensors header")
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER_BYTES or length > size - 8:
        raise CheckpointError(where, f"declares a {length}-byte safetensors header, more "
                                     f"than the file ({size} bytes) or the "
                                     f"{MAX_HEADER_BYTES:,} bytes safetensors allows")
    raw = handle.read(length)
    return _parse(raw, where), size - 8 - length


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise CheckpointError(where, f"has a safetensors header that names `{key}` "
                                             "twice: readers disagree on which one counts")
            if _lone_surrogate(key):
                raise _surrogate(where)
            found[key] = value
        return found

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique,
                            parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(where, f"has a safetensors header that is not valid JSON "
                                     f"({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise CheckpointError(where, "has a safetensors header that is not a JSON object")
    return header


def _lone_surrogate(text: str) -> bool:
    # json turns "\ud800" into a lone surrogate; the Rust reader refuses such a header
    return not text.isascii() and any(ord(c) in _SURROGATES for c in text)


def _surrogate(where: str) -> CheckpointError:
    return CheckpointError(where, "has a safetensors header with a lone surrogate escape "
                                  "(\\ud800-\\udfff), which the safetensors reader refuses")


def _metadata(table: Any, where: str) -> dict[str, str]:
    """The `__metadata__` table: null or strings only, as the Rust reader insists."""
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise CheckpointError(where, "has a `__metadata__` entry that is not a table of strings "
                                     "(a tensor by that name is refused by safetensors)")
    if any(_lone_surrogate(v) for v in table.values()):
        raise _surrogate(where)
    return table


def _spec(key: str, entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict):
        raise CheckpointError(where, f"has a malformed header entry for tensor `{key}`")
    dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise CheckpointError(where, f"tensor `{key}` has dtype {entry.get('dtype')!r}, which "
                                     "ckptlint does not know")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= _U64 for d in shape):
        raise CheckpointError(where, f"tensor `{key}` has a malformed shape {shape!r}")
    problem = shape_problem(dtype, shape) or _overflow(shape, ITEMSIZE[dtype])
    if problem:
        raise CheckpointError(where, f"tensor `{key}` {problem}")
    return TensorSpec(dtype, tuple(shape))


def _overflow(shape: list[int], itemsize: int) -> str | None:
    """The Rust reader multiplies the dimensions in order in a u64 and refuses an overflow."""
    numel = 1
    for d in shape:
        numel *= d
        if numel > _U64:
            return f"has a shape {shape} whose size overflows safetensors' arithmetic"
    return None if numel * itemsize * 8 <= _U64 else (
        f"has a shape {shape} whose size in bits overflows safetensors' arithmetic")


def _check_offsets(header: Mapping[str, Any], tensors: Mapping[str, TensorSpec], where: str,
                   data_size: int) -> None:
    """The byte ranges, sorted, must tile the data region exactly, each as long as its tensor.

    As the Rust reader: ranges start where the previous one ended (empty tensors may share
    an offset), and the last one ends at the end of the file.
    """
    spans = []
    for key, entry in header.items():
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and 0 <= o <= _U64 for o in offsets)):
            raise CheckpointError(where, f"tensor `{key}` has malformed data_offsets")
        spans.append((offsets[0], offsets[1], key))
    cursor = 0
    for begin, end, key in sorted(spans):
        expected = tensors[key].numel * ITEMSIZE[tensors[key].dtype]
        if begin != cursor or end - begin != expected or end > data_size:
            raise CheckpointError(where, _offset_problem(key, header[key], begin, end, cursor,
                                                         expected, data_size))
        cursor = end
    if cursor != data_size:
        raise CheckpointError(where, f"has {data_size - cursor} bytes after its last tensor "
                                     "that no tensor claims, so safetensors refuses it")


def _offset_problem(key: str, entry: Mapping[str, Any], begin: int, end: int, cursor: int,
                    expected: int, data_size: int) -> str:
    if end > data_size or end - begin != expected:
        return (f"tensor `{key}` {entry['shape']} claims bytes {begin}..{end} of a "
                f"{data_size}-byte data region (it needs {expected}): the header lies about "
                "the data")
    if begin < cursor:
        return (f"tensor `{key}` claims bytes {begin}..{end}, which overlap another tensor's "
                "(aliased offsets: safetensors refuses them)")
    return (f"tensor `{key}` starts at byte {begin}, leaving bytes {cursor}..{begin} that no "
            "tensor claims, so safetensors refuses it")


def _tied(metadata: Mapping[str, str], tensors: Mapping[str, TensorSpec]) -> dict[str, str]:
    """Keys `save_model` dropped as duplicates: it records `dropped -> kept` in the metadata."""
    return {k: v for k, v in metadata.items() if k not in tensors and v in tensors}
