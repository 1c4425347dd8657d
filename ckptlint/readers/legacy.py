"""The legacy `torch.save` format (`_use_new_zipfile_serialization=False`, torch < 1.6).

The file is a run of pickles — magic number, protocol version, system info, the object, the
list of storage keys — followed by each storage as an 8-byte element count and its bytes. The
pickles go through the restricted unpickler; of the storages only the counts are read (seeking
over the bytes), to refuse a truncated file or one whose counts contradict its pickle.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO, Any, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers import formats, statedict, unpickler
from ckptlint.readers.base import (MAX_PICKLE_BYTES, CheckpointRead, UnsafeCheckpointError,
                                   read_head, unreadable)
from ckptlint.readers.files import open_regular, size_of
from ckptlint.readers.pickled import StorageRef

FORMAT = formats.TORCH_LEGACY
MAGIC_NUMBER = formats.TORCH_MAGIC_NUMBER
PROTOCOL_VERSION = 1001


sniff = formats.torch_legacy
is_tar = formats.is_tar


class _Bounded:
    """A read-only view of a file that refuses to go more than `limit` bytes past its start."""

    def __init__(self, handle: IO[bytes], limit: int):
        self._handle, self._left = handle, limit

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._handle.readline(size)
        self._left -= len(data)
        return data


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    where = str(path)
    if is_tar(read_head(path)):
        raise CheckpointError(where, "is a tar archive, which torch.load reads as a checkpoint "
                                     "in the pre-1.0 tar format; ckptlint does not read that "
                                     "format: re-save it with a current torch")
    try:
        with open_regular(path) as handle:
            parsed = parse(handle, where, state_dict_key)
    except OSError as exc:
        raise unreadable(path, exc) from None
    return CheckpointRead(statedict.signature(parsed.state, where, ties_recorded=True), FORMAT,
                          parsed.note)


@record
class Parsed:
    """One legacy file read as `read` reads it: the located state dict, the note, where each
    storage's bytes start in the file, and the storages read through a view."""

    state: Mapping[str, Any]
    note: str
    offsets: Mapping[str, int]
    viewed: frozenset[str]


def parse(handle: IO[bytes], where: str, state_dict_key: str | None = None) -> Parsed:
    """Everything `read` checks, in its order, on an open file (the tar check aside)."""
    root, storages, keys = _pickles(handle, where)
    offsets = _check_storages(handle, keys, storages.storages,
                              size_of(handle), where)
    state, note = statedict.locate(root, where, state_dict_key)
    return Parsed(state, note, offsets, storages.viewed)


def _pickles(handle: IO[bytes], where: str) -> tuple[Any, unpickler.Unpickled, list]:
    """The saved object, its storage records and its storage keys, read pickle by pickle."""
    stream = _Bounded(handle, MAX_PICKLE_BYTES)
    header = [_load(stream, where, "header", "none").value for _ in range(3)]
    magic, protocol, sys_info = header
    if magic != MAGIC_NUMBER or protocol != PROTOCOL_VERSION or not isinstance(sys_info, dict):
        raise CheckpointError(where, "has a legacy torch.save header ckptlint does not know "
                                     f"(protocol {protocol!r})")
    if sys_info.get("little_endian") is False:
        raise CheckpointError(where, "was saved on a big-endian machine, which ckptlint does "
                                     "not read")
    root = _load(stream, where, "object pickle", "legacy")
    keys = _load(stream, where, "storage list", "none").value
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(where, "has a malformed storage list after its object pickle")
    return root.value, root, keys


def _load(stream: _Bounded, where: str, what: str, ids: unpickler.Ids) -> unpickler.Unpickled:
    try:
        return unpickler.load(stream, ids=ids)  # type: ignore[arg-type]
    except unpickler.PickleRefused as exc:
        raise UnsafeCheckpointError(where, exc.name, f"its {what}") from None
    except unpickler.PickleInvalid as exc:
        raise CheckpointError(where, f"its {what} {exc}") from None


def _check_storages(handle: IO[bytes], keys: list, refs: dict[str, StorageRef], size: int,
                    where: str) -> dict[str, int]:
    """Walk the storage section by its counts only; it must fit the file and the pickle.
    Returns where each storage's bytes start.

    torch.load reads each listed storage into the one its pickle declared, and fails when the
    key is unknown or the count differs.
    """
    offsets: dict[str, int] = {}
    for key in keys:
        ref = refs.get(key)
        if ref is None:
            raise CheckpointError(where, f"lists storage `{key}`, which its pickle never "
                                         "declares: torch.load would fail")
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(where, f"is truncated: storage `{key}` is missing")
        (count,) = struct.unpack("<q", head)
        if count != ref.numel:
            raise CheckpointError(where, f"storage `{key}` holds {count} elements but the pickle "
                                         "declares another count: the file lies about its data")
        nbytes = ref.nbytes
        if handle.tell() + nbytes > size:
            raise CheckpointError(where, f"is truncated: storage `{key}` runs past the end of "
                                         "the file")
        offsets[key] = handle.tell()  # a key listed twice: torch fills it twice, last wins
        handle.seek(nbytes, os.SEEK_CUR)
    return offsets
