"""What a run checks and builds: the models named, the state dicts each must keep loading (its
committed signature and checkpoints, read once per run, wrapper prefixes stripped as its entry
says), and their builds through the run's builder, handed back per model, keyed by job."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Mapping, Sequence

from ckptlint.config import entry_location, signature_path
from ckptlint.core.atomic import SCRATCH, write_atomic
from ckptlint.core.constants import CACHE_DIRECTORY
from ckptlint.core.errors import CheckpointError, CkptlintError, SignatureFileError
from ckptlint.core.kinds import Kind
from ckptlint.core.paths import inside, relative
from ckptlint.core.record import field, record, replace
from ckptlint.core.records import BuildResult, Config, Finding, Location, ModelSpec, Signature
from ckptlint.core.urls import RemotePath, location


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


def write_signature(config: Config, path: Path, text: str) -> bool:
    """Atomically, with the temp file in the cache folder (ignored by git, inside the project),
    so a killed run leaves nothing `git add signatures/` would stage."""
    scratch = Path(config.root) / CACHE_DIRECTORY / SCRATCH
    return write_atomic(path, text, scratch if inside(scratch, config.root) else None)


def default_builder(specs: Sequence[ModelSpec], config: Config,
                     references: Sequence[Signature | None]) -> list[BuildResult]:
    from ckptlint.build.interpreter import in_process

    return in_process(specs, config, references)


@record
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


def build_per_model(builder: Builder, config: Config,
                    plans: Sequence[tuple[ModelSpec, Sequence[Reference]]]
                    ) -> dict[str, list[BuildResult]]:
    """Every build the plans need, in one call to the builder (so it can run them in
    parallel), handed back per model in the order of its references. A result for another
    model than its job's, or a missing one, is a builder bug: raised, never misaligned."""
    jobs = [(spec, ref) for spec, refs in plans for ref in buildable(refs)]
    results = builder([spec for spec, _ in jobs], config, [ref for _, ref in jobs]) if jobs else []
    if len(results) != len(jobs) or any(r.model != spec.name
                                        for (spec, _), r in zip(jobs, results)):
        raise RuntimeError(f"the builder answered {[r.model for r in results]} for the jobs "
                           f"{[spec.name for spec, _ in jobs]}")
    per_model: dict[str, list[BuildResult]] = {}
    for (spec, _), result in zip(jobs, results):
        per_model.setdefault(spec.name, []).append(result)
    return per_model


def buildable(refs: Sequence[Reference]) -> list[Signature | None]:
    """One build per readable reference (each gets torch's dry run), or one plain build."""
    return [r.signature for r in refs if r.signature is not None] or [None]


def references(config: Config, spec: ModelSpec,
               against: Path | RemotePath | None = None) -> list[Reference]:
    if against is not None:  # named on the command line: unreadable is an error, not a finding
        reference = read_reference(config, spec, against, committed=False)
        if reference.problem is not None:
            raise CheckpointError(str(against), reference.problem.message.partition(": ")[2])
        return [without_entry_prefix(spec, reference)]
    return [without_entry_prefix(spec, r) for r in [committed_reference(config, spec)] + [
        read_reference(config, spec, location(p, config.root), committed=False)
        for p in spec.checkpoints]]


def without_entry_prefix(spec: ModelSpec, reference: Reference) -> Reference:
    """The reference with the entry's `strip_prefix` taken off its keys."""
    if not (spec.strip_prefix and reference.signature):
        return reference
    from ckptlint.compare import prefix

    return replace(reference, signature=prefix.strip(reference.signature, spec.strip_prefix))


def read_reference(config: Config, spec: ModelSpec, path: Path | RemotePath,
                   committed: bool) -> Reference:
    """Read a checkpoint (or signature) file the model must load; unreadable (also: a network
    failure on a URL) is a finding."""
    from ckptlint.readers import read_checkpoint

    label = relative(path, config.root)
    with _remote_reads(path) as used:
        try:
            read = read_checkpoint(path, spec.state_dict_key)
        except CheckpointError as exc:
            return Reference(label, path, problem=Finding(
                Kind.CHECKPOINT_UNREADABLE, spec.name, str(exc), against=label,
                location=entry_location(config, spec, "checkpoints")), committed=committed)
    notes = (f"{spec.name}: {label}: {read.note}",) if read.note else ()
    if read.tied:  # declared by a tie-aware writer: its loader restores them, plain torch not
        notes += (f"{spec.name}: {label} stores tied weights once ({listed_keys(read.tied)} "
                  "left out, as its writer recorded): safetensors.torch.load_model and "
                  "strict=False fill them, plain load_state_dict(strict=True) does not",)
    # the keys the file holds: a key its writer dropped as a tie is restored only where the
    # code ties it too (`restore_ties`), exactly as loading it would fill it
    return Reference(label, path, read.signature, notes=notes, committed=committed,
                     declared_ties=tuple(read.tied), remote=dict(used))


def _remote_reads(path: Path | RemotePath) -> ContextManager[dict[str, str | None]]:
    """`remote.recording()`: what each remote file the reading used was, for the cache.

    A reading that starts from a local path stays local: every path a reader opens is derived
    from the one it was given (`parent / name`), and only readers/files.py turns a `RemotePath`
    into requests. So a local file records nothing, and only a URL loads the remote reader.
    tests/test_remote.py tries a local index naming a URL as its shard.
    """
    if not isinstance(path, RemotePath):
        return contextlib.nullcontext({})
    from ckptlint.readers import remote

    return remote.recording()


def listed_keys(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{k}`" for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def committed_reference(config: Config, spec: ModelSpec) -> Reference:
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
