"""One finding per cause: the findings one edit explains become one finding at the edited line.

With git (`ckptlint.source.changes`: what changed since the signature was committed), each
finding is traced to the change behind it, in order: the statement creating its keys, if it
changed; a changed statement on the way there (the parent's call, a helper's caller); else the
one change elsewhere that spells out one of its keys (an entry of transformers'
`_tied_weights_keys`), or for a tie the one that names a tie (`tie_word_embeddings`), or that
its code reads (a dataclass default, a keyword default, a module constant, a kwarg in
pyproject.toml). A cause elsewhere is claimed only when it is the only candidate left (or the
only one whose names the code reads): never a guess. Findings with one cause become one
finding there, each key still listed at its creating statement (`Finding.members`); findings
without a known cause are grouped by creating statement.
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from ckptlint.core.kinds import Kind, Severity
from ckptlint.core.record import record, replace
from ckptlint.core.records import BuildResult, Finding, Frames, Location, ModelSpec
from ckptlint.source.changes import Hunk
from ckptlint.source.wording import headline

if TYPE_CHECKING:  # the locator brings libcst; this module only asks it questions
    from ckptlint.source.locate import Locator

# findings about tensors, which one edit can explain together
GROUPED = frozenset({Kind.MISSING_KEY, Kind.UNEXPECTED_KEY, Kind.SHAPE_MISMATCH,
                     Kind.DTYPE_MISMATCH, Kind.RENAMED_KEY, Kind.ROLE_CHANGED,
                     Kind.BUFFER_NOT_PERSISTENT, Kind.TIE_CHANGED})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED_KEY = re.compile(r"""["']([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)+)["']""")  # "lm_head.weight"
_COMMENT = re.compile(r"#.*$")
_ASSIGNED = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\s*=(?!=)")  # a keyword or target, not `==`
# names every model's code says: they tie nothing to anything
_COMMON = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {
    "self", "cls", "nn", "torch", "F", "np", "math", "super", "config", "kwargs", "args",
    "__init__", "dim", "x"}
_MAX_FRAMES_ASKED = 64  # functions searched for names per finding: the first frames decide


@record
class Cause:
    """Where the findings of a group come from, and how that is known (the location's note)."""

    location: Location
    changed: bool  # an edit (known from git), not just the statement creating the keys


@record
class _Region:
    """A change not yet explaining anything: a hunk of a model file, or the kwargs line."""

    location: Location
    names: frozenset[str]
    kwargs: bool = False
    quoted: frozenset[str] = frozenset()  # its string literals that could be keys


def group(locator: "Locator", findings: Sequence[Finding], spec: ModelSpec,
          result: BuildResult | None) -> list[Finding]:
    """`findings` (located) with those of one cause merged, in the order of their first."""
    tracer = _Tracer(locator, spec, result)
    causes = tracer.causes(findings)
    groups: dict[tuple, list[Finding]] = {}
    order: list[tuple | Finding] = []
    for finding, cause in zip(findings, causes):
        if finding.kind not in GROUPED or not finding.keys or finding.location is None:
            order.append(finding)
            continue
        where = cause.location if cause else finding.location
        slot = (_identity(where), finding.against, cause is not None and cause.changed)
        if slot not in groups:
            groups[slot] = []
            order.append(slot)
        groups[slot].append(finding)
    causes_at = {id(f): c for f, c in zip(findings, causes)}
    return [item if isinstance(item, Finding) else
            _merged(groups[item], causes_at[id(groups[item][0])], spec.name)
            for item in order]


def _identity(location: Location) -> tuple:
    return (location.file, location.line, location.column, location.end_line,
            location.end_column)


class _Tracer:
    """Finds the cause of each finding of one model."""

    def __init__(self, locator: "Locator", spec: ModelSpec, result: BuildResult | None):
        self.locator, self.spec, self.result = locator, spec, result
        self.index, self.root = locator.index, locator.root
        self.changes = locator.changes(spec.name, result) if result is not None else None
        self.claimed: set[tuple[str, Hunk]] = set()
        self._unchanged: bool | None = None
        self._said: dict[tuple, frozenset[str]] = {}

    def causes(self, findings: Sequence[Finding]) -> list[Cause | None]:
        traced = [self._traced(f) if self._traceable(f) else None for f in findings]
        if self.changes is None:
            return traced
        loose = [i for i, (f, c) in enumerate(zip(findings, traced))
                 if c is None and self._traceable(f)]
        regions = self._regions(findings) if loose else []
        for i in loose:
            traced[i] = self._elsewhere(findings[i], regions)
        return traced

    def _traceable(self, finding: Finding) -> bool:
        return (self.changes is not None and finding.kind in GROUPED and not finding.against
                and finding.location is not None)

    def frames(self, finding: Finding) -> Frames:
        return self.locator.frames_of(finding)

    # -- a change on the way to the key -------------------------------------------------------

    def _traced(self, finding: Finding) -> Cause | None:
        """The finding's own statement, or the innermost statement on its way, if it changed."""
        own = finding.location
        if own.file.endswith(".py") and (self._claim(own.file, own.line, own.end_line)
                                         or self._at_deletion(own)):
            return Cause(replace(own, note=self._changed_note(own, own.note)), True)
        # on the way, the line that ran must be the changed one: a long statement that builds
        # many layers (`nn.ModuleDict(dict(wte=..., h=..., ln_f=...))`) is not the cause of
        # every key below it because one of its entries changed
        for file, line in self.frames(finding)[:_MAX_FRAMES_ASKED]:
            span = self.index.statement_at(self.root / file, line)
            if span is not None and self._claim(file, line, line):
                location = self.locator.with_source(self._cut(span.location(file), line, line))
                return Cause(replace(location, note=self._changed_note(location, "")), True)
        return None

    def _cut(self, location: Location, first: int, last: int) -> Location:
        """A cause's statement cut down to its changed lines `first`..`last`: the group's
        annotation sits on the diff, and an ignore comment on another line of a long statement
        (a sibling entry's, `emb=...,  # ckptlint: ignore[CKL103]`) silences nothing here."""
        end = location.end_line or location.line
        lo, hi = max(first, location.line), min(last, end)
        parsed = self.index.parsed(self.root / location.file)
        if (lo, hi) == (location.line, end) or lo > hi or parsed is None:
            return location
        lines = parsed.lines
        column = location.column if lo == location.line else \
            len(lines[lo - 1]) - len(lines[lo - 1].lstrip()) + 1
        end_column = location.end_column if hi == end else len(lines[hi - 1].rstrip()) + 1
        return replace(location, line=lo, column=column, end_line=hi, end_column=end_column)

    def _claim(self, file: str, line: int, end_line: int | None) -> bool:
        hunk = self.changes.touched(file, line, end_line or line) if self.changes else None
        if hunk is not None:
            self.claimed.add((file, hunk))
        return hunk is not None

    def _at_deletion(self, own: Location) -> bool:
        """Whether `own` is where a deletion left its gap (a removed layer's statement)."""
        for hunk in self.changes.of(own.file):
            span = self.locator._at_hunk(own.file, hunk) if not hunk.new_count else None
            if span is not None and (span.line, span.column) == (own.line, own.column):
                self.claimed.add((own.file, hunk))
                return True
        return False

    def _changed_note(self, location: Location, note: str) -> str:
        changes = self.changes
        said = f"changed since {changes.signature} was committed ({changes.short})"
        return f"{note}; {said}" if note and changes.short not in note else note or said

    # -- a change elsewhere ---------------------------------------------------------------------

    def _regions(self, findings: Sequence[Finding]) -> list[_Region]:
        """The changes no finding's statements explain, where a build could read them. None
        at all after a torch upgrade: then the upgrade may explain what the code does not."""
        from ckptlint.source.blame import committed_torch

        if committed_torch(self.root / self.changes.signature) not in ("", self._torch()):
            return []
        places = [(file, line) for f in findings for file, line in self.frames(f)]
        places += [(f.location.file, f.location.line) for f in findings if f.location]
        regions = [self._hunk_region(file, hunk)
                   for file in sorted(self.changes.hunks) if file.endswith(".py")
                   for hunk in self.changes.of(file)
                   if (file, hunk) not in self.claimed and self._read(file, hunk, places)]
        kwargs = self._kwargs_region()
        return [r for r in regions if r is not None] + ([kwargs] if kwargs else [])

    def _read(self, file: str, hunk: Hunk, places: list[tuple[str, int]]) -> bool:
        """Whether a build could read the changed lines: outside any function (a module
        constant, a dataclass field), in a `def` header (a default), or in a function on the
        way to a finding's key (not `forward`, not an initialiser nobody called)."""
        function = self.index.function_at(self.root / file, hunk.new_start)
        if function is None:
            return True
        header, whole = function
        if hunk.new_start <= header.end_line:
            return True
        return any(f == file and whole.line <= line <= whole.end_line for f, line in places)

    def _hunk_region(self, file: str, hunk: Hunk) -> _Region | None:
        span = self.locator._at_hunk(file, hunk)
        if span is None:
            return None
        location = span.location(file)
        if hunk.new_count:
            location = self._cut(location, hunk.new_start, hunk.new_end)
        location = self.locator.with_source(location)
        note = self._changed_note(location, "")
        text = self._hunk_text(file, hunk)
        return _Region(replace(location, note=note), _names(text),
                       quoted=frozenset(m for line in text for m in _QUOTED_KEY.findall(line)))

    def _hunk_text(self, file: str, hunk: Hunk) -> list[str]:
        """The hunk's lines on both sides: what the edit removed and what it wrote."""
        parsed = self.index.parsed(self.root / file)
        lines = list(parsed.lines[hunk.new_start - 1:hunk.new_end]) \
            if parsed is not None and hunk.new_count else []
        old = self.locator.old_source(self.changes, file)
        before = self.index.parsed(old) if old else None
        if before is not None and hunk.old_count:
            lines += before.lines[hunk.old_start - 1:hunk.old_start + hunk.old_count - 1]
        return lines

    def _kwargs_region(self) -> _Region | None:
        from ckptlint.source.blame import kwargs_delta

        delta = kwargs_delta(self.locator.config, self.spec, self.changes)
        if delta is None:
            return None
        note, names = delta
        location = self.locator.with_source(
            self.locator.entry_key(self.spec, "kwargs", note))
        return _Region(location, frozenset(names), kwargs=True)

    def _torch(self) -> str:
        signature = self.result.signature if self.result else None
        return signature.torch_version if signature else ""

    def _elsewhere(self, finding: Finding, regions: list[_Region]) -> Cause | None:
        """The one region that explains a finding whose own statements did not change: the
        first its code reads, nearest code first (its statement, the statements on the way,
        then their functions), while that is only one; or the kwargs, when no Python file
        changed at all (then nothing else can have)."""
        if len(regions) == 1 and regions[0].kwargs and self._python_unchanged():
            return Cause(regions[0].location, True)
        # a change that spells out one of its keys: the entry of a table the model's loading
        # or tying reads by key (transformers' `_tied_weights_keys`), written or deleted
        keys = set(finding.keys) | {finding.key}
        quoting = [r for r in regions if r.quoted & keys]
        if len(quoting) == 1:
            return Cause(quoting[0].location, True)
        if finding.kind is Kind.TIE_CHANGED:  # a tie switched on or off where none is spelled
            tying = [r for r in regions if any("tie" in name.lower() for name in r.names)]
            if len(tying) == 1:
                return Cause(tying[0].location, True)
        names: frozenset[str] = frozenset()
        for said in self._readers(finding):
            names |= said
            read = [r for r in regions if r.names & names]
            if len(read) == 1:
                return Cause(read[0].location, True)
            if len(read) > 1:
                return None  # two edits it reads: which one did it is not known
        return None

    def _python_unchanged(self) -> bool:
        from ckptlint.source import history

        if self._unchanged is None:
            self._unchanged = history.python_unchanged_since(self.root, self.changes.commit)
        return self._unchanged

    def _readers(self, finding: Finding) -> Iterator[frozenset[str]]:
        """The names said by the code that made the finding's keys, nearest first."""
        own = finding.location
        spots = list(self.frames(finding))[:_MAX_FRAMES_ASKED]
        if own.file.endswith(".py"):
            # the located span itself (an element of a literal container, not all of it)
            yield self._names_of(own.file, replace(own, end_line=own.end_line or own.line,
                                                   end_column=own.end_column or 10 ** 6))
            spots.insert(0, (own.file, own.line))
        for file, line in spots:
            span = self.index.statement_at(self.root / file, line)
            if span is not None:
                yield self._names_of(file, span)
        for file, line in spots:
            function = self.index.function_at(self.root / file, line)
            if function is not None:
                yield self._names_of(file, function[1])

    def _names_of(self, file: str, span) -> frozenset[str]:
        """The names a statement or function says (each read once per run)."""
        key = (file, span)
        if key not in self._said:
            self._said[key] = _names([self.index.text(self.root / file, span)], read=True)
        return self._said[key]


def _names(texts: Iterable[str], read: bool = False) -> frozenset[str]:
    """Identifiers in the code of `texts` (comments dropped), minus names every model says;
    with `read`, only the names the code reads: not those it assigns or passes a keyword as
    (`bias=` in `nn.Linear(d, n, bias=False)` reads no `bias`)."""
    found: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            code = _COMMENT.sub("", line)
            found.update(_IDENT.findall(_ASSIGNED.sub("", code) if read else code))
    return frozenset(found - _COMMON)


# -- the grouped finding ---------------------------------------------------------------------


def _merged(members: list[Finding], cause: Cause | None, model: str) -> Finding:
    """One finding for `members`; a lone finding at its own statement stays as it is."""
    first = members[0]
    if len(members) == 1 and (cause is None or
                              _identity(cause.location) == _identity(first.location)):
        return replace(first, location=cause.location) if cause else first
    primary = min(members, key=_rank)
    location = cause.location if cause else first.location
    keys = tuple(k for m in members for k in m.keys)
    helps = {m.help for m in members}
    elsewhere = cause is not None and cause.changed and all(
        _identity(m.location) != _identity(cause.location) for m in members)
    help_ = _accept(model, members) if elsewhere or len(helps) > 1 else first.help
    return Finding(primary.kind, first.model, headline(members, bool(cause and cause.changed)),
                   key=first.key, keys=keys, location=location, help=help_,
                   against=first.against, silent=all(m.silent for m in members),
                   members=tuple(members))


def _rank(finding: Finding) -> tuple:
    return (list(Severity).index(finding.severity), list(Kind).index(finding.kind))


def _accept(model: str, members: Sequence[Finding]) -> str:
    if any(m.against for m in members):
        return members[0].help
    return f"undo this change, or accept it with `ckptlint update {model}`"
