"""Zip archives assembled byte by byte, for tests: valid ones and every trick readers disagree on.

No zip library writes these: each record (local header, central entry, Zip64 and classic end
records) is packed here from `struct`, so a test can place, repeat or bend any of them.
"""

from __future__ import annotations

import math
import pickle
import struct
import zlib
from dataclasses import dataclass, field, replace

import torch

U32 = 0xFFFFFFFF
DESCRIPTOR_FLAG = 0x0008
UTF8_FLAG = 0x0800


@dataclass(frozen=True)
class Entry:
    """One member: what its local header and its central directory entry say."""

    name: bytes
    data: bytes
    method: int = 0  # 0 stored, 8 deflated
    flags: int = 0
    local_name: bytes | None = None  # a local header that names another file
    local_flags: int | None = None
    descriptor: bool = False  # sizes after the data (flag 0x08), as torch.save writes them
    zip64: bool = False  # sizes and offset as sentinels plus a Zip64 extra field
    crc: int | None = None  # a CRC that lies

    @property
    def payload(self) -> bytes:
        if self.method == 8:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            return packer.compress(self.data) + packer.flush()
        return self.data

    @property
    def checksum(self) -> int:
        return zlib.crc32(self.data) if self.crc is None else self.crc


def local_record(entry: Entry) -> bytes:
    """Local header, data, and data descriptor if the entry has one."""
    flags = entry.flags | (DESCRIPTOR_FLAG if entry.descriptor else 0)
    flags = flags if entry.local_flags is None else entry.local_flags
    name = entry.name if entry.local_name is None else entry.local_name
    payload = entry.payload
    crc, comp, size = entry.checksum, len(payload), len(entry.data)
    extra = b""
    if entry.zip64:
        extra = struct.pack("<HHQQ", 1, 16, size, comp)
        comp = size = U32
    if entry.descriptor:
        crc = comp = size = 0
    head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 45 if entry.zip64 else 20, flags,
                       entry.method, 0, 0x21, crc, comp, size, len(name), len(extra))
    tail = b""
    if entry.descriptor:
        if entry.zip64:
            tail = struct.pack("<4sLQQ", b"PK\x07\x08", entry.checksum, len(payload),
                               len(entry.data))
        else:
            tail = struct.pack("<4s3L", b"PK\x07\x08", entry.checksum, len(payload),
                               len(entry.data))
    return head + name + extra + payload + tail


def central_record(entry: Entry, offset: int) -> bytes:
    flags = entry.flags | (DESCRIPTOR_FLAG if entry.descriptor else 0)
    payload = entry.payload
    comp, size, where, extra = len(payload), len(entry.data), offset, b""
    if entry.zip64:
        extra = struct.pack("<HHQQQ", 1, 24, size, comp, offset)
        comp = size = where = U32
    return struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 45 if entry.zip64 else 20,
                       45 if entry.zip64 else 20, flags, entry.method, 0, 0x21,
                       entry.checksum, comp, size, len(entry.name), len(extra), 0, 0, 0, 0,
                       where) + entry.name + extra


def end_record(count: int, cd_size: int, cd_offset: int, comment: bytes = b"",
               comment_length: int | None = None) -> bytes:
    length = len(comment) if comment_length is None else comment_length
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset,
                       length) + comment


def zip64_end_records(at: int, count: int, cd_size: int, cd_offset: int,
                      locator_points_at: int | None = None) -> bytes:
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size,
                         cd_offset)
    target = at if locator_points_at is None else locator_points_at
    return record + struct.pack("<4sLQL", b"PK\x06\x07", 0, target, 1)


@dataclass
class Layout:
    """Members laid out one after another, then directory and end records, as torch does."""

    entries: list[Entry]
    prefix: bytes = b""  # bytes before the first member
    zip64_end: bool = True  # torch.save always writes the Zip64 end record and locator
    comment: bytes = b""
    offsets: list[int] = field(default_factory=list)
    body: bytes = b""

    def members(self) -> bytes:
        out, self.offsets = bytearray(self.prefix), []
        for entry in self.entries:
            self.offsets.append(len(out))
            out += local_record(entry)
        self.body = bytes(out)
        return self.body

    def directory(self, entries: list[Entry] | None = None,
                  offsets: list[int] | None = None, shift: int = 0) -> bytes:
        entries = self.entries if entries is None else entries
        offsets = self.offsets if offsets is None else offsets
        return b"".join(central_record(e, o - shift) for e, o in zip(entries, offsets))

    def build(self) -> bytes:
        body = self.members()
        cd = self.directory()
        return body + cd + self.ends(len(self.entries), len(cd), len(body), len(body) + len(cd))

    def ends(self, count: int, cd_size: int, cd_offset: int, at: int) -> bytes:
        z64 = zip64_end_records(at, count, cd_size, cd_offset) if self.zip64_end else b""
        return z64 + end_record(count, cd_size, cd_offset, self.comment)


def archive(entries: list[Entry], **layout: object) -> bytes:
    return Layout(list(entries), **layout).build()  # type: ignore[arg-type]


# -- what goes inside: the records of a real torch.save file -------------------------------------

def torch_members(state: dict, folder: bytes = b"archive/") -> list[Entry]:
    """The member names and contents torch.save writes for `state`, as plain stored entries.

    Only the contents come from torch.save; the container is assembled here.
    """
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source:
        return [Entry(folder + info.filename.partition("/")[2].encode(), source.read(info))
                for info in source.infolist()]


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os
        return os.system, (f"touch {self.marker}",)


def payload_pickle(marker: str) -> bytes:
    """A data.pkl that creates `marker` when torch.load(weights_only=False) runs it."""
    return pickle.dumps(_Payload(marker), protocol=2)


def with_data_pkl(entries: list[Entry], data: bytes) -> list[Entry]:
    return [replace(e, data=data) if e.name.endswith(b"/data.pkl") else e for e in entries]


def named(entries: list[Entry], suffix: bytes) -> Entry:
    return next(e for e in entries if e.name.endswith(suffix))


class StorageStandIn:
    """Stands for a storage in `tensor_pickle`: its persistent id is whatever the test says."""

    def __init__(self, dtype_class: type, key: str, numel: int):
        self.pid = ("storage", dtype_class, key, "cpu", numel)


class _Tensor:
    def __init__(self, storage: StorageStandIn, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce__(self) -> tuple:
        from collections import OrderedDict
        stride = tuple(math.prod(self.shape[i + 1:]) for i in range(len(self.shape)))
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.shape, stride, False,
                                                 OrderedDict())


def tensor_pickle(tensors: dict[str, tuple[StorageStandIn, tuple[int, ...]]]) -> bytes:
    """A data.pkl of a state dict whose storage records say exactly what the test wants."""
    import io

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, StorageStandIn) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({k: _Tensor(s, shape) for k, (s, shape) in tensors.items()})
    return buffer.getvalue()
