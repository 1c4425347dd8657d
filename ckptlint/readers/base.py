"""What every checkpoint reader returns and the small protocol each reader module satisfies.

Also the shared limits: checkpoints are untrusted input, so every size read from a file is
checked against a bound before anything is allocated for it; and the one way a reader opens a
file (`open_regular`), which never blocks on a FIFO or device.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal, Mapping, Protocol

from ckptlint.errors import CheckpointError
from ckptlint.ftypes import Signature
from ckptlint.keys import natural_sorted

MAX_PICKLE_BYTES = 256 * 2**20  # a 70B model's data.pkl is ~100 kB; this leaves room for hparams
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit for its JSON header (MAX_HEADER_SIZE)
MAX_TEXT_BYTES = 64 * 2**20  # index JSON and signature TOML files
HEAD_BYTES = 512  # enough to recognise every format by its magic bytes


@dataclass(frozen=True, slots=True)
class CheckpointRead:
    """The signature read from one checkpoint, which format it was, and how it was found.

    `note` says which entry of a nested checkpoint was used (and the alternatives), empty for a
    plain state dict. `tied` lists keys the writer left out because they share a kept tensor
    (dropped key -> kept key), as safetensors' `save_model` records in its metadata.
    """

    signature: Signature
    format: str
    note: str = ""
    tied: Mapping[str, str] = field(default_factory=dict)

    @property
    def full_signature(self) -> Signature:
        """The signature with the dropped tied keys restored, as loading re-ties them."""
        return with_tied(self.signature, self.tied) if self.tied else self.signature


class Reader(Protocol):
    """A reader module: `sniff` recognises its format from the first bytes, `read` reads it."""

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path, state_dict_key: str | None = None) -> CheckpointRead: ...


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle calls something ckptlint refuses to run; names that global."""

    def __init__(self, path: str, global_name: str, member: str, message: str = ""):
        self.global_name = global_name
        super().__init__(path, message or (
            f"refuses to run `{global_name}`, which the pickle in {member} calls: the file may "
            "be malicious (torch.load with weights_only=False would execute it)"))


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder stands where a regular file is expected."""

    def __init__(self, path: str | os.PathLike[str], kind: str):
        self.kind = kind
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))


_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def describe(mode: int) -> str:
    """"a regular file", "a folder", or what special file a `st_mode` is, as a phrase."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((what for test, what in _SPECIAL if test(mode)), "a special file")


def file_kind(path: str | os.PathLike[str]) -> Literal["file", "folder"]:
    """Whether `path` is a regular file or a folder, looked at without opening it.

    Symlinks are followed (the OS resolves a chain; a loop is `OSError` ELOOP). A FIFO, device
    or socket raises `NotRegularFile`: nothing may open it, since reading one can block forever
    (a named pipe without a writer) or never end (`/dev/zero`). Missing: `FileNotFoundError`.
    This is the check for every path ckptlint reads from an untrusted place.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    raise NotRegularFile(path, describe(mode))


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for binary reading; never blocks, never opens a special file.

    `file_kind` refuses a special file before it is opened; the descriptor is then opened
    non-blocking and checked again, so a file swapped for a FIFO in between is refused too.
    Raises `NotRegularFile` (also for a folder) or the `OSError` of the failed open.
    """
    if file_kind(path) != "file":
        raise NotRegularFile(path, "a folder")
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, describe(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def unreadable(path: str | os.PathLike[str], exc: OSError) -> CheckpointError:
    """The one sentence for a path that could not be looked at or opened."""
    where = str(path)
    if isinstance(exc, NotRegularFile):
        return CheckpointError(where, f"is {exc.kind}, not a checkpoint file: ckptlint reads "
                                      "only regular files and checkpoint folders")
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(where, "does not exist")
    if exc.errno == errno.ELOOP:
        return CheckpointError(where, "is a symbolic link that loops back on itself")
    return CheckpointError(where, f"cannot be read ({exc.strerror or exc})")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    try:
        with open_regular(path) as handle:
            return handle.read(size)
    except OSError as exc:
        raise unreadable(path, exc) from None


def read_small(path: Path, limit: int, what: str) -> bytes:
    """The whole of a file that must be small (an index, a pickle), refused beyond `limit`."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise CheckpointError(str(path), f"is {size} bytes, more than the "
                                                 f"{limit >> 20} MiB ckptlint accepts for {what}")
            return handle.read(limit + 1)
    except OSError as exc:
        raise unreadable(path, exc) from None


def with_tied(sig: Signature, tied: Mapping[str, str]) -> Signature:
    """Add keys a writer dropped because they alias a kept tensor (dropped -> kept).

    `tied` is `CheckpointRead.tied`, or the code signature's `aliases` (which keys the model
    ties): a tied key missing from the checkpoint is then no "missing key" but an alias of the
    kept tensor, exactly as loading the model re-ties it.
    """
    groups: dict[str, set[str]] = {}
    for dropped, kept in tied.items():
        root = sig.aliases.get(kept, kept)
        groups.setdefault(root, set()).add(dropped)
    tensors, aliases = dict(sig.tensors), dict(sig.aliases)
    for root, dropped in groups.items():
        members = dropped | {root} | {k for k, r in aliases.items() if r == root}
        present = natural_sorted(k for k in members if k in tensors)
        if not present:
            continue
        for key in members - tensors.keys():
            tensors[key] = tensors[present[0]]
        first, *rest = natural_sorted(members)
        for key in members:
            aliases.pop(key, None)
        aliases.update(dict.fromkeys(rest, first))
    return replace(sig, tensors=tensors, aliases=aliases)
