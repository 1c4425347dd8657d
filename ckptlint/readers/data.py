"""Tensor bytes, one tensor at a time (for `convert`), read as restrictedly as the structure.

`open_data` first reads the file exactly as `inspect` does (`read_checkpoint`), so whatever
that refuses is refused here with the same sentence before one byte of tensor data is read.
It then parses the file again through the same readers on handles it keeps open, and refuses
a file whose structure changed in between. Each tensor's bytes are read when asked for: the
range of its zip member (that member's CRC checked over all of its bytes), its safetensors
byte range, its legacy storage, or the chunks of a DCP tensor (each a `torch.save` archive
inside a `.distcp` file, read like any other). Strided views are gathered and big-endian
storages swapped as torch.load does, so every tensor comes back C-contiguous and
little-endian, as safetensors stores it. Memory holds one tensor (a strided view: also the
span of storage it covers). No pickle code runs, torch.load is never called.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from ckptlint.core.dtypes import ITEMSIZE
from ckptlint.core.errors import CheckpointError
from ckptlint.readers import (dcp, dispatch, legacy, safetensors, sharded, statedict, torchzip,
                              zipdir)
from ckptlint.readers.base import CheckpointRead, read_head, unreadable
from ckptlint.readers.files import file_kind, is_folder, open_regular, size_of
from ckptlint.readers.pickled import TensorRecord

_CHUNK = 1 << 20  # bytes per read when a whole member is checked or a file digested
_COMPLEX = ("complex32", "complex64", "complex128")  # byte-swapped per component, as torch does


@dataclass(frozen=True, slots=True)
class _Storage:
    """Where a storage's bytes lie: an open file, the offset of its byte 0, its length, and the
    zip member holding it (a CRC to check, or deflated data), if any."""

    handle: BinaryIO
    start: int
    nbytes: int
    member: zipdir.Member | None = None
    swap: int = 1  # a big-endian storage: the width of the words torch.load reverses


@dataclass(frozen=True, slots=True)
class _Tensor:
    """One tensor: the view the pickle (or header) gives of its storage."""

    record: TensorRecord
    storage: _Storage


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One piece of a DCP tensor: where it sits in the tensor, and the tensor it was saved as."""

    offsets: tuple[int, ...]
    tensor: _Tensor


@dataclass(frozen=True, slots=True)
class _Chunked:
    """A tensor a `torch.distributed.checkpoint` folder saved in pieces (one per rank)."""

    record: TensorRecord
    chunks: tuple[_Chunk, ...]


class TensorData:
    """An open checkpoint whose tensors are read one at a time; a context manager.

    `checkpoint` is what `read_checkpoint` says of the file, `files` every file it consists of
    (the shards of a sharded one), kept open until `close`.
    """

    def __init__(self, path: Path, checkpoint: CheckpointRead, tensors: Mapping[str, _Tensor],
                 handles: list[BinaryIO], files: list[Path]):
        assert len(files) == len(handles)  # one handle per file, in order (see `digests`)
        self.path, self.checkpoint, self.files = path, checkpoint, tuple(files)
        self._tensors, self._handles = dict(tensors), handles
        self._stats = [_stat(h) for h in handles]
        self._checked: set[int] = set()  # id() of zip members whose CRC was verified
        self._buffer = bytearray()  # what `read` returns a view of, reused for the next one

    def __enter__(self) -> TensorData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.close()

    def has_data(self, key: str) -> bool:
        return key in self._tensors

    def read(self, key: str) -> bytes | bytearray | memoryview:
        """The bytes of tensor `key`, C-contiguous and little-endian; valid until the next
        `read` (the buffer is reused: one tensor in memory at a time)."""
        where = str(self.path)
        tensor = self._tensors[key]
        return dispatch.guarded(where, lambda: self._bytes(tensor, where))

    def digests(self) -> dict[str, str]:
        """sha256 of every file, read through the open handles (what was converted)."""
        return {str(f): _sha256(h) for f, h in zip(self.files, self._handles)}

    def unchanged(self) -> bool:
        """Whether no file was rewritten (size, modification time) since it was opened."""
        return [_stat(h) for h in self._handles] == self._stats

    def _bytes(self, tensor: _Tensor | _Chunked, where: str) -> bytes | bytearray | memoryview:
        if isinstance(tensor, _Chunked):
            return self._assembled(tensor, where)
        record, storage = tensor.record, tensor.storage
        itemsize = ITEMSIZE[record.dtype]
        if any(d == 0 for d in record.shape):
            return b""
        first = record.offset * itemsize
        last = record.offset + sum((d - 1) * s for d, s in zip(record.shape, record.stride))
        span = self._range(storage, first, (last + 1) * itemsize, where)
        data = span if _contiguous(record.shape, record.stride) else _gather(record, span)
        return _swapped(data, storage.swap) if storage.swap > 1 else data

    def _assembled(self, tensor: _Chunked, where: str) -> bytes | bytearray | memoryview:
        """A DCP tensor: its one chunk, or its chunks copied into place (they tile it, as
        `_dcp` checked)."""
        if len(tensor.chunks) == 1:
            return self._bytes(tensor.chunks[0].tensor, where)
        import torch

        itemsize = ITEMSIZE[tensor.record.dtype]
        out = bytearray(_volume(tensor.record.shape) * itemsize)
        whole = torch.frombuffer(out, dtype=torch.uint8).view(*tensor.record.shape, itemsize)
        for chunk in tensor.chunks:
            sizes = chunk.tensor.record.shape
            piece = torch.frombuffer(_writable(self._bytes(chunk.tensor, where)),
                                     dtype=torch.uint8).view(*sizes, itemsize)
            place = tuple(slice(o, o + n) for o, n in zip(chunk.offsets, sizes))
            whole[place].copy_(piece)
        return out

    def _range(self, storage: _Storage, begin: int, end: int,
               where: str) -> bytes | memoryview:
        """Bytes [begin, end) of a storage (the readers checked they lie inside it)."""
        member = storage.member
        if member is not None and member.method != zipdir.STORED:
            # deflated data is inflated whole (bounded by its declared size, CRC checked):
            # torch.save stores every storage uncompressed, so this is for other writers
            return zipdir.read_member(storage.handle, member, member.size, where)[begin:end]
        if len(self._buffer) < end - begin:
            self._buffer = bytearray()  # the old one is freed before the larger one is made
            self._buffer = bytearray(end - begin)
        data = _pread(storage.handle, storage.start + begin, end - begin, where, self._buffer)
        if member is not None and id(member) not in self._checked:
            whole = begin == 0 and end == member.size
            crc = zlib.crc32(data) if whole else _crc(storage.handle, member, where)
            if crc != member.crc:
                raise CheckpointError(where, f"member {member.shown} fails its CRC check: the "
                                             "archive is corrupt or was edited")
            self._checked.add(id(member))
        return data


def open_data(path: str | os.PathLike[str], state_dict_key: str | None = None) -> TensorData:
    """Open a checkpoint for reading its tensors; raises `CheckpointError` and nothing else.

    The refusals are `read_checkpoint`'s own, said the same way; then what only reading data
    needs (a storage view of a pre-1.0 file, a tensor with no bytes in the file).
    """
    checked = dispatch.read_checkpoint(path, state_dict_key)
    if checked.signature.partial:  # read as the keys it changes: it has no tensor of them
        raise CheckpointError(str(path), "is a PEFT adapter: its weights are added to the base "
                                         "model's (W + scale * B @ A), not copied under other "
                                         "keys; merge it with peft (`merge_and_unload()`) and "
                                         "convert the merged model's state_dict()")
    handles: list[BinaryIO] = []
    try:
        data = dispatch.guarded(path, lambda: _open(Path(path), state_dict_key, handles))
        if (data.checkpoint.signature.tensors != checked.signature.tensors
                or data.checkpoint.signature.aliases != checked.signature.aliases):
            raise CheckpointError(str(path), "changed while it was being read")
        return data
    except BaseException:
        for handle in handles:
            handle.close()
        raise


def _open(path: Path, key: str | None, handles: list[BinaryIO]) -> TensorData:
    read, tensors, files = _dispatch(path, key, handles, tuple(dispatch.READERS))
    return TensorData(path, read, tensors, handles, files)


Opened = tuple[CheckpointRead, dict[str, _Tensor], list[Path]]


def _dispatch(path: Path, key: str | None, handles: list[BinaryIO],
              formats: tuple[str, ...]) -> Opened:
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if kind == "folder":
        if dcp.sniff(path, b""):
            return _dcp(path, key, handles)
        return _dispatch(dispatch.folder_checkpoint(path), key, handles, formats)
    head = read_head(path)
    for name in formats:
        if not dispatch.READERS[name].sniff(path, head):
            continue
        if name not in _OPENERS:
            raise CheckpointError(str(path), _NO_DATA)
        return _OPENERS[name](path, key, handles)
    raise CheckpointError(str(path), "is not a checkpoint ckptlint can read")  # sniffed before


_NO_DATA = "is a ckptlint signature file: it holds no tensor data"  # the one reader without


def _handle(path: Path, handles: list[BinaryIO]) -> BinaryIO:
    try:
        handle = open_regular(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    handles.append(handle)
    return handle


def _torchzip(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), _handle(path, handles)
    parsed = torchzip.parse(handle, where, key)
    tensors = {}
    for name, record in _records(parsed.state, where):
        member = parsed.archive.find(f"data/{record.storage.key}")
        assert member is not None  # torchzip.parse checked every storage record is there
        swap = _swap_width(record, name, where) if parsed.big_endian else 1
        tensors[name] = _Tensor(record, _Storage(handle, member.data_offset, member.size,
                                                 member, swap))
    return _read(parsed.state, where, torchzip.FORMAT, parsed.note), tensors, [path]


def _legacy(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), _handle(path, handles)
    parsed = legacy.parse(handle, where, key)
    tensors = {}
    for name, record in _records(parsed.state, where):
        storage = record.storage
        if storage.key in parsed.viewed:
            raise CheckpointError(where, f"tensor `{name}` lives in a storage view (written by "
                                         "torch before 1.0), which convert does not read: "
                                         "re-save the file with a current torch")
        if storage.key not in parsed.offsets:
            raise CheckpointError(where, f"tensor `{name}` points to storage `{storage.key}`, "
                                         "which the file does not hold: torch.load would fail")
        tensors[name] = _Tensor(record, _Storage(handle, parsed.offsets[storage.key],
                                                 storage.nbytes))
    return _read(parsed.state, where, legacy.FORMAT, parsed.note), tensors, [path]


def _safetensors(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), _handle(path, handles)
    parsed = safetensors.parse(handle, where, key)
    tensors = {}
    for name, spec in parsed.read.signature.tensors.items():
        begin, end = parsed.spans[name]
        stride = tuple(_contiguous_strides(spec.shape))
        tensors[name] = _Tensor(TensorRecord(spec.dtype, spec.shape, None, 0, stride),
                                _Storage(handle, begin, end - begin))
    return parsed.read, tensors, [path]


def _sharded(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    tensors: dict[str, _Tensor] = {}
    _handle(path, handles)  # the index too: `digests` reads every file through its handle
    files = [path]

    def read_shard(shard: Path) -> CheckpointRead:
        read, found, more = _dispatch(shard, None, handles, dispatch.SHARD_FORMATS)
        tensors.update(found)  # a key in two shards is refused by sharded.read itself
        files.extend(more)
        return read

    read = sharded.read(path, key, read_shard=read_shard)
    if key:  # sharded.read took the keys below `key.`, and checked there are some
        head = key.rstrip(".") + "."
        tensors = {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}
    return read, tensors, files


def _dcp(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    """Each tensor's chunks, as `torch.distributed.checkpoint`'s FileSystemWriter saves them:
    a `torch.save` archive of each chunk inside a `.distcp` file, at the byte range the
    metadata's `storage_data` gives for (key, chunk offsets)."""
    folder = path if is_folder(path) else path.parent
    where = str(folder / dcp.METADATA)
    parsed = dcp.parse(path, key)
    _handle(folder / dcp.METADATA, handles)  # for `digests`, which reads every file's handle
    places = _storage_places(parsed.fields.get("storage_data"), where)
    files: dict[str, BinaryIO] = {}
    tensors: dict[str, _Tensor | _Chunked] = {}
    for name, record in parsed.state.items():
        if isinstance(name, str) and isinstance(record, TensorRecord):
            fqn = parsed.fqns[id(record)]
            chunks = [_chunk(folder, places, fqn, offsets, sizes, record, files, handles, where)
                      for offsets, sizes in _chunks_of(parsed.fields, fqn, record, where)]
            tensors[name] = _Chunked(record, tuple(chunks))
    return parsed.read, tensors, [folder / dcp.METADATA, *(folder / f for f in files)]


_MAX_CHUNKS = 1 << 16  # pieces of one tensor: one per rank that saved a shard of it


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
    if not isinstance(raw, list) or not raw or len(raw) > _MAX_CHUNKS:
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
    volume = sum(_volume(sizes) for _, sizes in chunks)
    overlap = any(all(a < c + m and c < a + n for a, n, c, m in zip(o1, s1, o2, s2))
                  and _volume(s1) and _volume(s2)
                  for i, (o1, s1) in enumerate(chunks) for o2, s2 in chunks[i + 1:])
    if overlap or volume != _volume(record.shape):
        raise CheckpointError(where, f"tensor `{fqn}` has chunks that do not tile its shape "
                                     f"{list(record.shape)} exactly")


def _volume(sizes: tuple[int, ...]) -> int:
    n = 1
    for d in sizes:
        n *= d
    return n


def _chunk(folder: Path, places: Mapping, fqn: str, offsets: tuple[int, ...],
           sizes: tuple[int, ...], record: TensorRecord, files: dict[str, BinaryIO],
           handles: list[BinaryIO], where: str) -> _Chunk:
    """One chunk: the torch.save archive at its byte range, read as torch.load reads it."""
    place = places.get((fqn, offsets))
    if place is None:
        raise CheckpointError(where, f"has no stored data for `{fqn}` at offsets {list(offsets)}")
    name, start, length = place
    if not name or "/" in name or "\\" in name or name in (".", "..") or ":" in name:
        raise CheckpointError(where, f"names data file {name!r}, which is not a file in its "
                                     "folder")
    if name not in files:
        files[name] = _handle(folder / name, handles)
    handle = files[name]
    if start + length > size_of(handle):
        raise CheckpointError(str(folder / name), f"is truncated: `{fqn}` runs past its end")
    window = _Window(handle, start, length)
    shown = f"{folder / name} (bytes {start}..{start + length})"
    archive, piece, big_endian = torchzip.parse_object(window, shown, length)  # type: ignore
    if not (isinstance(piece, TensorRecord) and piece.storage is not None
            and piece.dtype == record.dtype and piece.shape == sizes and piece.fits()):
        raise CheckpointError(shown, f"does not hold the {record.dtype} {list(sizes)} chunk of "
                                     f"`{fqn}` its metadata promises")
    member = archive.find(f"data/{piece.storage.key}")
    assert member is not None  # parse_object checked every storage record is there
    swap = _swap_width(piece, fqn, shown) if big_endian else 1
    storage = _Storage(window, member.data_offset, member.size, member, swap)  # type: ignore
    return _Chunk(offsets, _Tensor(piece, storage))


class _Window:
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


_OPENERS: dict[str, Callable[[Path, str | None, list[BinaryIO]], Opened]] = {
    torchzip.FORMAT: _torchzip, legacy.FORMAT: _legacy,
    safetensors.FORMAT: _safetensors, sharded.FORMAT: _sharded, dcp.FORMAT: _dcp,
}


def _records(state: Mapping[str, object], where: str) -> list[tuple[str, TensorRecord]]:
    """The tensors of a located state dict that have bytes in the file."""
    found = []
    for name, value in state.items():
        if isinstance(name, str) and isinstance(value, TensorRecord):
            if value.storage is None:
                raise CheckpointError(where, f"tensor `{name}` has no data in the file (a meta "
                                             "tensor or a tensor subclass saved without "
                                             "storage), so there is nothing to convert")
            found.append((name, value))
    return found


def _read(state: Mapping[str, object], where: str, fmt: str, note: str) -> CheckpointRead:
    return CheckpointRead(statedict.signature(state, where), fmt, note)


def _swap_width(record: TensorRecord, name: str, where: str) -> int:
    """How torch.load swaps a big-endian storage: by its declared element (a complex one per
    component; an untyped one not at all)."""
    ref = record.storage
    assert ref is not None
    width = 1 if ref.untyped else ITEMSIZE[ref.dtype]
    width = max(width // 2, 1) if ref.dtype in _COMPLEX else width
    if width > 1 and ITEMSIZE[record.dtype] % width:
        raise CheckpointError(where, f"tensor `{name}` views a big-endian {ref.dtype} storage "
                                     f"as {record.dtype}, which convert does not byte-swap")
    return width


def _contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return strides[::-1]


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """C order, ignoring the stride of dimensions of size 1 (torch does too)."""
    return all(d == 1 or s == c for d, s, c in zip(shape, stride, _contiguous_strides(shape)))


def _gather(record: TensorRecord, span: bytes | memoryview) -> bytearray:
    """A strided view (a transpose, an expanded or sliced tensor) copied out in C order, as
    torch itself does it; `span` starts at the view's first element."""
    import torch

    itemsize = ITEMSIZE[record.dtype]
    source = torch.frombuffer(_writable(span), dtype=torch.uint8)
    view = source.as_strided((*record.shape, itemsize),
                             (*(s * itemsize for s in record.stride), 1))
    out = bytearray(view.numel())
    torch.frombuffer(out, dtype=torch.uint8).view(view.shape).copy_(view)
    return out


def _writable(data: bytes | bytearray | memoryview) -> bytearray | memoryview:
    # torch.frombuffer warns on a read-only buffer; the reused buffer is writable already
    return data if isinstance(data, bytearray) or (
        isinstance(data, memoryview) and not data.readonly) else bytearray(data)


def _swapped(data: bytes | bytearray | memoryview, width: int) -> bytearray:
    """Each `width`-byte word reversed (a big-endian storage, as torch.load swaps it)."""
    import torch

    source = torch.frombuffer(_writable(data), dtype=torch.uint8)
    out = bytearray(len(data))
    torch.frombuffer(out, dtype=torch.uint8).view(-1, width).copy_(source.view(-1, width).flip(1))
    return out


def _pread(handle: BinaryIO, offset: int, size: int, where: str,
           buffer: bytearray | None = None) -> memoryview:
    """`size` bytes at `offset`, read into `buffer` (at least `size` long) when given: one
    buffer reused tensor after tensor costs no fresh pages per tensor."""
    view = memoryview(bytearray(size) if buffer is None else buffer)[:size]
    handle.seek(offset)
    if handle.readinto(view) != size:
        raise CheckpointError(where, f"is truncated: {size} bytes at offset {offset} are "
                                     "missing")
    return view


def _crc(handle: BinaryIO, member: zipdir.Member, where: str) -> int:
    """The CRC of a stored member's bytes, read in chunks (a view needs only part of it)."""
    crc, pos, left = 0, member.data_offset, member.size
    while left:
        chunk = _pread(handle, pos, min(_CHUNK, left), where)
        crc, pos, left = zlib.crc32(chunk, crc), pos + len(chunk), left - len(chunk)
    return crc


def _sha256(handle: BinaryIO) -> str:
    sha = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


def _stat(handle: BinaryIO) -> tuple[int, int]:
    info = os.fstat(handle.fileno())
    return info.st_size, info.st_mtime_ns
