"""One reading of a zip archive: central directory and local headers parsed here, strictly.

torch reads a `torch.save` archive with miniz (inside `torch._C.PyTorchFileReader`); Python's
`zipfile` and the pickle scanners read it their own ways. Wherever two of those readers could
see different bytes, the archive is refused with a sentence naming the member, so what ckptlint
reports is what torch loads. What is accepted is read as miniz reads it: the last end record
(at most 64 KiB before the end), the Zip64 end record when its locator is there, offsets taken
as written, names looked up without regard to ASCII case.

Refused, each for the reason given at its check: a second end record; a comment that runs
past, or holds, an end record; a Zip64 locator that points anywhere but just before itself; a
central directory that is not where the end record says (zipfile would shift every offset); a
directory whose entries do not fill it exactly; flag bits only some readers honour
(encryption, 0x20, 0x40, 0x2000); methods other than stored and deflate; names with NUL bytes;
two members named alike up to case; a local header that disagrees with the directory; bytes
before the first member, between members, or overlapping members.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Iterator, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers.files import size_of
from ckptlint.readers.ziplocal import (CENTRAL_SIZE, EOCD_SIZE, LOCATOR_SIZE, U16, U32,
                                       ZIP64_EOCD_SIZE, Member, read_at, shown_name, widened,
                                       with_local_headers)

MAX_MEMBERS = 1 << 20  # a torch.save file has one member per storage plus six
MAX_DIRECTORY_BYTES = 256 * 2**20  # room for MAX_MEMBERS entries with long names
_MAX_COMMENT = 0xFFFF
_EOCD = b"PK\x05\x06"
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
# encrypted (0x1), compressed patched data (0x20), strong encryption (0x40), masked local
# headers (0x2000): miniz ignores 0x20 while zipfile refuses it, and the other three are
# handled differently again; no torch.save file sets any of them
_AMBIGUOUS_FLAGS = 0x0001 | 0x0020 | 0x0040 | 0x2000
STORED, DEFLATED = 0, 8
_CHUNK = 1 << 20


@record
class Archive:
    """The members, their common top folder (`archive/`), and miniz's case-blind lookup."""

    members: tuple[Member, ...]
    folder: bytes
    by_name: Mapping[bytes, Member]

    def find(self, name: str) -> Member | None:
        """The member `<folder><name>`, found the way torch's reader finds it (ASCII case
        ignored; `read_directory` refused names that differ in case only)."""
        return self.by_name.get((self.folder + name.encode("utf-8", "surrogatepass")).lower())

    def has_exactly(self, name: str) -> bool:
        """Whether `<folder><name>` is a member, spelled exactly (torch's `get_all_records`)."""
        member = self.find(name)
        return member is not None and member.name == self.folder + name.encode()


def read_directory(handle: BinaryIO, where: str, size: int | None = None) -> Archive:
    """Parse and cross-check the whole directory structure; raise `CheckpointError` if any
    two readers could disagree about it. `size` is the archive's length when it is not the
    whole file (an archive embedded in a DCP shard, read through a window)."""
    size = size_of(handle) if size is None else size
    eocd_at, count, cd_size, cd_offset = _end_records(handle, size, where)
    if cd_size > MAX_DIRECTORY_BYTES:
        raise CheckpointError(where, f"has a {cd_size}-byte central directory, more than the "
                                     f"{MAX_DIRECTORY_BYTES >> 20} MiB ckptlint reads")
    if cd_offset + cd_size != eocd_at:
        raise CheckpointError(where, f"says its central directory starts at byte {cd_offset}, "
                                     f"but the {cd_size}-byte directory before its end record "
                                     f"starts at {eocd_at - cd_size}: Python's zipfile would "
                                     "shift every offset and read other bytes than torch")
    entries = list(_central_entries(read_at(handle, cd_offset, cd_size, where), count, where))
    folder = _folder(entries, where)
    members = with_local_headers(handle, entries, cd_offset, where)
    by_name: dict[bytes, Member] = {}
    for member in members:
        other = by_name.setdefault(member.name.lower(), member)
        if other is not member:
            raise CheckpointError(where, _twins(other, member))
    return Archive(tuple(members), folder, by_name)


def read_member(handle: BinaryIO, member: Member, limit: int, where: str) -> bytes:
    """A member's bytes, inflated if needed, checked against its size and CRC; at most `limit`."""
    if member.size > limit:
        raise CheckpointError(where, f"has a {member.size}-byte {member.shown}, more than the "
                                     f"{limit >> 20} MiB ckptlint reads")
    if member.method == STORED:
        data = read_at(handle, member.data_offset, member.size, where)
    else:
        data = _inflate(handle, member, where)
    if zlib.crc32(data) != member.crc:
        raise CheckpointError(where, f"member {member.shown} fails its CRC check: the archive "
                                     "is corrupt or was edited")
    return data


def _end_records(handle: BinaryIO, size: int, where: str) -> tuple[int, int, int, int]:
    """(where the directory must end, entry count, directory size, directory offset)."""
    if size < EOCD_SIZE:
        raise CheckpointError(where, f"is {size} bytes, too short to be a zip archive")
    tail_start = max(size - (_MAX_COMMENT + EOCD_SIZE), 0)
    tail = read_at(handle, tail_start, size - tail_start, where)
    # miniz takes the last signature with a whole record after it
    at = tail.rfind(_EOCD, 0, len(tail) - EOCD_SIZE + len(_EOCD))
    if at < 0:
        raise CheckpointError(where, "has no end-of-central-directory record, so it is not a "
                                     "whole zip archive (truncated?)")
    (_, disk, cd_disk, on_disk, count, cd_size, cd_offset,
     comment) = struct.unpack_from("<4s4H2LH", tail, at)
    trailing = len(tail) - at - EOCD_SIZE
    if comment != trailing or _EOCD in tail[at + EOCD_SIZE:]:
        raise CheckpointError(where, f"has an end record whose {comment}-byte comment does not "
                                     f"end the file ({trailing} bytes follow it): readers "
                                     "disagree on where the archive ends")
    _no_other_end_record(tail, at, where)
    eocd_at = tail_start + at
    locator = read_at(handle, eocd_at - LOCATOR_SIZE, LOCATOR_SIZE, where) \
        if eocd_at >= LOCATOR_SIZE + ZIP64_EOCD_SIZE else b""
    if locator.startswith(_ZIP64_LOCATOR):
        return _zip64(handle, eocd_at, locator, (disk, cd_disk, on_disk, count, cd_size, cd_offset),
                      where)
    if disk or cd_disk or on_disk != count:
        raise CheckpointError(where, "is a multi-disk (spanned) zip archive, which torch does "
                                     "not read")
    return eocd_at, count, cd_size, cd_offset


def _no_other_end_record(tail: bytes, chosen: int, where: str) -> None:
    """No earlier end record whose comment reaches the end of the file (and so holds ours)."""
    at = tail.find(_EOCD)
    while 0 <= at < chosen:
        if len(tail) - at >= EOCD_SIZE:
            (comment,) = struct.unpack_from("<H", tail, at + 20)
            if at + EOCD_SIZE + comment == len(tail):
                raise CheckpointError(where, "has two end-of-central-directory records, one "
                                             "inside the other's comment: readers disagree on "
                                             "which directory is the archive's")
        at = tail.find(_EOCD, at + 1)


def _zip64(handle: BinaryIO, eocd_at: int, locator: bytes, classic: tuple[int, ...],
           where: str) -> tuple[int, int, int, int]:
    """The Zip64 end record `torch.save` always writes, checked against the classic one."""
    _, locator_disk, record_at, disks = struct.unpack("<4sLQL", locator)
    expected_at = eocd_at - LOCATOR_SIZE - ZIP64_EOCD_SIZE
    # zipfile reads the record just before the locator, miniz where the locator points
    if record_at != expected_at or locator_disk or disks != 1:
        raise CheckpointError(where, f"has a Zip64 locator pointing at byte {record_at}, not at "
                                     f"the Zip64 end record before it (byte {expected_at})")
    record = read_at(handle, record_at, ZIP64_EOCD_SIZE, where)
    (sig, length, _, _, disk, cd_disk, on_disk, count, cd_size,
     cd_offset) = struct.unpack("<4sQ2H2L4Q", record)
    if sig != _ZIP64_EOCD or length != ZIP64_EOCD_SIZE - 12:
        raise CheckpointError(where, "has a Zip64 locator without a plain Zip64 end record "
                                     "where it points")
    if disk or cd_disk or on_disk != count:
        raise CheckpointError(where, "is a multi-disk (spanned) zip archive, which torch does "
                                     "not read")
    sentinels = (U16, U16, U16, U16, U32, U32)
    for name, old, new, sentinel in zip(("disk", "directory disk", "entries on disk",
                                         "entries", "directory size", "directory offset"),
                                        classic, (disk, cd_disk, on_disk, count, cd_size,
                                                  cd_offset), sentinels):
        if old not in (new, sentinel):
            raise CheckpointError(where, f"has end records that disagree on its {name} ({old} "
                                         f"and {new} in the Zip64 record): readers that trust "
                                         "either see different archives")
    return record_at, count, cd_size, cd_offset


def _central_entries(directory: bytes, count: int, where: str) -> Iterator[Member]:
    if count > MAX_MEMBERS:
        raise CheckpointError(where, f"has {count} members, more than the {MAX_MEMBERS} "
                                     "ckptlint reads")
    at = 0
    for index in range(count):
        if directory[at:at + 4] != _CENTRAL or len(directory) - at < CENTRAL_SIZE:
            raise CheckpointError(where, f"has a central directory that holds {index} of the "
                                         f"{count} entries its end record promises")
        member, at = _central_entry(directory, at, where)
        yield member
    if at != len(directory):
        raise CheckpointError(where, f"has {len(directory) - at} bytes in its central directory "
                                     "after its last entry, where other readers may find more")


def _central_entry(directory: bytes, at: int, where: str) -> tuple[Member, int]:
    (_, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len,
     disk, _, _, offset) = struct.unpack_from("<4s6H3L5HLL", directory, at)
    end = at + CENTRAL_SIZE + name_len + extra_len + comment_len
    if end > len(directory):
        raise CheckpointError(where, "has a central directory entry that runs past the end of "
                                     "the directory")
    name = directory[at + CENTRAL_SIZE:at + CENTRAL_SIZE + name_len]
    extra = directory[at + CENTRAL_SIZE + name_len:at + CENTRAL_SIZE + name_len + extra_len]
    size, compressed, offset = widened(name, extra, (size, compressed, offset), where)
    member = Member(name, method, flags, crc, compressed, size, offset)
    _check_entry(member, disk, where)
    return member, end


def _check_entry(member: Member, disk: int, where: str) -> None:
    name = member.shown
    if member.flags & _AMBIGUOUS_FLAGS:
        raise CheckpointError(where, f"member {name} has flag bits 0x{member.flags:04x} "
                                     "(encryption or patched data), which torch and other "
                                     "readers treat differently")
    if member.method not in (STORED, DEFLATED):
        raise CheckpointError(where, f"member {name} uses compression method {member.method}; "
                                     "torch reads only stored and deflated members")
    if member.method == STORED and member.compressed != member.size:
        raise CheckpointError(where, f"member {name} is stored but says it is {member.size} "
                                     f"bytes and takes {member.compressed}")
    if b"\0" in member.name:
        raise CheckpointError(where, f"member {name} has a NUL byte in its name, where zipfile "
                                     "cuts the name short and torch does not")
    if disk:
        raise CheckpointError(where, f"member {name} lives on disk {disk} of a spanned archive, "
                                     "which torch does not read")


def _folder(entries: list[Member], where: str) -> bytes:
    """torch names the archive after its first member's top folder and reads only below it."""
    if not entries:
        raise CheckpointError(where, "is an empty zip archive, not a torch.save file")
    first = entries[0].name
    if b"/" not in first:
        raise CheckpointError(where, f"has its first member {entries[0].shown} outside any "
                                     "folder: torch refuses such an archive")
    folder = first[:first.index(b"/") + 1]
    for member in entries:
        if not member.name.startswith(folder):
            raise CheckpointError(where, f"has member {member.shown} outside the archive's "
                                         f"folder {shown_name(folder)}: torch refuses such an "
                                         "archive, and other readers would see files it does "
                                         "not")
    return folder


def _twins(first: Member, second: Member) -> str:
    if first.name == second.name:
        return (f"has two members named {first.shown}: torch and other readers would load "
                "different ones")
    return (f"has members {first.shown} and {second.shown}, whose names differ only in case: "
            "torch's lookup ignores case and may read either")


def _inflate(handle: BinaryIO, member: Member, where: str) -> bytes:
    """Deflated data, never inflated past the size the directory declares (no zip bombs)."""
    inflater = zlib.decompressobj(-15)
    out, pos, left = [], member.data_offset, member.compressed
    produced = 0
    try:
        while left and not inflater.eof:
            chunk = read_at(handle, pos, min(_CHUNK, left), where)
            pos, left = pos + len(chunk), left - len(chunk)
            piece = inflater.decompress(chunk, member.size + 1 - produced)
            produced += len(piece)
            out.append(piece)
            if produced > member.size or inflater.unconsumed_tail:
                break
    except zlib.error as exc:
        raise CheckpointError(where, f"member {member.shown} is not valid deflate data "
                                     f"({exc})") from None
    data = b"".join(out)
    if not inflater.eof or len(data) != member.size:
        raise CheckpointError(where, f"member {member.shown} inflates to other than the "
                                     f"{member.size} bytes its directory entry declares")
    return data
