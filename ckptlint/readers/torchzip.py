"""The `torch.save` zip format (torch >= 1.6; .pt/.pth/.bin/.ckpt), read as torch reads it.

`zipdir` parses the archive once, refusing any layout two readers could see differently. Then,
as `torch.load` does: the first member's folder is the archive's name, `version` (or
`.data/version`) must be a format torch supports, `byteorder` and `.storage_alignment` must be
what torch accepts, and `data.pkl` goes through the restricted unpickler. Storage records
(`data/N`) are never opened: each one the pickle points to must be there with exactly the size
it declares, as torch requires, but its bytes are not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers import formats, statedict, unpickler, zipdir
from ckptlint.readers.base import (MAX_PICKLE_BYTES, CheckpointRead, UnsafeCheckpointError,
                                   unreadable)
from ckptlint.readers.files import open_regular
from ckptlint.readers.pickled import StorageRef, Unpickled

FORMAT = formats.TORCH_ZIP
# the file format versions torch 2.x reads (kMinSupportedFileFormatVersion..kMax...)
MIN_VERSION, MAX_VERSION = 1, 10
_SMALL_RECORD = 64  # version, byteorder, .storage_alignment: a few bytes each
_BYTEORDERS = (b"little", b"big")  # torch byte-swaps "big" storages: shapes do not change


sniff = formats.torch_zip


@record
class Parsed:
    """One archive read as `read` reads it: its members, the located state dict (key ->
    `TensorRecord` or other value), the note saying where it was, and the byte order of its
    storages (what `readers.data` needs to read them)."""

    archive: zipdir.Archive
    state: Mapping[str, Any]
    note: str
    big_endian: bool


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    where = str(path)
    try:
        with open_regular(path) as handle:
            parsed = parse(handle, where, state_dict_key)
    except OSError as exc:
        raise unreadable(path, exc) from None
    return CheckpointRead(statedict.signature(parsed.state, where, ties_recorded=True), FORMAT,
                          parsed.note)


def parse(handle: BinaryIO, where: str, state_dict_key: str | None = None) -> Parsed:
    """Everything `read` checks, in its order, on an open archive; storages are not read."""
    archive, value, big_endian = parse_object(handle, where)
    state, note = statedict.locate(value, where, state_dict_key)
    return Parsed(archive, state, note, big_endian)


def parse_object(handle: BinaryIO, where: str,
                 size: int | None = None) -> tuple[zipdir.Archive, Any, bool]:
    """The archive, the object its pickle holds (inert) and whether its storages are
    big-endian; `size` as in `zipdir.read_directory`."""
    archive = zipdir.read_directory(handle, where, size)
    big_endian = _check_torch_records(handle, archive, where)
    pickled = _unpickle(handle, archive, where)
    _check_storages(pickled.storages, archive, where)
    return archive, pickled.value, big_endian


def _check_torch_records(handle: BinaryIO, archive: zipdir.Archive, where: str) -> bool:
    """What torch.load checks before it unpickles anything, checked the same way; whether the
    storages are big-endian (torch byte-swaps them on load)."""
    if archive.has_exactly("constants.pkl"):
        raise CheckpointError(where, "is a TorchScript archive (torch.jit.save), which torch.load "
                                     "hands to torch.jit.load: ckptlint reads torch.save files; "
                                     "save the model's state_dict() instead")
    version = archive.find(".data/version") or archive.find("version")
    if version is None:
        raise CheckpointError(where, "has no `version` record, so torch.load refuses it (not a "
                                     "torch.save file?)")
    number = _stoull(_small(handle, version, where))
    if number is None or not MIN_VERSION <= number <= MAX_VERSION:
        raise CheckpointError(where, f"has file format version {number}, which torch does not "
                                     f"read (it reads {MIN_VERSION} to {MAX_VERSION})")
    byteorder = archive.find("byteorder")
    order = _small(handle, byteorder, where) if byteorder is not None else b"little"
    if order not in _BYTEORDERS:
        raise CheckpointError(where, "has a `byteorder` record that is neither little nor big, "
                                     "so torch.load refuses it")
    alignment = archive.find(".storage_alignment")
    if alignment is not None:
        try:
            int(_small(handle, alignment, where))  # exactly what torch.load does with it
        except ValueError:
            raise CheckpointError(where, "has a `.storage_alignment` record that is not a "
                                         "number, so torch.load refuses it") from None
    return order == b"big"


def _small(handle: BinaryIO, member: zipdir.Member, where: str) -> bytes:
    return zipdir.read_member(handle, member, _SMALL_RECORD, where)


def _stoull(text: bytes) -> int | None:
    """The number C++'s `std::stoull` reads (torch parses `version` with it), or None."""
    body = text.lstrip(b" \t\n\v\f\r")
    sign = body[:1] if body[:1] in (b"+", b"-") else b""
    digits = body[len(sign):]
    count = len(digits) - len(digits.lstrip(b"0123456789"))
    if not count:
        return None
    value = int(digits[:count])
    return (-value) % 2**64 if sign == b"-" else value


def _unpickle(handle: BinaryIO, archive: zipdir.Archive, where: str) -> Unpickled:
    member = archive.find("data.pkl")
    if member is None:
        raise CheckpointError(where, "is a zip archive without a `data.pkl`, so not a torch.save "
                                     "file")
    data = zipdir.read_member(handle, member, MAX_PICKLE_BYTES, where)
    try:
        return unpickler.loads(data, ids="zip")
    except unpickler.PickleRefused as exc:
        raise UnsafeCheckpointError(where, exc.name, member.shown) from None
    except unpickler.PickleInvalid as exc:
        raise CheckpointError(where, f"{member.shown} {exc}") from None


def _check_storages(storages: dict[str, StorageRef], archive: zipdir.Archive,
                    where: str) -> None:
    """Every storage the pickle points to is a record of exactly the declared size.

    torch.load reads each one and fails on a missing or mis-sized record; a file it cannot
    load is not a checkpoint to pass.
    """
    for key, storage in storages.items():
        record = archive.find(f"data/{key}")
        if record is None:
            raise CheckpointError(where, f"has no storage record data/{key}, which its pickle "
                                         "needs: torch.load would fail")
        if record.size != storage.nbytes:
            raise CheckpointError(where, f"declares {storage.nbytes} bytes for storage `{key}` "
                                         f"but the archive holds {record.size}: the file lies "
                                         "about its data")
