"""Suppressions: per-model `ignore` key patterns from pyproject.toml, and inline
`# ckptlint: ignore[CODE]` comments on the statement a finding points at.

A suppressed finding leaves the report and the exit code; a pattern that suppressed nothing
is reported (CKL205) so stale suppressions do not pile up.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ckptlint.compare.messages import describe, fold_findings
from ckptlint.core.kinds import Kind
from ckptlint.core.record import record, replace
from ckptlint.core.records import Finding, Location
from ckptlint.source import directives



def by_pattern(findings: Sequence[Finding], ignore: Mapping[str, Sequence[str]]
               ) -> tuple[list[Finding], list[str]]:
    """The findings no pattern ignores, and the patterns that ignored nothing (config order).

    A pattern ignores the keys of a finding it matches (fnmatch, `*` crosses dots) when the
    finding's code is listed for it; a folded finding whose keys match only in part keeps the
    rest, refolded.
    """
    used: set[str] = set()
    kept: list[Finding] = []
    for finding in findings:
        keys = finding.keys or ((finding.key,) if finding.key else ())
        rest = [k for k in keys if not _ignored(k, finding.code, ignore, used)]
        if not keys or len(rest) == len(keys):
            kept.append(finding)
        elif rest:
            kept += _narrowed(finding, rest)
    return kept, [p for p in ignore if p not in used]


def _ignored(key: str, code: str, ignore: Mapping[str, Sequence[str]], used: set[str]) -> bool:
    hits = [p for p, codes in ignore.items() if code in codes and fnmatch.fnmatchcase(key, p)]
    used.update(hits)
    return bool(hits)


def _narrowed(finding: Finding, keys: list[str]) -> list[Finding]:
    """The part of a folded finding that was not ignored, or all of it if it cannot be split."""
    kind, old, new = finding.kind, finding.old, finding.new
    if finding.new_key or finding.message != describe(kind, finding.key, old, new):
        return [finding]
    return fold_findings(replace(finding, key=k, keys=(k,), message=describe(kind, k, old, new))
                         for k in keys)


def unused_patterns(model: str, patterns: Iterable[str], where: Location) -> list[Finding]:
    return [Finding(Kind.UNUSED_SUPPRESSION, model,
                    f"the `ignore` pattern \"{p}\" of model `{model}` matched no finding",
                    key=p, location=where,
                    help="remove it: the drift it silenced is gone") for p in patterns]


@record
class Comment:
    """A `# ckptlint: ignore[...]` comment: its codes ({"*"} for all) and whether it stands on a
    line of its own (then it covers the statement below it)."""

    codes: frozenset[str]
    alone: bool
    column: int = 1


def comments(root: str, files: Iterable[str]) -> dict[tuple[str, int], Comment]:
    """Every `# ckptlint: ignore[...]` comment of the files, by (file, line).

    A text search finds the candidates and Python's tokenizer confirms them (a string that
    merely contains the words is no comment); libcst is not needed for this.
    """
    import io
    import tokenize

    found: dict[tuple[str, int], Comment] = {}
    for name in sorted(set(f for f in files if f.endswith(".py"))):
        try:
            text = (Path(root) / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "ckptlint" not in text:
            continue
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (tokenize.TokenError, SyntaxError):
            continue
        for token in tokens:
            codes = directives.codes(token.string) if token.type == tokenize.COMMENT else None
            if codes is not None:
                alone = not token.line[:token.start[1]].strip()
                found[(name, token.start[0])] = Comment(codes, alone, token.start[1] + 1)
    return found


def used_comments(suppressed: Iterable[Finding],
                  found: Mapping[tuple[str, int], Comment]) -> set[tuple[str, int]]:
    """The comments that silenced these findings: on their statement, or alone just above it."""
    used = set()
    for finding in suppressed:
        loc = finding.location
        if loc is None:
            continue
        for line in range(loc.line - 1, (loc.end_line or loc.line) + 1):
            comment = found.get((loc.file, line))
            if comment is None or (line < loc.line and not comment.alone):
                continue
            if finding.code in comment.codes or "*" in comment.codes:
                used.add((loc.file, line))
    return used


def unused_comments(found: Mapping[tuple[str, int], Comment],
                    used: set[tuple[str, int]]) -> list[Finding]:
    return [Finding(Kind.UNUSED_SUPPRESSION, "",
                    f"the `# ckptlint: ignore{_codes(found[spot].codes)}` comment silences no "
                    "finding",
                    location=Location(spot[0], spot[1], found[spot].column),
                    help="remove it: a stale suppression would hide future drift")
            for spot in sorted(set(found) - used)]


def _codes(codes: frozenset[str]) -> str:
    return "" if codes == {"*"} else f"[{', '.join(sorted(codes))}]"


def inline(findings: Sequence[Finding], root: str, index: Any) -> list[Finding]:
    """The findings whose located statement carries no `# ckptlint: ignore[...]` for their code.

    `index` is the locator's `cst.SourceIndex`, so no file is parsed twice.
    """
    from ckptlint.source.spans import Span

    kept = []
    for finding in findings:
        loc = finding.location
        if loc is None or not loc.file.endswith(".py"):
            kept.append(finding)
            continue
        span = Span(loc.line, loc.column, loc.end_line or loc.line, loc.end_column or 1)
        codes = index.suppressions(Path(root) / loc.file, span)
        # a group (one cause) goes only when the comment names every code it explains: one
        # that silences CKL101 must not take the CKL103 changes of the same edit with it
        needed = {finding.code} | {m.code for m in finding.members}
        if not ("*" in codes or needed <= codes):
            kept.append(finding)
    return kept
