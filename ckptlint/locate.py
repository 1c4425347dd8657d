"""Point each finding at the statement that created its layer, parameter or buffer.

The build's own record of where things were created comes first; libcst widens that line to
the whole statement (or narrows it to a literal container's element). The static search through
the module's classes is the fallback, and the model's entry in pyproject.toml the last resort:
code outside the project is never annotated. Imported, and libcst with it, only on findings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from ckptlint import history
from ckptlint.config import entry_location
from ckptlint.cst import SourceIndex, Span
from ckptlint.ftypes import BuildResult, Config, Finding, Kind, Location, ModelSpec, Site
from ckptlint.keys import EVERY_KEY, ancestors, first_key, parent
from ckptlint.paths import relative

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}
# kinds whose key the current code still creates (or registers), so its own statement is the answer
_EXISTING = {Kind.MISSING_KEY, Kind.SHAPE_MISMATCH, Kind.DTYPE_MISMATCH} | {
    kind for kind in Kind if kind.slug in ("role-changed", "buffer-not-persistent")}
_MAX_SOURCE_LINES = 12
_UNSET = object()  # a kwarg absent on one side


class Locator:
    """Locates the findings of one run; each source file is parsed at most once."""

    def __init__(self, config: Config):
        self.config = config
        self.root = Path(config.root)
        self.index = SourceIndex()
        self._kwargs_causes: dict[str, Location | None] = {}

    def locate(self, findings: Sequence[Finding], spec: ModelSpec,
               result: BuildResult | None) -> list[Finding]:
        return [self._one(f, spec, result) for f in findings]

    def _one(self, finding: Finding, spec: ModelSpec, result: BuildResult | None) -> Finding:
        location = finding.location
        if location is not None and finding.kind is Kind.BUILD_ERROR:
            location = self._statement(location)
        if location is None and result is not None and result.signature is not None:
            key = (finding.keys or (finding.key,))[0]
            if finding.key == EVERY_KEY:  # about the whole model: its own class
                location = self._root_class(result, "")
            elif finding.kind is Kind.RENAMED_KEY and finding.new_key:
                location = self.existing(first_key(finding.new_key), result)
            elif finding.kind is Kind.MISSING_KEY and finding.key.endswith(".*"):
                location = self.existing(finding.key[:-2], result)  # a whole new submodule
            elif finding.kind in _EXISTING and key:
                location = self.existing(key, result)
            elif finding.kind is Kind.UNEXPECTED_KEY and key:
                location = self.removed(key, result)
            elif finding.kind is Kind.TIE_CHANGED and finding.keys:
                # the later key of the group is the one a tie statement assigns
                location = self.existing(finding.keys[-1], result)
            if key and not finding.against:
                location = self._kwargs_cause(spec, result, location) or location
        per_tensor = finding.kind in _EXISTING or finding.kind in (
            Kind.UNEXPECTED_KEY, Kind.RENAMED_KEY, Kind.TIE_CHANGED)
        location = location or self.entry(spec, "outside the project" if per_tensor else "")
        return replace(finding, location=self.with_source(location),
                       help=finding.help or advice(finding, spec.name,
                                                   self._listed(finding, spec)))

    def _listed(self, finding: Finding, spec: ModelSpec) -> bool:
        """Whether the finding's checkpoint is one of the entry's `checkpoints` (labelled as
        `engine.read_reference` labels them), not a file named with `--against`."""
        return bool(finding.against) and finding.against in {
            relative(self.root / p, self.config.root) for p in spec.checkpoints}

    def _statement(self, location: Location) -> Location:
        """A traceback's line widened to its whole statement (the caret under the code)."""
        if not location.file.endswith(".py"):
            return location
        span = self.index.statement_at(self.root / location.file, location.line)
        return span.location(location.file, location.note) if span else location

    def existing(self, key: str, result: BuildResult) -> Location | None:
        """The statement that creates `key` (or, for `module.*`, the module) in the current code."""
        if key.endswith(".*"):
            return self.module(key[:-2], result)
        for path in [key] + ancestors(key)[:-1]:
            site = result.sites.get(path)
            if site is not None:
                return self._at_site(site, parent(key), result)
        return self._static(key, result)

    def removed(self, key: str, result: BuildResult) -> Location | None:
        """A key the code no longer creates: its nearest surviving ancestor's statement."""
        survivor = next(p for p in ancestors(key) if p in result.modules or p == "")
        # no key in the note: findings at one statement share it (the message names the key)
        note = f"it belonged to `{survivor}`, which the code still creates here" if survivor \
            else "it belonged to the model's own class, defined here"
        if survivor == "":
            return self._root_class(result, note)
        location = self.module(survivor, result)
        return replace(location, note=note) if location else None

    def module(self, path: str, result: BuildResult) -> Location | None:
        """The statement that creates the submodule `path`."""
        site = result.sites.get(path)
        return self._at_site(site, path, result) if site else self._static(path, result)

    def entry(self, spec: ModelSpec, why: str) -> Location:
        """The model's `[[tool.ckptlint.models]]` entry in pyproject.toml."""
        note = f"created by code {why}; pointing at the model's entry" if why else ""
        return entry_location(self.config, spec, "target", note)

    def _kwargs_cause(self, spec: ModelSpec, result: BuildResult,
                      code: Location | None) -> Location | None:
        """The kwargs line of pyproject.toml when git shows that only the model's kwargs changed
        since its signature was committed (see `kwargs_change`); None when that is not certain."""
        if spec.name not in self._kwargs_causes:
            current = result.signature.torch_version if result.signature else ""
            change = kwargs_change(self.config, spec, current)
            self._kwargs_causes[spec.name] = None if change is None else self._kwargs_line(
                spec, change)
        cause = self._kwargs_causes[spec.name]
        if cause is None or code is None:
            return cause
        return replace(cause, note=f"{cause.note}; the code creating it is at "
                                  f"{code.file}:{code.line}")

    def _kwargs_line(self, spec: ModelSpec, change: str) -> Location:
        return entry_location(self.config, spec, "kwargs", change)

    def _at_site(self, site: Site, module: str, result: BuildResult) -> Location:
        """The statement on a recorded line, narrowed to the element holding `module`."""
        span = self.index.statement_at(self.root / site.file, site.line)
        if span is None:
            return Location(site.file, site.line)
        element = self._element(site.file, span, module, result)
        return (element or span).location(site.file)

    def _element(self, file: str, span: Span, module: str, result: BuildResult) -> Span | None:
        """Narrow a statement creating a literal container to the element that is or holds
        `module`, outermost container first so nested literals narrow all the way."""
        for container in reversed(ancestors(module)[:-1]) if module else ():
            site = result.sites.get(container)
            if site is None or site.file != file or \
                    self.index.statement_at(self.root / file, site.line) != span:
                continue
            for klass_file, qualname in self._classes(parent(container), result):
                found = self._literal_element(klass_file, qualname, container, module, result) \
                    if klass_file == file else None
                if found and span.line <= found.line and found.end_line <= span.end_line:
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
                    span = self._literal_element(file, qualname, path, key, result)
                    return (span or creation.span).location(file, note)
            path = owner
        return None

    def _literal_element(self, file: str, qualname: str, path: str, key: str,
                         result: BuildResult) -> Span | None:
        """Below a container created at `path`, the innermost literal element holding `key`."""
        info = result.modules.get(path)
        if info is None or info.type_name not in _CONTAINERS or not key.startswith(path + "."):
            return None
        rest = key[len(path) + 1:].split(".")
        for depth in range(len(rest), 0, -1):
            span = self.index.find_element(self.root / file, qualname,
                                           path.rpartition(".")[2], rest[:depth])
            if span is not None:
                return span
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


def advice(finding: Finding, model: str, listed: bool = True) -> str:
    """The `help:` line of a drift finding: what to do at the located statement.

    `listed`: the finding's checkpoint is in the entry's `checkpoints` (else `--against`).
    """
    if finding.against:  # a checkpoint file: `update` would not make it load
        remap = f"`ckptlint remap {model} --against {finding.against}`"
        if finding.kind in (Kind.RENAMED_KEY, Kind.PREFIX_MISMATCH, Kind.MISSING_KEY,
                            Kind.UNEXPECTED_KEY):
            return f"restore what {finding.against} expects here, or load it through {remap}"
        if finding.kind is Kind.DTYPE_MISMATCH:
            return (f"loading casts {finding.against}'s weights to the code's dtype; restore its "
                    "dtype here if that cast is not wanted")
        if listed:
            return (f"restore what {finding.against} expects here, or stop listing it in "
                    "`checkpoints`")
        return f"restore what {finding.against} expects here: it cannot load until they agree"
    update = f"`ckptlint update {model}`"
    if finding.kind is Kind.MISSING_KEY:
        return (f"old checkpoints lack it: remove what creates it here, or accept it with {update} "
                "and let it initialise when loading them")
    if finding.kind is Kind.UNEXPECTED_KEY:
        return (f"restore what created it here, or accept the removal with {update} and drop the "
                "key when loading old checkpoints")
    # one wording per kind, so findings that share a statement share their help line
    if finding.kind is Kind.SHAPE_MISMATCH:
        return (f"restore the checkpoint's shape here, or accept the new one with {update} and "
                "convert old checkpoints")
    if finding.kind is Kind.DTYPE_MISMATCH:
        return f"restore the checkpoint's dtype here, or accept the new one with {update}"
    if finding.kind is Kind.RENAMED_KEY and finding.new_key:
        return (f"accept the rename with {update} and load old checkpoints through "
                f"`ckptlint remap {model}`, or rename it back")
    if finding.kind is Kind.BUFFER_NOT_PERSISTENT:
        return (f"register it with persistent=True again, or accept it with {update} and drop "
                "the key when loading old checkpoints")
    if finding.kind is Kind.TIE_CHANGED:
        return f"restore the tie as it was here, or accept the change with {update}"
    return ""


# -- kwargs-only drift ---------------------------------------------------------------------------
# The signature file records no kwargs, so the only witness of "what the code was built with"
# is version control: the commit that last wrote the signature file. When no Python file of the
# project differs from that commit (tracked or untracked), torch is the same version, and the
# model's kwargs in pyproject.toml did change, the kwargs are the one input that changed, so
# they caused the drift. Anything less certain (no git, an uncommitted signature, any .py edit)
# keeps the code location: a kwargs line is claimed only when it cannot be wrong.


def kwargs_change(config: Config, spec: ModelSpec, torch_version: str) -> str | None:
    """`"kwargs changed since …: a: 1 → 2"` when only the model's kwargs changed, else None."""
    from ckptlint.engine import signature_path

    root = Path(config.root)
    signature = relative(signature_path(config, spec.name), root)
    commit = history.last_commit(root, signature)
    if not commit or not history.is_clean(root, signature):
        return None  # not committed, or rewritten since: the commit is not its origin
    if not history.python_unchanged_since(root, commit):
        return None
    if _committed_torch(root / signature) not in ("", torch_version):
        return None
    old = _committed_entry(root, commit, relative(config.pyproject, root), spec.name)
    if old is None or old.get("target") != spec.target:
        return None
    changes = _changes(_flat(old.get("kwargs", {})), _flat(spec.kwargs))
    if not changes:
        return None
    return (f"only the kwargs changed since {signature} was committed ({commit[:7]}): "
            + ", ".join(changes[:3]) + (", …" if len(changes) > 3 else ""))


def _committed_entry(root: Path, commit: str, pyproject: str,
                     name: str) -> Mapping[str, Any] | None:
    text = history.show(root, commit, pyproject)
    try:
        models = tomllib.loads(text or "").get("tool", {}).get("ckptlint", {}).get("models", [])
    except tomllib.TOMLDecodeError:
        return None
    found = [m for m in models if isinstance(m, dict) and m.get("name") == name]
    return found[0] if found else None


def _committed_torch(path: Path) -> str:
    try:
        header = tomllib.loads(path.read_text(encoding="utf-8")).get("signature", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "?"
    return str(header.get("torch", ""))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and (value or not prefix):
        return {k: v for key, item in value.items()
                for k, v in _flat(item, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: value}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{key}: {_shown(old.get(key, _UNSET))} → {_shown(new.get(key, _UNSET))}"
            for key in sorted(set(old) | set(new)) if old.get(key, _UNSET) != new.get(key, _UNSET)]


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, default=str)
