"""Atomic writes: a temp file flushed to disk, then a rename, so no reader and no crash sees half.

A run killed between the two leaves its temp file behind. So that `git add signatures/` never
stages one, callers writing into the project pass a `scratch` folder that git ignores (in the
cache folder); where it cannot be used, the temp file goes next to the target under a name
ending in `SUFFIX`, which the README's `.gitignore` advice covers. Either way a later write
into the same folders removes temp files older than `STALE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from ckptlint.core.errors import WriteError
from ckptlint.core.paths import display

SUFFIX = ".ckptlint-tmp"
SCRATCH = "tmp"  # the folder of the project's cache folder that holds temp files
# A temp file lives for the milliseconds between its write and its rename; one an hour old was
# left by a killed run, and no live run (concurrent ones included) still needs it.
STALE_SECONDS = 3600
_IGNORE_ALL = "# created by ckptlint: temporary files, never committed\n*\n"
_NEW_FILE_MODE = 0o644  # mkstemp makes 0600; a committed file must stay readable


def _mkstemp(**where: str | Path) -> tuple[int, str]:
    import tempfile  # (and random, hashlib's sha512): loaded only by a run that writes

    return tempfile.mkstemp(**where)  # type: ignore[call-overload]


def write_atomic(path: Path, text: str, scratch: Path | None = None) -> bool:
    """Write `text` to `path` (temp file, fsync, rename); False when the file already held it.

    `scratch` is a folder on the target's filesystem that git ignores, for the temp file.
    Raises `WriteError` naming `path` when it cannot be written.
    """
    data = text.encode("utf-8")
    mode = _mode_if_changed(path, data)
    if mode is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep(path.parent, path.name)
        folder = _usable_scratch(scratch)
        try:
            _put(path, folder or path.parent, data, mode)
        except OSError:
            if folder is None:
                raise
            _put(path, path.parent, data, mode)  # e.g. another filesystem (EXDEV): next to it
    except OSError as exc:
        raise WriteError(display(path), exc) from exc
    return True


def _mode_if_changed(path: Path, data: bytes) -> int | None:
    """The mode the new file gets (the old file's), or None when it already holds `data`."""
    try:
        if path.read_bytes() == data:
            return None
        return path.stat().st_mode & 0o777
    except OSError:  # absent, a folder, unreadable: the write says what is wrong
        return _NEW_FILE_MODE


def _put(path: Path, folder: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temp file in `folder`, flush it to disk, rename it onto `path`."""
    fd, name = _mkstemp(dir=folder, prefix=f".{path.name}.", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # else a crash after the rename can leave an empty file
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not possible everywhere (Windows), where it is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _usable_scratch(scratch: Path | None) -> Path | None:
    """`scratch`, created with a `.gitignore` of its own, or None when that is not possible
    (no cache folder wanted, a file in the way, a read-only project)."""
    if scratch is None:
        return None
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        ignore = scratch / ".gitignore"
        if not ignore.is_file():
            _put(ignore, scratch, _IGNORE_ALL.encode(), _NEW_FILE_MODE)
        _sweep(scratch)
    except OSError:
        return None
    return scratch


def _sweep(folder: Path, target: str = "") -> None:
    """Remove temp files older than STALE_SECONDS: ours (SUFFIX), and those of earlier ckptlint
    versions for `target` (`.NAME.toml.XXXXXXXX.tmp`)."""
    legacy = re.compile(rf"\.{re.escape(target)}\.[a-z0-9_]{{8}}\.tmp") if target else None
    cutoff = time.time() - STALE_SECONDS
    try:
        names = [n for n in os.listdir(folder)
                 if n.endswith(SUFFIX) or (legacy and legacy.fullmatch(n))]
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            if os.lstat(folder / name).st_mtime < cutoff:
                os.unlink(folder / name)


class Staged:
    """A large file being written to a temp file (see `staged`), renamed onto its target only
    by `commit`."""

    def __init__(self, target: Path, temp: Path, handle: BinaryIO, mode: int):
        self.target, self.temp, self.handle, self._mode = target, temp, handle, mode
        self.committed = False

    def finish(self) -> None:
        """Flush the temp file to disk and close it: it can be read, and then committed."""
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())  # else a crash after the rename can leave it empty
            self.handle.close()

    def commit(self) -> None:
        self.finish()
        try:
            os.chmod(self.temp, self._mode)
            os.replace(self.temp, self.target)
        except OSError as exc:
            raise WriteError(display(self.target), exc) from exc
        self.committed = True
        _sync_folder(self.target.parent)


@contextlib.contextmanager
def staged(path: Path, scratch: Path | None = None) -> Iterator[Staged]:
    """A temp file for writing `path` in pieces; renamed onto it by `Staged.commit`, removed
    when the block ends without a commit (an error, a failed proof, an interrupt).

    The temp file goes into `scratch` when that folder is usable and on the target's
    filesystem (a rename cannot cross filesystems), else next to `path` as `*SUFFIX`.
    """
    try:
        mode = path.stat().st_mode & 0o777 if path.is_file() else _NEW_FILE_MODE
        _sweep(path.parent, path.name)
        folder = _usable_scratch(scratch)
        if folder is not None and os.stat(folder).st_dev != os.stat(path.parent).st_dev:
            folder = None
        fd, name = _mkstemp(dir=folder or path.parent, prefix=f".{path.name}.",
                                    suffix=SUFFIX)
    except OSError as exc:
        raise WriteError(display(path), exc) from exc
    stage = Staged(path, Path(name), os.fdopen(fd, "wb"), mode)
    try:
        yield stage
    finally:
        if not stage.committed:
            stage.handle.close()
            with contextlib.suppress(OSError):
                os.unlink(stage.temp)
