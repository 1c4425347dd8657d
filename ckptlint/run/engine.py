"""The check and update loops: config -> builds -> pure diff -> findings. No printing, no exits.

What only a build needs (the diff, signature files, git, suppressions) is imported where it is
used, so a run answered from the cache stays a few imports long.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ckptlint.config import entry_location, signature_path
from ckptlint.core.atomic import SCRATCH, write_atomic
from ckptlint.core.errors import CheckpointError, CkptlintError, SignatureFileError
from ckptlint.core.kinds import BEST_FIRST, Kind, Verdict
from ckptlint.core.paths import display, inside, relative
from ckptlint.core.records import (BuildResult, Config, Finding, Location, ModelReport, ModelSpec,
                                   Report, Signature)
from ckptlint.core.urls import RemotePath, location
from ckptlint.run.cache import DIRECTORY, Cache

# builds models and returns plain data; in-process by default, swappable for a worker pool
Builder = Callable[[Sequence[ModelSpec], Config, Sequence["Signature | None"]], list[BuildResult]]


class UnknownModelError(CkptlintError):
    def __init__(self, name: str, config: Config):
        known = ", ".join(m.name for m in config.models) or "none"
        super().__init__(f"{relative(config.pyproject, config.root)}: no model named `{name}` in "
                         f"[[tool.ckptlint.models]] (configured: {known})")


class NoModelsError(CkptlintError):
    def __init__(self, config: Config):
        super().__init__(f"{relative(config.pyproject, config.root)}: no model is registered, so "
                         "nothing would be checked; add a [[tool.ckptlint.models]] table with "
                         "`name` and `target` (or run `ckptlint init`)")


def select(config: Config, names: Sequence[str]) -> tuple[ModelSpec, ...]:
    """The models named on the command line, in config order; all of them when none are named.

    Zero models is an error, not a pass: a run that checks nothing must not say "All clear".
    """
    if not config.models:
        raise NoModelsError(config)
    by_name = {m.name: m for m in config.models}
    for name in names:
        if name not in by_name:
            raise UnknownModelError(name, config)
    return tuple(m for m in config.models if not names or m.name in names)


def _write_signature(config: Config, path: Path, text: str) -> bool:
    """Atomically, with the temp file in the cache folder (ignored by git, inside the project),
    so a killed run leaves nothing `git add signatures/` would stage."""
    scratch = Path(config.root) / DIRECTORY / SCRATCH
    return write_atomic(path, text, scratch if inside(scratch, config.root) else None)


def _default_builder(specs: Sequence[ModelSpec], config: Config,
                     references: Sequence[Signature | None]) -> list[BuildResult]:
    from ckptlint.build.interpreter import in_process

    return in_process(specs, config, references)


@dataclass(frozen=True, slots=True)
class Reference:
    """A state dict the model must keep loading: its committed signature or a checkpoint file.

    Either `signature` is set or `problem` says why it could not be read.
    """

    label: str
    path: Path
    signature: Signature | None = None
    problem: Finding | None = None
    notes: tuple[str, ...] = ()
    committed: bool = True
    # tied keys the file's writer left out and said so (safetensors' save_model metadata)
    declared_ties: tuple[str, ...] = ()
    # URL -> identity of each remote file (and listed folder) the reading used, for the cache
    remote: Mapping[str, str | None] = field(default_factory=dict)


def check(config: Config, names: Sequence[str] = (), builder: Builder = _default_builder,
          cache: Cache | None = None, against: Path | RemotePath | None = None) -> Report:
    """Compare every selected model's current code with the state dicts it must keep loading.

    Those are its committed signature and the `checkpoints` of its entry, or only `against`
    when given. Models whose cached clean result still holds are not built; if none must be
    built, torch is never imported.
    """
    specs = select(config, names)
    # digests before anything is read: an edit during the run is a miss next time, never a hit
    keys = {s.name: cache.key(s, inputs_of(config, s, against)) for s in specs} if cache else {}
    cached = {s.name: cache.lookup(s, keys[s.name]) for s in specs
              if keys.get(s.name)} if cache else {}
    todo = [s for s in specs if cached.get(s.name) is None]
    plans = [(spec, references(config, spec, against)) for spec in todo]
    jobs = [(spec, ref) for spec, refs in plans for ref in _buildable(refs)]
    built = iter(builder([j[0] for j in jobs], config, [j[1] for j in jobs]) if jobs else [])
    fresh, locators = [], {}  # one Locator per run: each source file is parsed once
    sources: set[str] = set()
    for spec, refs in plans:
        results = [next(built) for _ in _buildable(refs)]
        sources.update(results[0].files)
        report = _model_report(config, spec, refs, results, alone=len(specs) == 1)
        if report.findings:
            report = _located(config, spec, results[0], report, locators, refs)
        if cache and keys.get(spec.name):
            cache.store(spec, keys[spec.name], _cacheable(report, results), results,
                        {url: ident for ref in refs for url, ident in ref.remote.items()})
        fresh.append(report)
    by_name = {**{n: r for n, r in cached.items() if r}, **{r.name: r for r in fresh}}
    reports = tuple(by_name[s.name] for s in specs)
    whole_run = not (names or against)  # only then is a comment no model used truly unused
    extra = orphans(config) + _unused_comments(config, specs, reports, sources, cache) \
        if whole_run else []
    return Report(models=reports, extra=tuple(extra), root=config.root,
                  against=display(against) if against else "")


def _cacheable(report: ModelReport, results: Sequence[BuildResult]) -> ModelReport:
    """The report as the cache judges it: a note of an operation run on the CPU for want of a
    meta kernel does not keep it out (its signature is exact, see `build.cpu_fallback`);
    a hit then says nothing, as for any clean model."""
    said = {n for r in results for n in r.fallbacks}
    return replace(report, notes=tuple(n for n in report.notes if n not in said))


def _unused_comments(config: Config, specs: Sequence[ModelSpec],
                     reports: Sequence[ModelReport], sources: set[str],
                     cache: Cache | None) -> list[Finding]:
    """`# ckptlint: ignore` comments in the models' files that silenced nothing this run.

    Cached models count too: their entries remember which comments they needed.
    """
    from ckptlint.source import suppress

    files = set(sources)
    for spec in specs:
        files.update((cache.files_of(spec) or ()) if cache else ())
    used = {spot for report in reports for spot in report.used_suppressions}
    return suppress.unused_comments(suppress.comments(config.root, files), used)


def inputs_of(config: Config, spec: ModelSpec,
              against: Path | RemotePath | None) -> list[Path | RemotePath]:
    """The files a model's result depends on besides its code: signature and checkpoints
    (URLs among them; the remote files a reading reaches from them are `Reference.remote`)."""
    if against is not None:
        return [against]
    return [signature_path(config, spec.name)] + [location(p, config.root)
                                                  for p in spec.checkpoints]


def _buildable(refs: Sequence[Reference]) -> list[Signature | None]:
    """One build per readable reference (each gets torch's dry run), or one plain build."""
    return [r.signature for r in refs if r.signature is not None] or [None]


def references(config: Config, spec: ModelSpec,
               against: Path | RemotePath | None = None) -> list[Reference]:
    if against is not None:  # named on the command line: unreadable is an error, not a finding
        reference = read_reference(config, spec, against, committed=False)
        if reference.problem is not None:
            raise CheckpointError(str(against), reference.problem.message.partition(": ")[2])
        return [_stripped(spec, reference)]
    return [_stripped(spec, r) for r in [_committed(config, spec)] + [
        read_reference(config, spec, location(p, config.root), committed=False)
        for p in spec.checkpoints]]


def _stripped(spec: ModelSpec, reference: Reference) -> Reference:
    """The reference with the entry's `strip_prefix` taken off its keys."""
    from ckptlint.compare import prefix
    if not (spec.strip_prefix and reference.signature):
        return reference
    return replace(reference, signature=prefix.strip(reference.signature, spec.strip_prefix))


def read_reference(config: Config, spec: ModelSpec, path: Path | RemotePath,
                   committed: bool) -> Reference:
    """Read a checkpoint (or signature) file the model must load; unreadable (also: a network
    failure on a URL) is a finding."""
    from ckptlint.readers import read_checkpoint, remote

    label = relative(path, config.root)
    with remote.recording() as used:
        try:
            read = read_checkpoint(path, spec.state_dict_key)
        except CheckpointError as exc:
            return Reference(label, path, problem=Finding(
                Kind.CHECKPOINT_UNREADABLE, spec.name, str(exc), against=label,
                location=entry_location(config, spec, "checkpoints")), committed=committed)
    notes = (f"{spec.name}: {label}: {read.note}",) if read.note else ()
    if read.tied:  # declared by a tie-aware writer: its loader restores them, plain torch not
        notes += (f"{spec.name}: {label} stores tied weights once ({_listed_keys(read.tied)} "
                  "left out, as its writer recorded): safetensors.torch.load_model and "
                  "strict=False fill them, plain load_state_dict(strict=True) does not",)
    # the keys the file holds: a key its writer dropped as a tie is restored only where the
    # code ties it too (`restore_ties`), exactly as loading it would fill it
    return Reference(label, path, read.signature, notes=notes, committed=committed,
                     declared_ties=tuple(read.tied), remote=dict(used))


def _listed_keys(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{k}`" for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _located(config: Config, spec: ModelSpec, result: BuildResult, report: ModelReport,
             locators: dict, refs: Sequence[Reference] = ()) -> ModelReport:
    """The findings at their statements, suppressed where a comment says so, then one per
    cause (`ckptlint.source.causes`)."""
    from ckptlint.source import suppress
    from ckptlint.source.locate import Locator  # libcst is imported only when there is something to point at

    if "run" not in locators:
        locators["run"] = Locator(config)
    locator = locators["run"]
    compared = {("" if r.committed else r.label): r.signature for r in refs if r.signature}
    located = locator.locate(report.findings, spec, result, compared)
    kept = suppress.inline(located, config.root, locator.index)
    # a comment on the line a cause was traced to silences the whole group there
    grouped = locator.group(kept, spec, result)
    shown = suppress.inline(grouped, config.root, locator.index)
    silenced = _left_out(located, kept) + _left_out(grouped, shown)
    used = suppress.used_comments(silenced, suppress.comments(config.root, result.files)) \
        if silenced else set()
    return replace(report, findings=tuple(shown), used_suppressions=tuple(sorted(used)))


def _left_out(before: Sequence[Finding], after: Sequence[Finding]) -> list[Finding]:
    """What a filter removed, by identity (comparing whole findings would be quadratic)."""
    kept = {id(f) for f in after}
    return [f for f in before if id(f) not in kept]


def _model_report(config: Config, spec: ModelSpec, refs: Sequence[Reference],
                  results: Sequence[BuildResult], alone: bool = True) -> ModelReport:
    """One model's findings and notes; `alone`: no other model was checked in this run."""
    from ckptlint.compare import diff
    from ckptlint.source import suppress

    findings = [r.problem for r in refs if r.problem]
    current = results[0].signature
    if current is None:
        others = "" if alone else "; the other models were still checked"
        findings.append(Finding(Kind.BUILD_ERROR, spec.name, results[0].error,
                                location=results[0].error_location,
                                help=f"fix it, then run `ckptlint check {spec.name}`{others}"))
    per_ref: list[tuple[Reference, list[Finding]]] = []
    if current is not None:
        readable = [r for r in refs if r.signature is not None]
        for ref, result in zip(readable, results):
            restored, current_sig, load = _tied(ref.signature, result)
            absent = set(restored.tensors) - set(ref.signature.tensors) - set(ref.declared_ties)
            found = diff.compare(spec.name, restored, current_sig, load, result.nonpersistent,
                                 absent)
            evidence = _rename_evidence(config, spec, ref, result, restored, load, found)
            if evidence is not None:  # the source settles renames the shapes could not
                found = diff.compare(spec.name, restored, current_sig, load,
                                     result.nonpersistent, absent, evidence)
            per_ref.append((ref, [f if ref.committed else replace(f, against=ref.label)
                                  for f in found]))
    compared = [f for _, found in per_ref for f in found]
    # the verdict answers for the first reference (the committed signature, or --against);
    # every further checkpoint of the entry gets its own line
    verdict, verdict_note = diff.verdict(per_ref[0][1]) if per_ref else ("", "")
    kept, unused = suppress.by_pattern(compared, spec.ignore)
    findings += kept
    if per_ref:
        findings += suppress.unused_patterns(spec.name, unused, entry_location(config, spec, "ignore"))
    primary = refs[0].signature
    return ModelReport(
        name=spec.name, findings=tuple(findings), signature_file=refs[0].label,
        old_parameters=primary.num_parameters if primary else None,
        new_parameters=current.num_parameters if current else None,
        notes=results[0].notes + results[0].fallbacks + tuple(n for r in refs for n in r.notes)
        + _checkpoint_verdicts(spec, per_ref[1:])
        + _torch_note(primary, results[0], findings, config, refs[0]),
        verdict=verdict, verdict_note=verdict_note,
    )


def _rename_evidence(config: Config, spec: ModelSpec, ref: Reference, result: BuildResult,
                     old: Signature, load, found: Sequence[Finding]) -> object | None:
    """What the source says about renames of same-shaped layers, asked only when the diff
    left keys both missing and unexpected, or paired some on their names alone (which the
    source may contradict); only the committed signature has a commit to compare it with."""
    from ckptlint.compare import diff

    kinds = {f.kind for f in found}
    by_names = any(f.kind is Kind.RENAMED_KEY and f.evidence for f in found)
    if not ref.committed or not (by_names or {Kind.MISSING_KEY, Kind.UNEXPECTED_KEY} <= kinds):
        return None
    groups = diff.weighed_renames(old, result.signature, load, result.nonpersistent)
    if not groups:
        return None
    from ckptlint.source.locate import rename_evidence

    return rename_evidence(config, spec, result, groups)


def _checkpoint_verdicts(spec: ModelSpec,
                         per_ref: Sequence[tuple[Reference, list[Finding]]]) -> tuple[str, ...]:
    from ckptlint.compare.verdict import verdict

    notes = []
    for ref, found in per_ref:
        name, note = verdict(found)
        if name is not Verdict.LOADS:
            notes.append(f"{spec.name}: {ref.label} {name.text}"
                         + (f" ({note})" if note else "")
                         + f"; see `ckptlint remap {spec.name} --against {ref.label}`")
    return tuple(notes)


def restore_ties(reference: Signature, current: Signature) -> Signature:
    """A checkpoint that saved tied weights once (safetensors' `save_model`) still loads them:
    give it back the keys the code ties to a tensor it has."""
    from ckptlint.readers import with_tied

    dropped = {k: v for k, v in current.aliases.items()
               if (k in reference.tensors) != (v in reference.tensors)}
    return with_tied(reference, dropped) if dropped else reference


def _tied(reference: Signature, result: BuildResult) -> tuple:
    current = result.signature
    # an adapter lacks most keys by design, tied partners too: nothing to restore
    restored = reference if reference.partial else restore_ties(reference, current)
    load = result.load
    if load is not None and restored is not reference:
        load = replace(load, missing=tuple(k for k in load.missing if k not in restored.tensors))
    return restored, current, load


def _committed(config: Config, spec: ModelSpec) -> Reference:
    from ckptlint.readers.sigtoml import read_signature

    path = signature_path(config, spec.name)
    label = relative(path, config.root)
    if not path.exists():
        return Reference(label, path, problem=Finding(
            Kind.SIGNATURE_MISSING, spec.name, f"no committed signature {label} for model "
                                               f"`{spec.name}`",
            location=entry_location(config, spec, "name"),
            help=f"run `ckptlint update {spec.name}` and commit the file"))
    try:
        return Reference(label, path, read_signature(path, label))
    except SignatureFileError as exc:
        return Reference(label, path, problem=Finding(
            Kind.SIGNATURE_INVALID, spec.name, str(exc),
            location=Location(label, exc.line or 1),
            help=f"restore it from version control or run `ckptlint update {spec.name}`"))


def _torch_note(reference: Signature | None, result: BuildResult, findings: list[Finding],
                config: Config, ref: Reference) -> tuple[str, ...]:
    current = result.signature
    if not (reference and current and findings and reference.torch_version
            and reference.torch_version != current.torch_version):
        return ()
    said = (f"{result.model}: the signature was written with torch {reference.torch_version} "
            f"and this is torch {current.torch_version}")
    from ckptlint.source import history

    files = [*result.files, relative(config.pyproject, config.root)]
    commit = history.unchanged_since(Path(config.root), ref.label, files) \
        if ref.committed else None
    if commit:
        return (f"{said}; the project's files are unchanged since the signature was committed "
                f"({commit[:7]}), so this drift comes from the torch upgrade",)
    return (f"{said}; part of this drift may come from the upgrade",)


def orphans(config: Config) -> list[Finding]:
    """Signature files in the signatures directory that no configured model uses."""
    directory = Path(config.root) / config.signatures
    names = {m.name for m in config.models}
    found = sorted(p for p in directory.glob("*.toml") if p.stem not in names) \
        if directory.is_dir() else []
    return [Finding(Kind.SIGNATURE_ORPHANED, p.stem,
                    f"{relative(p, config.root)} belongs to no configured model",
                    location=Location(relative(p, config.root), 1),
                    help="delete it, or register the model it describes") for p in found]


@dataclass(frozen=True, slots=True)
class UpdateResult:
    written: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[Finding, ...] = ()
    orphaned: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


def update(config: Config, names: Sequence[str] = (),
           builder: Builder = _default_builder) -> UpdateResult:
    """Write each selected model's current signature; a model that fails to build keeps its file."""
    from ckptlint.core import sigfile

    written, unchanged, failed, notes = [], [], [], []
    specs = select(config, names)
    for spec, result in zip(specs, builder(specs, config, [None] * len(specs))):
        notes += result.notes + result.fallbacks
        path = signature_path(config, spec.name)
        if result.signature is None:
            kept = "its signature was left as it was" if path.exists() else \
                "no signature was written"
            failed.append(Finding(Kind.BUILD_ERROR, spec.name, result.error,
                                  location=result.error_location, help=kept))
            continue
        changed = _write_signature(config, path, sigfile.dumps(result.signature))
        (written if changed else unchanged).append(relative(path, config.root))
    return UpdateResult(tuple(written), tuple(unchanged), tuple(failed),
                        tuple(orphans(config)), tuple(notes))


@dataclass(frozen=True, slots=True)
class Fit:
    """How well a checkpoint fits one registered model; lower `rank` is better."""

    model: str
    verdict: str
    detail: str = ""
    rank: tuple = ()
    of_it: str = ""  # the verdict said of the checkpoint: "loads it strictly"


def fits(config: Config, checkpoint: Path | RemotePath, builder: Builder = _default_builder,
         unrelated: bool = False, build: bool = False) -> list[Fit]:
    """How each registered model would load `checkpoint`, best first.

    Which model a file fits is a comparison of two signatures: a model's committed one stands
    for its code (no torch, no build), unless `build` asks for torch's dry run on the code as it
    is now; models without a committed signature are built. Models that share no key with it
    (even past a wrapper prefix) are left out, unless `unrelated`.
    """
    refs = [_stripped(spec, read_reference(config, spec, checkpoint, committed=False))
            for spec in config.models]
    readable = [(spec, ref) for spec, ref in zip(config.models, refs) if ref.signature is not None]
    committed = {} if build else {spec.name: r.signature for spec in config.models
                                  for r in [_committed(config, spec)] if r.signature is not None}
    jobs = [(spec, ref) for spec, ref in readable if spec.name not in committed]
    built = iter(builder([j[0] for j in jobs], config, [j[1].signature for j in jobs])
                 if jobs else [])
    results = [BuildResult(spec.name, signature=committed[spec.name]) if spec.name in committed
               else next(built) for spec, _ in readable]
    found = [_fit(spec, _model_report(config, spec, [ref], [result], alone=len(readable) == 1))
             for (spec, ref), result in zip(readable, results)
             if unrelated or result.signature is None
             or _shares_keys(ref.signature, result.signature)]
    return sorted(found, key=lambda f: f.rank)


def _shares_keys(reference: Signature, current: Signature) -> bool:
    """Any key in common, also under a wrapper prefix (`model.emb.weight` ~ `emb.weight`).

    A bare `weight` or `bias` alone says nothing: every layer has one. Linear in the keys'
    length (the file's keys are untrusted: no pairwise comparison).
    """
    ours, theirs = set(current.tensors), set(reference.tensors)
    if ours & theirs - {"weight", "bias"}:
        return True
    return _under_a_prefix(ours, theirs) or _under_a_prefix(theirs, ours)


def _under_a_prefix(longer: set[str], shorter: set[str]) -> bool:
    """Whether some key of `longer` is `prefix.` + a dotted key of `shorter`."""
    for key in longer:
        parts = key.split(".")
        if any(".".join(parts[i:]) in shorter for i in range(1, len(parts) - 1)):
            return True
    return False


def _fit(spec: ModelSpec, report: ModelReport) -> Fit:
    """The model's verdict as a ranked fit: better verdicts first, then fewer differences."""
    differences = sum(len(f.keys) or 1 for f in report.findings
                      if f.kind is not Kind.PREFIX_MISMATCH)
    if not report.verdict:  # no verdict: the model could not be built
        return Fit(spec.name, "could not be built", report.findings[0].message,
                   (len(BEST_FIRST), differences), "could not be built")
    prefixes = [f.key for f in report.findings if f.kind is Kind.PREFIX_MISMATCH]
    if prefixes and report.verdict == Verdict.DOES_NOT_LOAD and not any(
            f.kind in (Kind.SHAPE_MISMATCH, Kind.LOAD_ERROR) for f in report.findings):
        rest = "strictly" if not differences else "with strict=False"
        stripped = f"{rest} once the `{prefixes[0]}` prefix is stripped"
        return Fit(spec.name, f"loads {stripped}",
                   f"set strip_prefix = \"{prefixes[0]}\" in its entry", (0.5, differences),
                   f"loads it {stripped}")
    said = Verdict(report.verdict)
    return Fit(spec.name, said.text, report.verdict_note,
               (BEST_FIRST.index(said), differences), said.of_it)


def update_from(config: Config, name: str, checkpoint: Path | RemotePath,
                builder: Builder = _default_builder) -> UpdateResult:
    """Record a model's signature from a real checkpoint file instead of the code.

    The entry's `strip_prefix` applies, and a wrapper prefix every key carries that the code's
    keys do not (Lightning's `model.`, DDP's `module.`, AveragedModel's `module.` and
    `n_averaged`) is taken off too, with a note: a signature the code cannot load would fail
    every later `check`. The notes also say how the current code loads the file.
    """
    from ckptlint.compare import prefix
    from ckptlint.core import sigfile

    spec, = select(config, [name])
    reference = _stripped(spec, read_reference(config, spec, checkpoint, committed=False))
    if reference.signature is None:
        raise CheckpointError(str(checkpoint), reference.problem.message.partition(": ")[2])
    if reference.signature.partial:
        raise CheckpointError(str(checkpoint), f"{_PARTIAL}, not a whole state dict: check it "
                                               f"with `ckptlint check {name} --against "
                                               f"{reference.label}` or list it in `checkpoints`")
    [result] = builder([spec], config, [reference.signature])
    wrapper = prefix.detect(reference.signature, result.signature) if result.signature else None
    notes = reference.notes
    if wrapper is not None and wrapper.side == "checkpoint":
        reference = replace(reference, signature=wrapper.apply(reference.signature))
        notes += (f"{name}: {_unwrapped_note(reference.label, wrapper)}",)
    signature = replace(reference.signature, model=spec.name, target=spec.target,
                        source="checkpoint")
    path = signature_path(config, spec.name)
    changed = _write_signature(config, path, sigfile.dumps(signature))
    shown = (relative(path, config.root),)
    return UpdateResult(written=shown if changed else (), unchanged=() if changed else shown,
                        notes=notes + _loads_note(config, spec, reference, result))


_PARTIAL = "is a PEFT adapter (the keys it changes in a base model)"


def _unwrapped_note(label: str, wrapper: Any) -> str:
    from ckptlint.compare.diff import wrapped_by

    extra = f" and dropped {_listed_keys(wrapper.dropped)}" if wrapper.dropped else ""
    return (f"every key of {label} sits under `{wrapper.prefix}` ({wrapped_by(wrapper)}): "
            f"recorded its keys with the prefix stripped{extra}, as the code names them")


def _loads_note(config: Config, spec: ModelSpec, reference: Reference,
                result: BuildResult) -> tuple[str, ...]:
    """How the current code loads the recorded signature."""
    fit = _fit(spec, _model_report(config, spec, [reference], [result]))
    return (f"{spec.name}: the current code {fit.of_it}"
            + (f" ({fit.detail})" if fit.detail else "")
            + ("" if fit.rank[0] == 0 else f"; `ckptlint check {spec.name}` shows why"),)
