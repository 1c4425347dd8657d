"""The tensor data of a `torch.distributed.checkpoint` folder: each tensor's chunks, checked
to tile it exactly, read from the `.distcp` files through windows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers import dcp, torchzip, zipdir
from ckptlint.readers.base import CheckpointRead, unreadable
from ckptlint.readers.files import is_folder, open_regular, size_of
from ckptlint.readers.pickled import TensorRecord
from ckptlint.readers.tensorbytes import swap_width


@record
class StoredBytes:
    """Where a storage's bytes lie: an open file, the offset of its byte 0, its length, and the
    zip member holding it (a CRC to check, or deflated data), if any."""

    handle: BinaryIO
    start: int
    nbytes: int
    member: zipdir.Member | None = None
    swap: int = 1  # a big-endian storage: the width of the words torch.load reverses


@record
class TensorPlace:
    """One tensor: the view the pickle (or header) gives of its storage."""

    record: TensorRecord
    storage: StoredBytes


@record
class Chunk:
    """One piece of a DCP tensor: where it sits in the tensor, and the tensor it was saved as."""

    offsets: tuple[int, ...]
    tensor: TensorPlace


@record
class Chunked:
    """A tensor a `torch.distributed.checkpoint` folder saved in pieces (one per rank)."""

    record: TensorRecord
    chunks: tuple[Chunk, ...]


Opened = tuple[CheckpointRead, dict[str, TensorPlace], list[Path]]


def opened_handle(path: Path, handles: list[BinaryIO]) -> BinaryIO:
    try:
        handle = open_regular(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    handles.append(handle)
    return handle


def read_dcp_data(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    """Each tensor's chunks, as `torch.distributed.checkpoint`'s FileSystemWriter saves them:
    a `torch.save` archive of each chunk inside a `.distcp` file, at the byte range the
    metadata's `storage_data` gives for (key, chunk offsets)."""
    folder = path if is_folder(path) else path.parent
    where = str(folder / dcp.METADATA)
    parsed = dcp.parse(path, key)
    opened_handle(folder / dcp.METADATA, handles)  # for `digests`, which reads every file's handle
    places = _storage_places(parsed.fields.get("storage_data"), where)
    files: dict[str, BinaryIO] = {}
    tensors: dict[str, TensorPlace | Chunked] = {}
    for name, record in parsed.state.items():
        if isinstance(name, str) and isinstance(record, TensorRecord):
            fqn = parsed.fqns[id(record)]
            chunks = [_chunk(folder, places, fqn, offsets, sizes, record, files, handles, where)
                      for offsets, sizes in _chunks_of(parsed.fields, fqn, record, where)]
            tensors[name] = Chunked(record, tuple(chunks))
    return parsed.read, tensors, [folder / dcp.METADATA, *(folder / f for f in files)]


MAX_CHUNKS = 1 << 16  # pieces of one tensor: one per rank that saved a shard of it


def _storage_places(table: object, where: str) -> dict[tuple[str, tuple], tuple[str, int, int]]:
    """(key, chunk offsets) -> (file name, byte offset, length) of every saved item."""
    if not isinstance(table, dict):
        raise CheckpointError(where, "has no storage_data table, so its data cannot be found")
    places = {}
    for index, info in table.items():
        ids = getattr(index, "state", None)
        fields = getattr(info, "state", None)
        if not (isinstance(ids, dict) and isinstance(fields, dict)):
            raise CheckpointError(where, "has a malformed storage_data entry")
        if fields.get("transform_descriptors"):
            raise CheckpointError(where, f"stores `{ids.get('fqn')}` through transforms "
                                         "(compression), which convert does not undo")
        name, offset, length = (fields.get(k) for k in ("relative_path", "offset", "length"))
        if not (isinstance(name, str) and type(offset) is int and type(length) is int
                and offset >= 0 and length >= 0):
            raise CheckpointError(where, f"has a malformed storage entry for `{ids.get('fqn')}`")
        offsets = ids.get("offset")
        places[(ids.get("fqn"), tuple(offsets) if isinstance(offsets, tuple) else None)] = (
            name, offset, length)
    return places


def _chunks_of(fields: Mapping[str, object], fqn: str, record: TensorRecord,
               where: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (offsets, sizes) of the chunks of `fqn`, checked to tile the tensor exactly."""
    meta = fields["state_dict_metadata"][fqn]  # type: ignore[index]
    raw = meta.state.get("chunks") if isinstance(meta.state, dict) else None
    if not isinstance(raw, list) or not raw or len(raw) > MAX_CHUNKS:
        raise CheckpointError(where, f"tensor `{fqn}` has no usable list of chunks")
    chunks = []
    for chunk in raw:
        state = getattr(chunk, "state", None)
        offsets, sizes = (state.get(k) if isinstance(state, dict) else None
                          for k in ("offsets", "sizes"))
        if not (_dims(offsets, record) and _dims(sizes, record) and all(
                o + n <= d for o, n, d in zip(offsets, sizes, record.shape))):
            raise CheckpointError(where, f"tensor `{fqn}` has a chunk outside its shape "
                                         f"{list(record.shape)}")
        chunks.append((tuple(offsets), tuple(sizes)))
    _tiles(chunks, record, fqn, where)
    return chunks


def _dims(value: object, record: TensorRecord) -> bool:
    return isinstance(value, tuple) and len(value) == len(record.shape) and all(
        type(v) is int and v >= 0 for v in value)


def _tiles(chunks: list[tuple[tuple[int, ...], tuple[int, ...]]], record: TensorRecord,
           fqn: str, where: str) -> None:
    """No two chunks overlap and together they cover the tensor (their volumes add up)."""
    covered = sum(volume(sizes) for _, sizes in chunks)
    overlap = any(all(a < c + m and c < a + n for a, n, c, m in zip(o1, s1, o2, s2))
                  and volume(s1) and volume(s2)
                  for i, (o1, s1) in enumerate(chunks) for o2, s2 in chunks[i + 1:])
    if overlap or covered != volume(record.shape):
        raise CheckpointError(where, f"tensor `{fqn}` has chunks that do not tile its shape "
                                     f"{list(record.shape)} exactly")


def volume(sizes: tuple[int, ...]) -> int:
    n = 1
    for d in sizes:
        n *= d
    return n


def _chunk(folder: Path, places: Mapping, fqn: str, offsets: tuple[int, ...],
           sizes: tuple[int, ...], record: TensorRecord, files: dict[str, BinaryIO],
           handles: list[BinaryIO], where: str) -> Chunk:
    """One chunk: the torch.save archive at its byte range, read as torch.load reads it."""
    place = places.get((fqn, offsets))
    if place is None:
        raise CheckpointError(where, f"has no stored data for `{fqn}` at offsets {list(offsets)}")
    name, start, length = place
    if not name or "/" in name or "\\" in name or name in (".", "..") or ":" in name:
        raise CheckpointError(where, f"names data file {name!r}, which is not a file in its "
                                     "folder")
    if name not in files:
        files[name] = opened_handle(folder / name, handles)
    handle = files[name]
    if start + length > size_of(handle):
        raise CheckpointError(str(folder / name), f"is truncated: `{fqn}` runs past its end")
    window = Window(handle, start, length)
    shown = f"{folder / name} (bytes {start}..{start + length})"
    archive, piece, big_endian = torchzip.parse_object(window, shown, length)  # type: ignore
    if not (isinstance(piece, TensorRecord) and piece.storage is not None
            and piece.dtype == record.dtype and piece.shape == sizes and piece.fits()):
        raise CheckpointError(shown, f"does not hold the {record.dtype} {list(sizes)} chunk of "
                                     f"`{fqn}` its metadata promises")
    member = archive.find(f"data/{piece.storage.key}")
    assert member is not None  # parse_object checked every storage record is there
    swap = swap_width(piece, fqn, shown) if big_endian else 1
    storage = StoredBytes(window, member.data_offset, member.size, member, swap)  # type: ignore
    return Chunk(offsets, TensorPlace(piece, storage))


class Window:
    """Bytes [start, start + size) of an open file, read as a file of their own."""

    def __init__(self, handle: BinaryIO, start: int, size: int):
        self._handle, self._start, self._size, self._pos = handle, start, size, 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = max(self._size - self._pos, 0)
        size = left if size is None or size < 0 else min(size, left)
        self._handle.seek(self._start + self._pos)
        data = self._handle.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        size = min(len(buffer), max(self._size - self._pos, 0))
        self._handle.seek(self._start + self._pos)
        count = self._handle.readinto(memoryview(buffer)[:size])
        self._pos += count
        return count
