"""Point each finding at the statement that created its layer, parameter or buffer.

The build's own record of where things were created comes first; libcst widens that line to
the whole statement (or narrows it to a literal container's element). The static search through
the module's classes is the fallback, and the model's entry in pyproject.toml the last resort:
code outside the project is never annotated. Imported, and libcst with it, only on findings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ckptlint.cst import SourceIndex, Span
from ckptlint.ftypes import BuildResult, Config, Finding, Kind, Location, ModelSpec, Site
from ckptlint.keys import ancestors, parent
from ckptlint.paths import relative

_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}
_EXISTING = {Kind.MISSING_KEY, Kind.SHAPE_MISMATCH, Kind.DTYPE_MISMATCH}
_MAX_SOURCE_LINES = 12


class Locator:
    """Locates the findings of one run; each source file is parsed at most once."""

    def __init__(self, config: Config):
        self.config = config
        self.root = Path(config.root)
        self.index = SourceIndex()

    def locate(self, findings: Sequence[Finding], spec: ModelSpec,
               result: BuildResult | None) -> list[Finding]:
        return [self._one(f, spec, result) for f in findings]

    def _one(self, finding: Finding, spec: ModelSpec, result: BuildResult | None) -> Finding:
        location = finding.location
        if location is None and result is not None and result.signature is not None:
            key = (finding.keys or (finding.key,))[0]
            if finding.kind is Kind.RENAMED_KEY and finding.new_key:
                location = self.existing(finding.new_key, result)
            elif finding.kind in _EXISTING and key:
                location = self.existing(key, result)
            elif finding.kind is Kind.UNEXPECTED_KEY and key:
                location = self.removed(key, result)
        location = location or self.entry(spec, "outside the project" if finding.key else "")
        return replace(finding, location=self.with_source(location))

    def existing(self, key: str, result: BuildResult) -> Location | None:
        """The statement that creates `key` in the current code."""
        for path in [key] + ancestors(key)[:-1]:
            site = result.sites.get(path)
            if site is not None:
                return self._at_site(site, key, result)
        return self._static(key, result)

    def removed(self, key: str, result: BuildResult) -> Location | None:
        """A key the code no longer creates: its nearest surviving ancestor's statement."""
        survivor = next(p for p in ancestors(key) if p in result.modules or p == "")
        note = f"`{key}` was created under {f'`{survivor}`' if survivor else 'the model'}"
        if survivor == "":
            return self._root_class(result, note)
        site = result.sites.get(survivor)
        location = self._at_site(site, survivor, result) if site else self._static(survivor, result)
        return replace(location, note=note) if location else None

    def entry(self, spec: ModelSpec, why: str) -> Location:
        """The model's `[[tool.ckptlint.models]]` entry in pyproject.toml."""
        from ckptlint.config import model_key_line

        line = model_key_line(self.config, spec, "target") or spec.line or 1
        note = f"created by code {why}; pointing at the model's entry" if why else ""
        return Location(relative(self.config.pyproject, self.root), line, note=note)

    def _at_site(self, site: Site, key: str, result: BuildResult) -> Location:
        span = self.index.statement_at(self.root / site.file, site.line)
        if span is None:
            return Location(site.file, site.line)
        element = self._element(span, key, result)
        return (element or span).location(site.file)

    def _element(self, span: Span, key: str, result: BuildResult) -> Span | None:
        """Narrow a container's statement to the literal element that holds `key`."""
        for owner in ancestors(key)[:-1]:
            container = parent(owner)
            info = result.modules.get(container)
            site = result.sites.get(container)
            if not (info and site and info.type_name in _CONTAINERS):
                continue
            if self.index.statement_at(self.root / site.file, site.line) != span:
                continue
            index = owner.rpartition(".")[2]
            for file, qualname in self._classes(parent(container), result):
                found = self.index.find_element(self.root / file, qualname,
                                                container.rpartition(".")[2], index)
                if found:
                    return found
        return None

    def _classes(self, path: str, result: BuildResult) -> tuple[tuple[str, str], ...]:
        info = result.modules.get(path)
        return info.classes if info else ()

    def _static(self, key: str, result: BuildResult) -> Location | None:
        """No recorded site: search the owning module's project classes, walking up the tree."""
        path = key
        while path:
            owner, _, attr = path.rpartition(".")
            for file, qualname in self._classes(owner, result):
                creation = self.index.find_creation(self.root / file, qualname, attr)
                if creation is not None:
                    note = "the name is computed at run time; closest statement" \
                        if creation.dynamic else ""
                    return creation.span.location(file, note)
            path = owner
        return None

    def _root_class(self, result: BuildResult, note: str) -> Location | None:
        for file, qualname in self._classes("", result):
            span = self.index.class_span(self.root / file, qualname)
            if span is not None:
                return span.location(file, note)
        return None

    def with_source(self, location: Location) -> Location:
        """Attach the located lines, for code frames in the text report."""
        parsed = self.index.parsed(self.root / location.file) \
            if location.file.endswith(".py") else None
        lines = parsed.lines if parsed is not None else _read_lines(self.root / location.file)
        end = min(location.end_line or location.line, location.line + _MAX_SOURCE_LINES - 1)
        return replace(location, source=tuple(lines[location.line - 1:end]))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
