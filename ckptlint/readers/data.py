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

import os
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from ckptlint.core.dtypes import ITEMSIZE
from ckptlint.core.errors import CheckpointError
from ckptlint.core.urls import location
from ckptlint.readers import (dcp, dispatch, legacy, safetensors, sharded, statedict, torchzip,
                              zipdir)
from ckptlint.readers.base import CheckpointRead, read_head, unreadable
from ckptlint.readers.dcpdata import (Chunked, Opened, StoredBytes, TensorPlace, opened_handle,
                                      read_dcp_data, volume)
from ckptlint.readers.files import file_kind
from ckptlint.readers.pickled import TensorRecord
from ckptlint.readers.tensorbytes import (contiguous, contiguous_strides, gather_view, member_crc,
                                          pread, sha256_of, stat_of, swap_width, swapped, writable)


class TensorData:
    """An open checkpoint whose tensors are read one at a time; a context manager.

    `checkpoint` is what `read_checkpoint` says of the file, `files` every file it consists of
    (the shards of a sharded one), kept open until `close`.
    """

    def __init__(self, path: Path, checkpoint: CheckpointRead, tensors: Mapping[str, TensorPlace],
                 handles: list[BinaryIO], files: list[Path]):
        assert len(files) == len(handles)  # one handle per file, in order (see `digests`)
        self.path, self.checkpoint, self.files = path, checkpoint, tuple(files)
        self._tensors, self._handles = dict(tensors), handles
        self._stats = [stat_of(h) for h in handles]
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
        return {str(f): sha256_of(h) for f, h in zip(self.files, self._handles)}

    def unchanged(self) -> bool:
        """Whether no file was rewritten (size, modification time) since it was opened."""
        return [stat_of(h) for h in self._handles] == self._stats

    def _bytes(self, tensor: TensorPlace | Chunked, where: str) -> bytes | bytearray | memoryview:
        if isinstance(tensor, Chunked):
            return self._assembled(tensor, where)
        record, storage = tensor.record, tensor.storage
        itemsize = ITEMSIZE[record.dtype]
        if any(d == 0 for d in record.shape):
            return b""
        first = record.offset * itemsize
        last = record.offset + sum((d - 1) * s for d, s in zip(record.shape, record.stride))
        span = self._range(storage, first, (last + 1) * itemsize, where)
        data = span if contiguous(record.shape, record.stride) else gather_view(record, span)
        return swapped(data, storage.swap) if storage.swap > 1 else data

    def _assembled(self, tensor: Chunked, where: str) -> bytes | bytearray | memoryview:
        """A DCP tensor: its one chunk, or its chunks copied into place (they tile it, as
        `read_dcp_data` checked)."""
        if len(tensor.chunks) == 1:
            return self._bytes(tensor.chunks[0].tensor, where)
        import torch

        itemsize = ITEMSIZE[tensor.record.dtype]
        out = bytearray(volume(tensor.record.shape) * itemsize)
        whole = torch.frombuffer(out, dtype=torch.uint8).view(*tensor.record.shape, itemsize)
        for chunk in tensor.chunks:
            sizes = chunk.tensor.record.shape
            piece = torch.frombuffer(writable(self._bytes(chunk.tensor, where)),
                                     dtype=torch.uint8).view(*sizes, itemsize)
            place = tuple(slice(o, o + n) for o, n in zip(chunk.offsets, sizes))
            whole[place].copy_(piece)
        return out

    def _range(self, storage: StoredBytes, begin: int, end: int,
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
        data = pread(storage.handle, storage.start + begin, end - begin, where, self._buffer)
        if member is not None and id(member) not in self._checked:
            whole = begin == 0 and end == member.size
            crc = zlib.crc32(data) if whole else member_crc(storage.handle, member, where)
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
    place = location(path)  # a URL is read through `remote`, as the readers read it
    checked = dispatch.read_checkpoint(place, state_dict_key)
    if checked.signature.partial:  # read as the keys it changes: it has no tensor of them
        raise CheckpointError(str(place), "is a PEFT adapter: its weights are added to the base "
                                         "model's (W + scale * B @ A), not copied under other "
                                         "keys; merge it with peft (`merge_and_unload()`) and "
                                         "convert the merged model's state_dict()")
    handles: list[BinaryIO] = []
    try:
        data = dispatch.guarded(place, lambda: _open(place, state_dict_key, handles))
        if (data.checkpoint.signature.tensors != checked.signature.tensors
                or data.checkpoint.signature.aliases != checked.signature.aliases):
            raise CheckpointError(str(place), "changed while it was being read")
        return data
    except BaseException:
        for handle in handles:
            handle.close()
        raise


def _open(path: Path, key: str | None, handles: list[BinaryIO]) -> TensorData:
    read, tensors, files = _dispatch(path, key, handles, tuple(dispatch.READERS))
    return TensorData(path, read, tensors, handles, files)


def _dispatch(path: Path, key: str | None, handles: list[BinaryIO],
              formats: tuple[str, ...]) -> Opened:
    try:
        kind = file_kind(path)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if kind == "folder":
        if dcp.sniff(path, b""):
            return read_dcp_data(path, key, handles)
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


def _torchzip(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), opened_handle(path, handles)
    parsed = torchzip.parse(handle, where, key)
    tensors = {}
    for name, record in _records(parsed.state, where):
        member = parsed.archive.find(f"data/{record.storage.key}")
        assert member is not None  # torchzip.parse checked every storage record is there
        swap = swap_width(record, name, where) if parsed.big_endian else 1
        tensors[name] = TensorPlace(record, StoredBytes(handle, member.data_offset, member.size,
                                                 member, swap))
    return _read(parsed.state, where, torchzip.FORMAT, parsed.note), tensors, [path]


def _legacy(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), opened_handle(path, handles)
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
        tensors[name] = TensorPlace(record, StoredBytes(handle, parsed.offsets[storage.key],
                                                 storage.nbytes))
    return _read(parsed.state, where, legacy.FORMAT, parsed.note), tensors, [path]


def _safetensors(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    where, handle = str(path), opened_handle(path, handles)
    parsed = safetensors.parse(handle, where, key)
    tensors = {}
    for name, spec in parsed.read.signature.tensors.items():
        begin, end = parsed.spans[name]
        stride = tuple(contiguous_strides(spec.shape))
        tensors[name] = TensorPlace(TensorRecord(spec.dtype, spec.shape, None, 0, stride),
                                StoredBytes(handle, begin, end - begin))
    return parsed.read, tensors, [path]


def _sharded(path: Path, key: str | None, handles: list[BinaryIO]) -> Opened:
    tensors: dict[str, TensorPlace] = {}
    opened_handle(path, handles)  # the index too: `digests` reads every file through its handle
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
    safetensors.FORMAT: _safetensors, sharded.FORMAT: _sharded, dcp.FORMAT: read_dcp_data,
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
