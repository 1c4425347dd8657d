"""What changed in a model's files since its signature was committed, as git tells it.

The commit that last wrote a signature file is taken to hold the code that signature was built
from: `update` writes it from the code as it is, and the two are committed together. Every
answer here rests on that assumption, so it is given only when it can hold: the signature file
has no uncommitted change, and git answers. Otherwise there is no answer (None), and callers
point at the creating statements instead. No libcst and no torch here: only line numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

from ckptlint.core.record import field, record
from ckptlint.source import history

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_COMMENT = re.compile(r"""#[^'"]*$""")  # a trailing comment without quotes after the `#`


@record
class Hunk:
    """`old_count` lines at `old_start` in the commit became `new_count` lines at `new_start`
    in the work tree. As in `git diff -U0`, a count of 0 puts the change just after that line.
    `trivial` means only whitespace or comments differ."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    trivial: bool = False

    @property
    def new_end(self) -> int:
        """The last new line of the hunk (for a deletion, the line before the gap)."""
        return self.new_start + max(self.new_count, 1) - 1

    def touches(self, line: int, end_line: int) -> bool:
        """Whether the new lines `line`..`end_line` include a changed line, or a deletion
        strictly inside them (a keyword argument removed from a multi-line call)."""
        if self.new_count:
            return line <= self.new_end and self.new_start <= end_line
        return line <= self.new_start < end_line

    def holds_old(self, line: int) -> bool:
        return self.old_count > 0 and self.old_start <= line < self.old_start + self.old_count


@record
class Changes:
    """The non-empty changes of a model's files since `commit`, by file (relative path)."""

    commit: str
    signature: str
    hunks: Mapping[str, tuple[Hunk, ...]] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.commit[:7]

    def of(self, file: str) -> tuple[Hunk, ...]:
        return tuple(h for h in self.hunks.get(file, ()) if not h.trivial)

    def touched(self, file: str, line: int, end_line: int | None = None) -> Hunk | None:
        """The first real change inside the lines `line`..`end_line` of `file`, if any."""
        return next((h for h in self.of(file) if h.touches(line, end_line or line)), None)

    def new_line(self, file: str, old_line: int) -> tuple[int, Hunk | None]:
        """Where line `old_line` of the committed file is now, and the hunk that changed it
        (None when the line survived unchanged and only moved)."""
        shift = 0
        for hunk in self.hunks.get(file, ()):
            if hunk.holds_old(old_line):
                return hunk.new_start, hunk
            before = hunk.old_start + hunk.old_count - 1 if hunk.old_count else hunk.old_start
            if before < old_line:
                shift += hunk.new_count - hunk.old_count
        return old_line + shift, None


def since(root: Path, signature: str, files: Sequence[str] | None) -> Changes | None:
    """The changes of `files` (relative to `root`; None: every Python file under it) since
    `signature` was last committed; uncommitted and untracked changes count. None when that
    commit is not a safe origin, or git cannot say."""
    commit = history.last_commit(root, signature)
    if commit is None or not history.is_clean(root, signature):
        return None  # never committed, or rewritten since: the commit is not its origin
    paths = sorted(set(files)) if files is not None else ["*.py"]
    if not paths:
        return Changes(commit, signature)
    patch = history.git(root, "-c", "core.quotepath=off", "diff", "-U0", "--no-color",
                        "--no-ext-diff", "--no-renames", "--relative", commit, "--", *paths)
    untracked = history.git(root, "-c", "core.quotepath=off", "ls-files", "--others",
                            "--exclude-standard", "--", *paths)
    if patch is None or untracked is None:
        return None
    hunks = parse(patch, set(files) if files is not None else None)
    for name in untracked.splitlines():
        hunks[name] = (Hunk(0, 0, 1, _line_count(root / name)),)
    return Changes(commit, signature, hunks)


def parse(patch: str, files: set[str] | None) -> dict[str, tuple[Hunk, ...]]:
    """Hunks by file from `git diff -U0` output (of `files` only, unless None); a file git had
    to quote is left out."""
    found: dict[str, list[Hunk]] = {}
    current: str | None = None
    header: tuple[int, int, int, int] | None = None
    old: list[str] = []
    new: list[str] = []

    def close() -> None:
        if current is not None and header is not None:
            found.setdefault(current, []).append(Hunk(*header, trivial=_same_code(old, new)))

    for line in patch.splitlines():
        if line.startswith("diff --git "):
            close()
            current, header = None, None
        elif line.startswith("+++ "):
            name = line[4:].removeprefix("b/")
            current = name if (files is None or name in files) and \
                not name.startswith('"') and name != "/dev/null" else None
        elif (match := _HUNK.match(line)) is not None:
            close()
            a, b, c, d = match.groups()
            header = (int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d))
            old, new = [], []
        elif header is not None and line[:1] in "-+" and not line.startswith(("---", "+++")):
            (old if line[0] == "-" else new).append(line[1:])
    close()
    return {name: tuple(hunks) for name, hunks in found.items()}


def _same_code(old: list[str], new: list[str]) -> bool:
    """Only blank lines, indentation or trailing comments differ (an approximation: a `#`
    inside a string on a changed line counts as code, so the change is not trivial)."""
    def code(lines: list[str]) -> list[str]:
        stripped = (_COMMENT.sub("", line).strip() for line in lines)
        return [line for line in stripped if line]
    return code(old) == code(new)


def _line_count(path: Path) -> int:
    try:
        return max(len(path.read_text(encoding="utf-8").splitlines()), 1)
    except (OSError, UnicodeDecodeError):
        return 1


def old_text(root: Path, commit: str, file: str) -> str | None:
    """The text of `file` as it was at `commit`."""
    return history.show(root, commit, file)
