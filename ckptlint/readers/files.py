"""Only regular files where a file is expected: looked at before opening, opened without blocking.

The one check for every path ckptlint reads from an untrusted place (checkpoints, signature
files, and the cache and replay files, which anything may replace). Standard library only, so
the fastest paths can use it.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Literal


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
