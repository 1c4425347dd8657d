"""Only regular files where a file is expected: looked at before opening, opened without blocking.

The one check for every path ckptlint reads from an untrusted place (checkpoints, signature
files, and the cache and replay files, which anything may replace). Standard library only, so
the fastest paths can use it.

Also the one place a reader's path may be a URL (`urls.RemotePath`): each function here hands
it to `remote`, whose file-like serves the same reads in bounded ranged requests, so every
reader and every hostile-input rule works on remote checkpoints unchanged. A command that
streams tensor data (`convert`) opens its source the same way (`urls.location`, then
`open_regular`): a read of any size is served in requests of at most `remote.MAX_REQUEST`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable, Literal

from ckptlint.core.errors import NotRegularFile
from ckptlint.core.urls import RemotePath

__all__ = ["NotRegularFile", "children", "describe", "file_kind", "is_file", "is_folder",
           "lexists", "open_regular", "prefetch", "size_of"]


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
    if isinstance(path, RemotePath):
        from ckptlint.readers import remote

        return remote.kind(path)  # type: ignore[return-value]
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
    A URL opens as a `remote.RemoteFile` (no descriptor: ask `size_of` for its size).
    """
    if isinstance(path, RemotePath):
        from ckptlint.readers import remote

        return remote.open_remote(path)  # type: ignore[return-value]
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


def size_of(handle: BinaryIO) -> int:
    """The size of a file `open_regular` opened: fstat for a local one, the server's word
    (already checked against every answer) for a remote one."""
    size = getattr(handle, "size", None)
    return size if isinstance(size, int) else os.fstat(handle.fileno()).st_size


def lexists(path: str | os.PathLike[str] | RemotePath) -> bool:
    """Whether anything is there (a broken symlink counts, as `os.path.lexists` says)."""
    if isinstance(path, RemotePath):
        from ckptlint.readers import remote

        return remote.exists(path)
    return os.path.lexists(path)


def is_folder(path: Path | RemotePath) -> bool:
    """Whether a folder is there, local or remote (`Path.is_dir`; a network failure raises)."""
    try:
        return file_kind(path) == "folder"
    except OSError:
        return False


def is_file(path: Path | RemotePath) -> bool:
    """Whether a regular file is there, local or remote (`Path.is_file`; a special file is not)."""
    try:
        return file_kind(path) == "file"
    except OSError:
        return False


def children(folder: Path | RemotePath) -> list:
    """A folder's entries, sorted. Raises `OSError` for a local folder that cannot be listed."""
    if isinstance(folder, RemotePath):
        from ckptlint.readers import remote

        return remote.children(folder)
    return sorted(folder.iterdir())


def prefetch(handle: BinaryIO, spans: Iterable[tuple[int, int]]) -> None:
    """Tell a remote file which (offset, length) spans come next, so they are fetched together
    and concurrently; nothing for a local file, which reads them as cheaply one by one."""
    ahead = getattr(handle, "prefetch", None)
    if ahead is not None:
        ahead(spans)
