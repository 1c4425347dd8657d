"""Tensor bytes, one tensor at a time (for `convert`), read as restrictedly as the structure.

`open_data` first reads the file exactly as `inspect` does (`read_checkpoint`), so whatever
that refuses is refused here with the same sentence before one byte of tensor data is read.
It then parses the file again through the same readers on handles it keeps open, and refuses
a file whose structure changed in between. Each tensor's bytes are read when asked for: the
range of its zip member (that member's CRC checked over all of its bytes), its safetensors
byte range, or its legacy storage; strided views are gathered and big-endian storages swapped
as torch.load does, so every tensor comes back C-contiguous and little-endian, as safetensors
stores it. Memory holds one tensor (a strided view: also the span of storage it covers).
No pickle code runs, torch.load is never called.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from ckptlint.dtypes import ITEMSIZE
from ckptlint.errors import CheckpointError
from ckptlint.readers import (dcp, dispatch, legacy, safetensors, sharded, sigtoml, statedict,
                              torchzip, zipdir)
from ckptlint.readers.base import CheckpointRead, read_head, unreadable
from ckptlint.readers.files import file_kind, open_regular
from ckptlint.readers.unpickler import TensorRecord

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


class TensorData:
    """An open checkpoint whose tensors are read one at a time; a context manager.

    `checkpoint` is what `read_checkpoint` says of the file, `files` every file it consists of
    (the shards of a sharded one), kept open until `close`.
    """

    def __init__(self, path: Path, checkpoint: CheckpointRead, tensors: Mapping[str, _Tensor],
                 handles: list[BinaryIO], files: list[Path]):
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

    def _bytes(self, tensor: _Tensor, where: str) -> bytes | bytearray | memoryview:
        record, storage = tensor.record, tensor.storage
        itemsize = ITEMSIZE[record.dtype]
        if any(d == 0 for d in record.shape):
            return b""
        first = record.offset * itemsize
        last = record.offset + sum((d - 1) * s for d, s in zip(record.shape, record.stride))
        span = self._range(storage, first, (last + 1) * itemsize, where)
        data = span if _contiguous(record.shape, record.stride) else _gather(record, span)
        return _swapped(data, storage.swap) if storage.swap > 1 else data

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
            raise CheckpointError(str(path), _NO_DCP)
        return _dispatch(dispatch.folder_checkpoint(path), key, handles, formats)
    head = read_head(path)
    for name in formats:
        if not dispatch.READERS[name].sniff(path, head):
            continue
        if name not in _OPENERS:
            raise CheckpointError(str(path), _NO_DATA.get(name, _NO_DCP))
        return _OPENERS[name](path, key, handles)
    raise CheckpointError(str(path), "is not a checkpoint ckptlint can read")  # sniffed before


_NO_DCP = ("is a torch.distributed.checkpoint folder, whose data convert does not read: make "
           "it one file first with torch's `python -m torch.distributed.checkpoint.format_utils "
           "dcp_to_torch_save DIR OUT.pt`")
_NO_DATA = {sigtoml.FORMAT: "is a ckptlint signature file: it holds no tensor data"}


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


_OPENERS: dict[str, Callable[[Path, str | None, list[BinaryIO]], Opened]] = {
    torchzip.FORMAT: _torchzip, legacy.FORMAT: _legacy,
    safetensors.FORMAT: _safetensors, sharded.FORMAT: _sharded,
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
