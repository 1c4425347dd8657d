"""safetensors files: the 8-byte header length and the JSON header, nothing after it.

The header is parsed here rather than with `safe_open`, which maps the whole file. Each entry's
byte range is checked against its shape and the file's size, so a header that lies about the
data (or a file cut short after its header) is refused instead of trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ckptlint.errors import CheckpointError
from ckptlint.ftypes import Signature, TensorSpec
from ckptlint.readers import statedict
from ckptlint.readers.base import MAX_HEADER_BYTES, CheckpointRead
from ckptlint.readers.dtypes import ITEMSIZE, SAFETENSORS_DTYPES

FORMAT = "safetensors"


def sniff(path: Path, head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    header, data_size = read_header(path)
    metadata = header.pop("__metadata__", None)
    tensors = {key: _spec(key, entry, str(path)) for key, entry in header.items()}
    _check_offsets(header, str(path), data_size)
    tied = _tied(metadata, tensors)
    note = ""
    if state_dict_key:
        tensors = statedict.under(tensors, state_dict_key, str(path))
        tied = statedict.under_tied(tied, state_dict_key)
        note = f"using the keys under `{state_dict_key}.` (as asked)"
    return CheckpointRead(Signature(tensors=tensors, has_metadata=False, source="checkpoint"),
                          FORMAT, note, tied=tied)


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the size of the data region after it.

    The declared length is checked against the file before anything is read or allocated.
    """
    where = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(where, f"is {size} bytes, too short for a safetensors "
                                             "header")
            length = int.from_bytes(prefix, "little")
            if length > MAX_HEADER_BYTES or length > size - 8:
                raise CheckpointError(where, f"declares a {length}-byte safetensors header, more "
                                             f"than the file ({size} bytes) or the "
                                             f"{MAX_HEADER_BYTES >> 20} MiB safetensors allows")
            raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(where, f"cannot be read ({exc.strerror or exc})") from None
    return _parse(raw, where), size - 8 - length


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise CheckpointError(where, "has a safetensors header that names a key twice")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(where, f"has a safetensors header that is not valid JSON "
                                     f"({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise CheckpointError(where, "has a safetensors header that is not a JSON object")
    return header


def _spec(key: str, entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict):
        raise CheckpointError(where, f"has a malformed header entry for tensor `{key}`")
    dtype = SAFETENSORS_DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise CheckpointError(where, f"tensor `{key}` has dtype {entry.get('dtype')!r}, which "
                                     "ckptlint does not know")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(where, f"tensor `{key}` has a malformed shape {shape!r}")
    return TensorSpec(dtype, tuple(shape))


def _check_offsets(header: Mapping[str, Any], where: str, data_size: int) -> None:
    """Each byte range must lie in the data region and match its tensor's shape and dtype."""
    for key, entry in header.items():
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)):
            raise CheckpointError(where, f"tensor `{key}` has malformed data_offsets")
        begin, end = offsets
        numel = 1
        for d in entry["shape"]:
            numel *= d
        expected = numel * ITEMSIZE[SAFETENSORS_DTYPES[entry["dtype"]]]
        if not 0 <= begin <= end <= data_size or end - begin != expected:
            raise CheckpointError(where, f"tensor `{key}` {entry['shape']} claims bytes "
                                         f"{begin}..{end} of a {data_size}-byte data region "
                                         f"(it needs {expected}): the header lies about the "
                                         "data")


def _tied(metadata: Any, tensors: Mapping[str, TensorSpec]) -> dict[str, str]:
    """Keys `save_model` dropped as duplicates: it records `dropped -> kept` in the metadata."""
    if not isinstance(metadata, dict):
        return {}
    return {k: v for k, v in metadata.items()
            if isinstance(v, str) and k not in tensors and v in tensors}
