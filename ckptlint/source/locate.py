"""Point each finding at the statement that created its layer, parameter or buffer.

The build's own record of where things were created comes first; libcst widens that line to
the whole statement (or narrows it to a literal container's element). The static search through
the module's classes is the fallback, and the model's entry in pyproject.toml the last resort:
code outside the project is never annotated. Imported, and libcst with it, only on findings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ckptlint.config import entry_location
from ckptlint.core.keys import EVERY_KEY, ancestors, first_key, parent
from ckptlint.core.kinds import Kind
from ckptlint.core.paths import relative
from ckptlint.core.record import record, replace
from ckptlint.core.records import (EMPTIED, TIED, BuildResult, Config, Finding, Frames, Location,
                                   ModelSpec, Signature, Site)
from ckptlint.source.advice import advice
from ckptlint.source.changes import Changes, Hunk
from ckptlint.source.cst import SourceIndex
from ckptlint.source.quoting import read_lines, same_function, shortened
from ckptlint.source.spans import Span

_CONTAINERS = {"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"}
_MAX_SOURCE_LINES = 12


@record
class Found:
    """A located statement and the project frames that led to it (for `ckptlint.source.causes`)."""

    location: Location
    frames: Frames = ()


class Locator:
    """Locates the findings of one run; each source file is parsed at most once."""

    def __init__(self, config: Config):
        self.config = config
        self.root = Path(config.root)
        self.index = SourceIndex()
        self._changes: dict[str, Changes | None] = {}
        self._old: dict[str, bool] = {}  # `git:<commit>:<file>` -> whether it could be read
        # frames behind each located finding, by id (the finding is kept so the id stays its)
        self.frames: dict[int, tuple[Finding, Frames]] = {}

    def locate(self, findings: Sequence[Finding], spec: ModelSpec, result: BuildResult | None,
               references: Mapping[str, Signature] | None = None) -> list[Finding]:
        """Each finding at the statement that creates (or created) its keys. `references`
        are the state dicts compared with, by `Finding.against` ("" for the committed one)."""
        current = result.signature if result is not None else None
        old_prefixes = {label: _prefixes(_aligned(sig, current))
                        for label, sig in (references or {}).items()}
        located = []
        for finding in findings:
            one, frames = self._one(finding, spec, result, old_prefixes.get(finding.against))
            self.frames[id(one)] = (one, frames)
            located.append(one)
        return located

    def frames_of(self, finding: Finding) -> Frames:
        held = self.frames.get(id(finding))
        return held[1] if held is not None and held[0] is finding else ()

    def group(self, findings: Sequence[Finding], spec: ModelSpec,
              result: BuildResult | None) -> list[Finding]:
        """One finding per cause (see `ckptlint.source.causes`)."""
        from ckptlint.source import causes

        return causes.group(self, findings, spec, result)

    def _one(self, finding: Finding, spec: ModelSpec, result: BuildResult | None,
             old: set[str] | None) -> tuple[Finding, Frames]:
        location, frames = finding.location, ()
        if location is not None and finding.kind is Kind.BUILD_ERROR:
            location = self._statement(location)
        if location is None and result is not None and result.signature is not None:
            found = self._found(finding, spec, result, old)
            if found is not None:
                location, frames = found.location, found.frames
        why = "outside the project" if finding.kind.spec.per_tensor else ""
        location = location or self.entry(spec, why)
        return replace(finding, location=self.with_source(location),
                       help=finding.help or advice(finding, spec.name,
                                                   self._listed(finding, spec))), frames

    def _listed(self, finding: Finding, spec: ModelSpec) -> bool:
        """Whether the finding's checkpoint is one of the entry's `checkpoints` (labelled as
        `engine.read_reference` labels them), not a file named with `--against`."""
        return bool(finding.against) and finding.against in {
            relative(self.root / p, self.config.root) for p in spec.checkpoints}

    def _found(self, finding: Finding, spec: ModelSpec, result: BuildResult,
               old: set[str] | None) -> Found | None:
        key = (finding.keys or (finding.key,))[0]
        if not key:
            return None
        if finding.key == EVERY_KEY:  # about the whole model: its own class
            return self._root_class(result)
        if finding.kind is Kind.RENAMED_KEY and (finding.new_keys or finding.new_key):
            return self.created(finding.new_keys[0] if finding.new_keys
                                else first_key(finding.new_key), result, old)
        if finding.kind is Kind.MISSING_KEY:
            return self.created(key, result, old)
        if finding.kind.spec.existing:
            return self.existing(key, result)
        if finding.kind is Kind.UNEXPECTED_KEY:
            return self.removed(key, result, "" if finding.against else spec.name)
        if finding.kind is Kind.TIE_CHANGED and finding.keys:
            return self.tie(finding.keys, result)
        return None

    def _statement(self, location: Location) -> Location:
        """A traceback's line widened to its whole statement (the caret under the code)."""
        if not location.file.endswith(".py"):
            return location
        span = self.index.statement_at(self.root / location.file, location.line)
        return span.location(location.file, location.note) if span else location

    # -- keys the code creates ---------------------------------------------------------------

    def created(self, key: str, result: BuildResult, old: set[str] | None) -> Found | None:
        """A key the checkpoint lacks: the statement creating the outermost module that is new
        as a whole (an added block, an added norm of a project class), else the key's own."""
        for path in reversed(ancestors(key)[:-1]):
            if old is not None and path in result.modules and path not in old:
                return self.module(path, result)
        return self.existing(key, result)

    def existing(self, key: str, result: BuildResult) -> Found | None:
        """The statement that creates `key` (or, for `module.*`, the module) in the current code.

        A tied key's recorded line is where the tie was made (`post_init()`, `a.weight =
        b.weight`): the answer is the statement creating the tensor the keys share."""
        if key.endswith(".*"):
            return self.module(key[:-2], result)
        key = self._creator(key, result)
        for path in [key] + ancestors(key)[:-1]:
            site = result.sites.get(path)
            if site is not None:
                return self._at_site(site, parent(key), result)
        return self._static(key, result)

    def _creator(self, key: str, result: BuildResult) -> str:
        """The key of a tie group whose tensor was created, not assigned from another name."""
        site = result.sites.get(key)
        if site is None or site.via != TIED or result.signature is None:
            return key
        aliases = result.signature.aliases
        first = aliases.get(key, key)
        group = [first] + [k for k, v in aliases.items() if v == first]
        made = [k for k in group if (s := result.sites.get(k)) is not None and s.via != TIED]
        return made[0] if made else key

    def module(self, path: str, result: BuildResult) -> Found | None:
        """The statement that creates the submodule `path`."""
        site = result.sites.get(path)
        return self._at_site(site, path, result) if site else self._static(path, result)

    def tie(self, keys: Sequence[str], result: BuildResult) -> Found | None:
        """A tie the code makes now: its statement; a tie it no longer makes: the statement
        creating the later key (the one a tie statement would assign)."""
        aliases = result.signature.aliases if result.signature else {}
        if len({aliases.get(k, k) for k in keys}) == 1:
            tied = [s for k in keys if (s := result.sites.get(k)) is not None and s.via == TIED]
            if tied:
                return self._at_site(tied[0], "", result)
        return self.existing(keys[-1], result)

    # -- keys the code no longer creates -------------------------------------------------------

    def removed(self, key: str, result: BuildResult, model: str) -> Found | None:
        """A key the code no longer creates, in order: the statement that still names its slot
        (now None, or under a condition that no longer holds); where git shows the creating
        statement was deleted since the signature's commit (`model` names whose signature;
        "" for a checkpoint of unknown origin); the `__init__` of the model's own class; the
        nearest surviving ancestor's statement."""
        survivor = next(p for p in ancestors(key) if p in result.modules or p == "")
        below = key[len(survivor) + 1:] if survivor else key
        attr = below.split(".")[0]
        found = self._slot(key, survivor, result) or self._named(survivor, attr, result) \
            or (self._deleted(survivor, attr, result, model) if model else None)
        if found is not None:
            return found
        if survivor == "":
            return self._root_init(result)
        location = self.module(survivor, result)
        note = f"it belonged to `{survivor}`, which the code still creates here"
        # no key in the note: findings at one statement share it (the message names the key)
        return replace(location, location=replace(location.location, note=note)) \
            if location else None

    def _slot(self, key: str, survivor: str, result: BuildResult) -> Found | None:
        """A recorded statement naming the key, or a module below the survivor (a slot set to
        None, `bias=False`): the code still says it, and that is where it changed."""
        for path in [key] + ancestors(key)[:-1]:
            if path == survivor:
                break
            site = result.sites.get(path)
            if site is not None:
                found = self._at_site(site, parent(path), result)
                note = f"`{path.rpartition('.')[2]}` is None now" if site.via == EMPTIED \
                    else ""
                return replace(found, location=replace(found.location, note=note)) \
                    if note else found
        return None

    def _named(self, survivor: str, attr: str, result: BuildResult) -> Found | None:
        """A statement of the survivor's class that still names `attr` but did not run."""
        for file, qualname in self._classes(survivor, result):
            creation = self.index.find_creation(self.root / file, qualname, attr)
            if creation is not None and not creation.dynamic:
                note = f"the code still names `{attr}` here, but it was not created"
                site = result.sites.get(survivor)
                return Found(creation.span.location(file, note), self._frames(site))
        return None

    def _deleted(self, survivor: str, attr: str, result: BuildResult,
                 model: str) -> Found | None:
        """Where the statement that created `attr` in the survivor's class was deleted, by
        mapping its line at the signature's commit to the file as it is now."""
        changes = self.changes(model, result)
        if changes is None:
            return None
        for file, qualname in self._classes(survivor, result):
            old = self.old_source(changes, file)
            creation = self.index.find_creation(old, qualname, attr) if old else None
            if creation is None:
                continue
            _, hunk = changes.new_line(file, creation.span.line)
            span = self._at_hunk(file, hunk) if hunk is not None else None
            if span is not None:
                quoted = shortened(self.index.text(old, creation.span))
                note = (f"removed here since {changes.signature} was committed "
                        f"({changes.short}): `{quoted}` created it")
                return Found(span.location(file, note), self._frames(result.sites.get(survivor)))
        return None

    def _at_hunk(self, file: str, hunk: Hunk) -> Span | None:
        """The statement a hunk leaves in the new file: its first changed statement, or for a
        deletion the statement that follows the gap in the same function (else the one before)."""
        path = self.root / file
        if hunk.new_count:
            for line in range(hunk.new_start, hunk.new_end + 1):
                span = self.index.statement_at(path, line)
                if span is not None:
                    return span
            return None
        after = self.index.next_statement(path, hunk.new_start)
        if after is not None and same_function(self.index, path, hunk.new_start, after.line):
            return after
        return self.index.statement_at(path, hunk.new_start) or after

    def _root_class(self, result: BuildResult) -> Found | None:
        """The header of the model's own class (the first of its project classes)."""
        for file, qualname in self._classes("", result):
            span = self.index.class_span(self.root / file, qualname)
            if span is not None:
                return Found(span.location(file))
        return None

    def _root_init(self, result: BuildResult) -> Found | None:
        """The `__init__` of the model's own class (the first of its project classes with one)."""
        for file, qualname in self._classes("", result):
            span = self.index.method_header(self.root / file, qualname) or \
                self.index.class_span(self.root / file, qualname)
            if span is not None:
                return Found(span.location(file, "it belonged to the model's own class; its "
                                                 "__init__ no longer creates it"))
        return None

    # -- git ----------------------------------------------------------------------------------

    def changes(self, model: str, result: BuildResult) -> Changes | None:
        """What changed in the model's files since its signature was committed (cached)."""
        from ckptlint.source import changes
        from ckptlint.config import signature_path

        if model not in self._changes:
            signature = relative(signature_path(self.config, model), self.root)
            self._changes[model] = changes.since(self.root, signature, _files(result))
        return self._changes[model]

    def old_source(self, changes: Changes, file: str) -> str | None:
        """`file` as it was at the signature's commit, parsed once: a name for `self.index`."""
        from ckptlint.source.changes import old_text

        name = f"git:{changes.commit}:{file}"
        if name not in self._old:
            text = old_text(self.root, changes.commit, file)
            self._old[name] = text is not None
            if text is not None:
                self.index.remember(name, text)
        return name if self._old[name] and self.index.parsed(name) is not None else None

    # -- sites and the static search ------------------------------------------------------------

    def entry(self, spec: ModelSpec, why: str) -> Location:
        """The model's `[[tool.ckptlint.models]]` entry in pyproject.toml."""
        note = f"created by code {why}; pointing at the model's entry" if why else ""
        return entry_location(self.config, spec, "target", note)

    def entry_key(self, spec: ModelSpec, key: str, note: str) -> Location:
        """The line of `key` in the model's entry in pyproject.toml."""
        return entry_location(self.config, spec, key, note)

    def _frames(self, site: Site | None) -> Frames:
        return ((site.file, site.line), *site.stack) if site is not None else ()

    def _at_site(self, site: Site, module: str, result: BuildResult) -> Found:
        """The statement on a recorded line, narrowed to the element holding `module`."""
        frames = self._frames(site)
        span = self.index.statement_at(self.root / site.file, site.line)
        if span is None:
            return Found(Location(site.file, site.line), frames)
        element = self._element(site.file, span, module, result)
        return Found((element or span).location(site.file), frames)

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

    def _static(self, key: str, result: BuildResult) -> Found | None:
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
                    return Found((span or creation.span).location(file, note))
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

    def with_source(self, location: Location) -> Location:
        """Attach the located lines, for code frames in the text report."""
        parsed = self.index.parsed(self.root / location.file) \
            if location.file.endswith(".py") else None
        lines = parsed.lines if parsed is not None else read_lines(self.root / location.file)
        end = min(location.end_line or location.line, location.line + _MAX_SOURCE_LINES - 1)
        return replace(location, source=tuple(lines[location.line - 1:end]))


def _files(result: BuildResult) -> list[str] | None:
    """The model's files: its import closure, and every file a key was created in. None when
    the build could not list its imports (then every Python file of the project counts)."""
    if not result.files:
        return None
    named = {f for site in result.sites.values() for f, _ in ((site.file, 0), *site.stack)}
    named |= {f for info in result.modules.values() for f, _ in info.classes}
    return sorted(set(result.files) | named)


def _aligned(reference: Signature, current: Signature | None) -> Signature:
    """The reference re-keyed past a wrapper prefix (`module.`), as the diff compared it."""
    from ckptlint.compare import prefix

    wrapper = prefix.detect(reference, current) if current is not None else None
    return prefix.rekey(reference, wrapper.mapping) if wrapper else reference


def _prefixes(signature: Signature) -> set[str]:
    """Every module path that holds a key of `signature` ("" included)."""
    return {p for key in signature.tensors for p in ancestors(key)}
