"""What the source says about same-shaped renames the shapes alone leave open: each path's
creating statement (its name taken out) now and at the signature's commit, and which edit
removed or wrote it (`renames.Evidence`, weighed by `compare.renames`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ckptlint.compare.renames import Evidence
from ckptlint.core.keys import parent
from ckptlint.core.records import BuildResult, Config, ModelSpec
from ckptlint.source.changes import Changes
from ckptlint.source.locate import Locator
from ckptlint.source.quoting import without_name


def rename_evidence(config: Config, spec: ModelSpec, result: BuildResult,
                    groups: Sequence[tuple[Sequence[str], Sequence[str]]]) -> Evidence | None:
    """What the source says about same-shaped renames `diff.weighed_renames` names: each
    path's creating statement (name taken out) and which edit removed or wrote it, at the
    signature's commit and now. None without git history for the signature."""
    locator = Locator(config)
    changes = locator.changes(spec.name, result)
    if changes is None:
        return None
    found = _Said()
    for olds, news in groups:
        fallback = news[0] if news else ""
        for path in news:
            _said_now(locator, path, result, changes, found)
        for path in olds:
            _said_then(locator, path, fallback, result, changes, found)
    return Evidence(found.old_texts, found.new_texts, found.old_places, found.new_places)


@dataclass
class _Said:
    old_texts: dict[str, str] = field(default_factory=dict)
    new_texts: dict[str, str] = field(default_factory=dict)
    old_places: dict[str, tuple[str, int]] = field(default_factory=dict)
    new_places: dict[str, tuple[str, int]] = field(default_factory=dict)


def _said_now(locator: Locator, path: str, result: BuildResult, changes: Changes,
              found: _Said) -> None:
    site = result.sites.get(path)
    span = locator.index.statement_at(locator.root / site.file, site.line) if site else None
    if span is None:
        return
    name = path.rpartition(".")[2]
    found.new_texts[path] = without_name(locator.index.text(locator.root / site.file, span), name)
    hunks = changes.of(site.file)
    hunk = changes.touched(site.file, span.line, span.end_line)
    if hunk is not None:
        found.new_places[path] = (f"{site.file}:{hunks.index(hunk)}", span.line)

def _said_then(locator: Locator, path: str, fallback: str, result: BuildResult, changes: Changes,
               found: _Said) -> None:
    owner, _, name = path.rpartition(".")
    classes = locator._classes(owner, result) or locator._classes(parent(fallback), result)
    for file, qualname in classes:
        old = locator.old_source(changes, file)
        creation = locator.index.find_creation(old, qualname, name) if old else None
        if creation is None or creation.dynamic:
            continue
        found.old_texts[path] = without_name(locator.index.text(old, creation.span), name)
        hunks = changes.of(file)
        hunk = next((h for h in hunks if h.holds_old(creation.span.line)), None)
        if hunk is not None:
            found.old_places[path] = (f"{file}:{hunks.index(hunk)}", creation.span.line)
        return
