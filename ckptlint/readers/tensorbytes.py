"""A tensor's bytes as torch would see them: read at an offset, gathered from a strided view,
byte-swapped from a big-endian file, checked against the zip member's CRC or digested."""

from __future__ import annotations

import hashlib
import os
import zlib
from typing import BinaryIO

from ckptlint.core.dtypes import ITEMSIZE
from ckptlint.core.errors import CheckpointError
from ckptlint.core.urls import RemotePath
from ckptlint.readers import zipdir
from ckptlint.readers.files import size_of
from ckptlint.readers.pickled import TensorRecord


_CHUNK = 1 << 20  # bytes per read when a whole member is checked or a file digested
_COMPLEX = ("complex32", "complex64", "complex128")  # byte-swapped per component, as torch does


def swap_width(record: TensorRecord, name: str, where: str) -> int:
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


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return strides[::-1]


def contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """C order, ignoring the stride of dimensions of size 1 (torch does too)."""
    return all(d == 1 or s == c for d, s, c in zip(shape, stride, contiguous_strides(shape)))


def gather_view(record: TensorRecord, span: bytes | memoryview) -> bytearray:
    """A strided view (a transpose, an expanded or sliced tensor) copied out in C order, as
    torch itself does it; `span` starts at the view's first element."""
    import torch

    itemsize = ITEMSIZE[record.dtype]
    source = torch.frombuffer(writable(span), dtype=torch.uint8)
    view = source.as_strided((*record.shape, itemsize),
                             (*(s * itemsize for s in record.stride), 1))
    out = bytearray(view.numel())
    torch.frombuffer(out, dtype=torch.uint8).view(view.shape).copy_(view)
    return out


def writable(data: bytes | bytearray | memoryview) -> bytearray | memoryview:
    # torch.frombuffer warns on a read-only buffer; the reused buffer is writable already
    return data if isinstance(data, bytearray) or (
        isinstance(data, memoryview) and not data.readonly) else bytearray(data)


def swapped(data: bytes | bytearray | memoryview, width: int) -> bytearray:
    """Each `width`-byte word reversed (a big-endian storage, as torch.load swaps it)."""
    import torch

    source = torch.frombuffer(writable(data), dtype=torch.uint8)
    out = bytearray(len(data))
    torch.frombuffer(out, dtype=torch.uint8).view(-1, width).copy_(source.view(-1, width).flip(1))
    return out


def pread(handle: BinaryIO, offset: int, size: int, where: str,
           buffer: bytearray | None = None) -> memoryview:
    """`size` bytes at `offset`, read into `buffer` (at least `size` long) when given: one
    buffer reused tensor after tensor costs no fresh pages per tensor."""
    view = memoryview(bytearray(size) if buffer is None else buffer)[:size]
    handle.seek(offset)
    if handle.readinto(view) != size:
        raise CheckpointError(where, f"is truncated: {size} bytes at offset {offset} are "
                                     "missing")
    return view


def member_crc(handle: BinaryIO, member: zipdir.Member, where: str) -> int:
    """The CRC of a stored member's bytes, read in chunks (a view needs only part of it)."""
    crc, pos, left = 0, member.data_offset, member.size
    while left:
        chunk = pread(handle, pos, min(_CHUNK, left), where)
        crc, pos, left = zlib.crc32(chunk, crc), pos + len(chunk), left - len(chunk)
    return crc


def sha256_of(handle: BinaryIO) -> str:
    sha = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


def stat_of(handle: BinaryIO) -> tuple[int, object]:
    path = getattr(handle, "path", None)
    # a remote file has no descriptor: the size and version its server gave (asked once per
    # run; an HTTP answer with another ETag is refused as it arrives, `remotefs.http_range`)
    if isinstance(path, RemotePath):
        from ckptlint.readers import remote

        return size_of(handle), remote.identity(path)
    info = os.fstat(handle.fileno())
    return info.st_size, info.st_mtime_ns
