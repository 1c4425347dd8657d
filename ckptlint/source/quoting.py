"""Small readings of source text for the locator's notes: a deleted statement quoted, its name
left out, the lines of a file, whether two lines share a function."""

from __future__ import annotations

import re
from pathlib import Path

from ckptlint.source.cst import SourceIndex


_MAX_QUOTED = 60  # characters of a deleted statement quoted in a note


def without_name(text: str, name: str) -> str:
    """A creating statement with its attribute's name taken out, spacing normalised."""
    return " ".join(re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", "<name>", text).split())


def same_function(index: SourceIndex, path: Path, line: int, other: int) -> bool:
    here, there = index.function_at(path, line), index.function_at(path, other)
    return here is not None and here == there


def shortened(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= _MAX_QUOTED else first[:_MAX_QUOTED - 1] + "…"


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
