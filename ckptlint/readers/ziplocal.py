"""Each member's local header and data descriptor checked against the central directory, so no
two zip readers could see different members or bytes."""

from __future__ import annotations

import struct
from typing import BinaryIO

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers.files import prefetch


_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"


EOCD_SIZE, ZIP64_EOCD_SIZE, LOCATOR_SIZE, CENTRAL_SIZE, _LOCAL_SIZE = 22, 56, 20, 46, 30


U16, U32 = 0xFFFF, 0xFFFFFFFF  # "see the Zip64 record" sentinels


_ZIP64_EXTRA = 0x0001
_DESCRIPTOR_FLAG = 0x0008


# a local header's extra field is not in the directory: torch.save pads data to 64 bytes with
# it and Zip64 adds 20, so this covers what torch writes (a longer one is simply read after)
_LOCAL_EXTRA_GUESS = 128


@record
class Member:
    """One file of the archive, as its central directory entry and local header agree on it."""

    name: bytes
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    header_offset: int
    data_offset: int = 0
    end: int = 0  # first byte after its data and data descriptor

    @property
    def shown(self) -> str:
        return self.name.decode("utf-8", "backslashreplace")


def widened(name: bytes, extra: bytes, sizes: tuple[int, int, int],
           where: str) -> tuple[int, int, int]:
    """(size, compressed size, offset), with the sentinels replaced from the Zip64 extra field
    in the order both miniz and zipfile read it."""
    fields = _extra_fields(name, extra, where)
    if U32 not in sizes or _ZIP64_EXTRA not in fields:
        return sizes
    data, out, pos = fields[_ZIP64_EXTRA], [], 0
    for value in sizes:
        if value == U32:
            if pos + 8 > len(data):
                raise CheckpointError(where, f"member {shown_name(name)} has a Zip64 field too short "
                                             "for the sizes it stands in for")
            value = int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        out.append(value)
    return out[0], out[1], out[2]


def _extra_fields(name: bytes, extra: bytes, where: str) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    at = 0
    while at < len(extra):
        if at + 4 > len(extra):
            raise CheckpointError(where, f"member {shown_name(name)} has a malformed extra field")
        kind, length = struct.unpack_from("<2H", extra, at)
        if at + 4 + length > len(extra) or kind in fields:
            # miniz reads the first Zip64 field, zipfile the last: two are ambiguous
            raise CheckpointError(where, f"member {shown_name(name)} has a malformed or repeated "
                                         f"extra field (0x{kind:04x})")
        fields[kind] = extra[at + 4:at + 4 + length]
        at += 4 + length
    return fields


def with_local_headers(handle: BinaryIO, entries: list[Member], cd_offset: int,
                        where: str) -> list[Member]:
    """Every member with its local header checked against its directory entry, and the members
    tiling the bytes before the directory exactly: nothing before, between or overlapping."""
    starts = frozenset(m.header_offset for m in entries) | {cd_offset}
    # a remote file fetches the headers (and what torch pads them with) in one concurrent go
    prefetch(handle, [(m.header_offset, _LOCAL_SIZE + len(m.name) + _LOCAL_EXTRA_GUESS)
                      for m in entries])
    members = [_local(handle, m, cd_offset, starts, where) for m in entries]
    cursor, previous = 0, None
    for member in sorted(members, key=lambda m: m.header_offset):
        if member.header_offset != cursor:
            raise CheckpointError(where, _layout(previous, member, cursor))
        cursor, previous = member.end, member
    if cursor != cd_offset:
        raise CheckpointError(where, f"has {cd_offset - cursor} bytes after its last member "
                                     "that belong to no member")
    return members


def _layout(previous: Member | None, member: Member, cursor: int) -> str:
    if previous is None:
        return (f"has {member.header_offset} bytes before its first member that belong to no "
                "member (another reader may find a different archive there)")
    if member.header_offset < cursor:
        return f"has members {previous.shown} and {member.shown} that overlap"
    return (f"has {member.header_offset - cursor} bytes between members {previous.shown} and "
            f"{member.shown} that belong to no member")


def _local(handle: BinaryIO, member: Member, cd_offset: int, starts: frozenset[int],
           where: str) -> Member:
    name = member.shown
    if member.header_offset + _LOCAL_SIZE > cd_offset:
        raise CheckpointError(where, f"member {name} starts inside or after the central "
                                     "directory")
    head = read_at(handle, member.header_offset, _LOCAL_SIZE, where)
    (sig, _, flags, method, _, _, crc, compressed, size, name_len,
     extra_len) = struct.unpack("<4s5H3L2H", head)
    if sig != _LOCAL:
        raise CheckpointError(where, f"member {name} has no local header where the directory "
                                     "says")
    rest = read_at(handle, member.header_offset + _LOCAL_SIZE, name_len + extra_len, where)
    local_name, extra = rest[:name_len], rest[name_len:]
    if local_name != member.name:
        raise CheckpointError(where, f"member {name} is called {shown_name(local_name)} in its local "
                                     "header: readers that trust local headers see another file")
    if flags != member.flags or method != member.method:
        raise CheckpointError(where, f"member {name} has other flags or another compression "
                                     "method in its local header than in the directory")
    data_offset = member.header_offset + _LOCAL_SIZE + name_len + extra_len
    end = data_offset + member.compressed
    if flags & _DESCRIPTOR_FLAG:
        end += _descriptor(handle, member, end, cd_offset, starts, where)
    elif (crc, *widened(local_name, extra, (size, compressed, 0), where)[:2]) != (
            member.crc, member.size, member.compressed):
        raise CheckpointError(where, f"member {name} has another CRC or size in its local "
                                     "header than in the directory")
    if end > cd_offset:
        raise CheckpointError(where, f"member {name} runs into the central directory")
    return Member(member.name, member.method, member.flags, member.crc, member.compressed,
                  member.size, member.header_offset, data_offset, end)


def _descriptor(handle: BinaryIO, member: Member, at: int, cd_offset: int,
                starts: frozenset[int], where: str) -> int:
    """The length of the data descriptor after a member's data; it must repeat the directory.

    Writers differ (with or without its signature, 4- or 8-byte sizes); of the forms that say
    what the directory says, the one ending where the next member (or the directory) starts.
    """
    raw = read_at(handle, at, max(min(24, cd_offset - at), 0), where)
    want = (member.crc, member.compressed, member.size)
    body = raw[4:] if raw.startswith(_DESCRIPTOR) else raw
    skip = len(raw) - len(body)
    fits = [skip + width for width, fmt in ((12, "<3L"), (20, "<LQQ"))
            if len(body) >= width and struct.unpack_from(fmt, body) == want]
    if fits:
        return next((n for n in fits if at + n in starts), fits[0])
    raise CheckpointError(where, f"member {member.shown} has a data descriptor that disagrees "
                                 "with the central directory")


def read_at(handle: BinaryIO, offset: int, size: int, where: str) -> bytes:
    if not size:
        return b""
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise CheckpointError(where, f"is truncated: {size} bytes at offset {offset} are "
                                     "missing")
    return data


def shown_name(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")
