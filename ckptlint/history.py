"""What git knows about a model's files: whether anything changed since its signature was
committed. Best effort: outside a git work tree, or when git fails, every answer is None."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence


def _git(root: Path, *args: str) -> tuple[int, str] | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode, done.stdout.strip()


def unchanged_since(root: Path, signature: str, files: Sequence[str]) -> str | None:
    """The commit that last wrote `signature`, if neither it nor `files` changed since; else None.

    Paths are relative to `root`; uncommitted and untracked changes count as changes.
    """
    last = _git(root, "log", "-1", "--format=%H", "--", signature)
    if last is None or last[0] != 0 or not last[1]:
        return None
    paths = [signature, *files]
    status = _git(root, "status", "--porcelain", "--", *paths)
    if status is None or status[0] != 0 or status[1]:
        return None
    diff = _git(root, "diff", "--quiet", last[1], "--", *paths)
    return last[1] if diff is not None and diff[0] == 0 else None
