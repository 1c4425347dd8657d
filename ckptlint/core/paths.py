"""Which files belong to the user's project (and may be annotated), and how to name them."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from ckptlint.core.urls import RemotePath

# ckptlint's own package folder, resolved and as imported (a worker imports it through a
# symlink): its modules are never the user's code
PACKAGE_DIR = Path(__file__).resolve().parent.parent
IMPORTED_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FOREIGN_PARTS = {"site-packages", "dist-packages", "__pypackages__", "node_modules"}


@lru_cache(maxsize=None)
def _environment_roots() -> tuple[Path, ...]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return tuple(Path(p).resolve() for p in prefixes if p)


def is_project_file(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True for a real source file under `root` that is not part of an installed environment."""
    try:
        resolved = Path(path).resolve()
        resolved.relative_to(Path(root).resolve())
    except (OSError, ValueError):
        return False
    if _FOREIGN_PARTS & set(resolved.parts) or not resolved.is_file():
        return False
    return not any(_is_under(resolved, env) for env in _environment_roots()
                   if not _is_under(Path(root).resolve(), env))


def _is_under(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when `path`, with every symlink on the way followed, is `root` or under it."""
    try:
        return _is_under(Path(path).resolve(), Path(root).resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: nowhere inside
        return False


def relative(path: str | os.PathLike | RemotePath, root: str | os.PathLike) -> str:
    """`path` relative to `root` with `/` separators (as annotations and SARIF expect); a URL
    as it is shown (`urls.shown`)."""
    if isinstance(path, RemotePath):
        return str(path)
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def display(path: str | os.PathLike | RemotePath) -> str:
    """How a path is named in messages: relative to the working directory when inside it."""
    if isinstance(path, RemotePath):
        return str(path)
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except (OSError, ValueError):
        return str(path)
