"""Each format's name and sniffer, apart from its reader, so the dispatcher can tell a file's
format without importing every reader (their unpickler, tarfile and zip code cost a third of
a cold `ckptlint inspect`): only the reader of the format found is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ckptlint.readers.files import is_folder, lexists

TORCH_ZIP, TORCH_LEGACY, SAFETENSORS = "torch-zip", "torch-legacy", "safetensors"
DCP, SHARDED, SIGNATURE = "torch-dcp", "sharded", "signature"
DCP_METADATA = ".metadata"
TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # the first object of a legacy torch.save pickle
MAGIC_PICKLE = b"\x80\x02\x8a\x0a" + TORCH_MAGIC_NUMBER.to_bytes(10, "little")
_TAR_MAGIC = b"ustar"
_TAR_BLOCK = 512  # tarfile.BLOCKSIZE
_SIGNATURE_STARTS = (b"# ckptlint signature", b"[signature]")


def torch_zip(path: Path, head: bytes) -> bool:
    # torch.load takes the zip path only for files starting with a local header; an empty
    # archive is recognised here to be refused with a sentence
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def torch_legacy(path: Path, head: bytes) -> bool:
    # torch pickles its magic number first, as a 10-byte LONG1, whatever the protocol
    return head[:1] == b"\x80" and head[2:14] == MAGIC_PICKLE[2:] or is_tar(head)


def is_tar(head: bytes) -> bool:
    """Whether torch.load would read the file as a pre-1.0 tar checkpoint.

    It tries `tarfile` first on any file that is not a zip, and tarfile accepts any first
    block that parses as a header (a valid checksum is enough, no `ustar` magic needed): a
    legacy pickle stream can be crafted to be one, and torch would then unpickle the tar's
    members instead of the stream ckptlint reads.
    """
    if head[257:262] == _TAR_MAGIC:
        return True
    if len(head) < _TAR_BLOCK or not _checksum_may_parse(head[148:156]):
        return False  # tarfile refuses a short first block, or this checksum field
    import tarfile  # the very check torch's loader makes, imported only when it may pass

    try:
        tarfile.TarInfo.frombuf(head[:tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except (tarfile.HeaderError, ValueError, UnicodeError):
        return False
    return True


# every byte `int(text, 8)` may meet in tarfile's checksum field, and more: the octal digits,
# a sign, `_` between digits, a `0o` prefix, and whitespace (ASCII controls and space)
_OCTAL_FIELD = frozenset(b"01234567+-_oO" + bytes(range(1, 33)))


def _checksum_may_parse(field: bytes) -> bool:
    """False only when tarfile would refuse the header's checksum field (`tarfile.nti`):
    tarfile, and the shutil, bz2 and lzma it imports (7 ms, a tenth of `ckptlint inspect`),
    then load only for a file whose first block could be a header. A safetensors file's
    JSON there (`":[2,2],`) never could. The set is wider than tarfile's rule, never
    narrower (tests/readers/test_readers_malicious.py compares the two on crafted and random
    blocks).
    """
    if field[:1] in (b"\x80", b"\xff"):  # a base-256 number: any bytes parse
        return True
    return all(byte in _OCTAL_FIELD for byte in field.partition(b"\0")[0])


def safetensors(path: Path, head: bytes) -> bool:
    # the Rust reader skips JSON whitespace before the header's `{`
    return len(head) >= 9 and head[8:].lstrip(b" \t\r\n")[:1] == b"{" \
        and not head.startswith(b"PK")


def dcp(path: Path, head: bytes) -> bool:
    # a `.metadata` of any kind makes a DCP folder: reading it refuses a FIFO with a sentence
    return path.name == DCP_METADATA or (is_folder(path) and lexists(path / DCP_METADATA))


def sharded(path: Path, head: bytes) -> bool:
    return path.name.endswith(".index.json") and head.lstrip()[:1] == b"{"


def signature(path: Path, head: bytes) -> bool:
    return path.suffix == ".toml" or head.lstrip().startswith(_SIGNATURE_STARTS)


# format -> (the module that reads it, its sniffer), in the order the sniffers are asked: the
# order torch.load itself tries (zip, then tar, then the legacy pickle), then the rest
SNIFFERS: dict[str, tuple[str, Callable[[Path, bytes], bool]]] = {
    TORCH_ZIP: ("torchzip", torch_zip),
    TORCH_LEGACY: ("legacy", torch_legacy),
    SAFETENSORS: ("safetensors", safetensors),
    DCP: ("dcp", dcp),
    SHARDED: ("sharded", sharded),
    SIGNATURE: ("sigtoml", signature),
}
