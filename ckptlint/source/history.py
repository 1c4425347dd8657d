"""What git knows about the project: when a signature was committed and what changed since.

Best effort: outside a git work tree, or when git fails, every answer is "don't know" (None or
False), and callers then claim nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence


def git(root: Path, *args: str, strip: bool = True) -> str | None:
    """Git's output (stripped unless told), or None when git is missing, fails, or `root` is
    no work tree."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    # file contents may be any bytes: keep what is not UTF-8 visible instead of failing
    out = done.stdout.decode("utf-8", "surrogateescape")
    return out.strip() if strip else out


def last_commit(root: Path, path: str) -> str | None:
    """The commit that last changed `path` (relative to `root`)."""
    return git(root, "log", "-1", "--format=%H", "--", path) or None


def is_clean(root: Path, *paths: str) -> bool:
    """No uncommitted or untracked change to any of `paths`."""
    return git(root, "status", "--porcelain", "--", *paths) == ""


def unchanged_since(root: Path, signature: str, files: Sequence[str]) -> str | None:
    """The commit that last wrote `signature`, if neither it nor `files` changed since; else None.

    Paths are relative to `root`; uncommitted and untracked changes count as changes.
    """
    commit = last_commit(root, signature)
    if commit is None or not is_clean(root, signature, *files):
        return None
    return commit if git(root, "diff", "--quiet", commit, "--", signature, *files) == "" else None


def python_unchanged_since(root: Path, commit: str) -> bool:
    """No Python file of the work tree differs from `commit`, and none is untracked."""
    return (git(root, "diff", "--name-only", commit, "--", "*.py") == ""
            and git(root, "ls-files", "--others", "--exclude-standard", "--", "*.py") == "")


def show(root: Path, commit: str, path: str) -> str | None:
    """The text of `path` (relative to `root`) as it was at `commit`, byte for byte."""
    return git(root, "show", f"{commit}:./{path}", strip=False)
