"""The check and update loops: config -> builds -> pure diff -> findings. No printing, no exits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ckptlint import sigfile
from ckptlint.cache import Cache
from ckptlint.config import model_key_line
from ckptlint.diff import compare
from ckptlint.errors import CkptlintError, SignatureFileError
from ckptlint.ftypes import (BuildResult, Config, Finding, Kind, Location, ModelReport, ModelSpec,
                             Report, Signature)
from ckptlint.paths import relative

# builds models and returns plain data; in-process by default, swappable for a worker pool
Builder = Callable[[Sequence[ModelSpec], Config, Sequence["Signature | None"]], list[BuildResult]]


class UnknownModelError(CkptlintError):
    def __init__(self, name: str, config: Config):
        known = ", ".join(m.name for m in config.models) or "none"
        super().__init__(f"{relative(config.pyproject, config.root)}: no model named `{name}` in "
                         f"[[tool.ckptlint.models]] (configured: {known})")


def select(config: Config, names: Sequence[str]) -> tuple[ModelSpec, ...]:
    """The models named on the command line, in config order; all of them when none are named."""
    by_name = {m.name: m for m in config.models}
    for name in names:
        if name not in by_name:
            raise UnknownModelError(name, config)
    return tuple(m for m in config.models if not names or m.name in names)


def signature_path(config: Config, name: str) -> Path:
    return Path(config.root) / config.signatures / f"{name}.toml"


def _default_builder(specs: Sequence[ModelSpec], config: Config,
                     references: Sequence[Signature | None]) -> list[BuildResult]:
    from ckptlint.interpreter import in_process

    return in_process(specs, config, references)


def check(config: Config, names: Sequence[str] = (), builder: Builder = _default_builder,
          cache: Cache | None = None) -> Report:
    """Compare every selected model's current code with its committed signature.

    Models whose cached clean result still holds are not built; if none must be built, torch
    is never imported.
    """
    specs = select(config, names)
    cached = {s.name: cache.lookup(s, signature_path(config, s.name)) for s in specs} \
        if cache else {}
    todo = [s for s in specs if cached.get(s.name) is None]
    read = [_read_reference(config, spec) for spec in todo]
    results = builder(todo, config, [reference for reference, _ in read]) if todo else []
    fresh = tuple(_model_report(config, spec, ref, problem, result)
                  for spec, (ref, problem), result in zip(todo, read, results))
    if any(report.findings for report in fresh):
        fresh = _located(config, todo, results, fresh)
    for spec, report, result in zip(todo, fresh, results):
        if cache:
            cache.store(spec, signature_path(config, spec.name), report, result)
    by_name = {**{n: r for n, r in cached.items() if r}, **{r.name: r for r in fresh}}
    return Report(models=tuple(by_name[s.name] for s in specs),
                  extra=tuple(orphans(config)) if not names else (), root=config.root)


def _located(config: Config, specs: Sequence[ModelSpec], results: Sequence[BuildResult],
             reports: tuple[ModelReport, ...]) -> tuple[ModelReport, ...]:
    from ckptlint.locate import Locator  # libcst is imported only when there is something to point at

    locator = Locator(config)
    return tuple(replace(report, findings=tuple(locator.locate(report.findings, spec, result)))
                 for spec, result, report in zip(specs, results, reports))


def _model_report(config: Config, spec: ModelSpec, reference: Signature | None,
                  problem: Finding | None, result: BuildResult) -> ModelReport:
    shown = relative(signature_path(config, spec.name), config.root)
    findings = [problem] if problem else []
    if result.signature is None:
        findings.append(Finding(Kind.BUILD_ERROR, spec.name, result.error,
                                location=result.error_location,
                                help="the other models were still checked"))
    elif reference is not None:
        findings += compare(spec.name, reference, result.signature, result.load)
    return ModelReport(
        name=spec.name, findings=tuple(findings), signature_file=shown,
        old_parameters=reference.num_parameters if reference else None,
        new_parameters=result.signature.num_parameters if result.signature else None,
        notes=result.notes + _torch_note(reference, result, findings),
    )


def _read_reference(config: Config, spec: ModelSpec) -> tuple[Signature | None, Finding | None]:
    path = signature_path(config, spec.name)
    where = Location(relative(config.pyproject, config.root), spec.line or 1)
    if not path.exists():
        return None, Finding(
            Kind.SIGNATURE_MISSING, spec.name,
            f"no committed signature {relative(path, config.root)} for model `{spec.name}`",
            location=where, help=f"run `ckptlint update {spec.name}` and commit the file")
    try:
        return sigfile.read(path, relative(path, config.root)), None
    except SignatureFileError as exc:
        return None, Finding(Kind.SIGNATURE_INVALID, spec.name, str(exc),
                             location=Location(relative(path, config.root), 1),
                             help=f"restore it from version control or run "
                                  f"`ckptlint update {spec.name}`")


def _torch_note(reference: Signature | None, result: BuildResult,
                findings: list[Finding]) -> tuple[str, ...]:
    current = result.signature
    if not (reference and current and findings and reference.torch_version
            and reference.torch_version != current.torch_version):
        return ()
    return (f"{result.model}: the signature was written with torch {reference.torch_version} and "
            f"this is torch {current.torch_version}; part of this drift may come from the upgrade",)


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
    written, unchanged, failed, notes = [], [], [], []
    specs = select(config, names)
    for spec, result in zip(specs, builder(specs, config, [None] * len(specs))):
        notes += result.notes
        if result.signature is None:
            failed.append(Finding(Kind.BUILD_ERROR, spec.name, result.error,
                                  location=result.error_location))
            continue
        path = signature_path(config, spec.name)
        changed = sigfile.write_atomic(path, sigfile.dumps(result.signature))
        (written if changed else unchanged).append(relative(path, config.root))
    return UpdateResult(tuple(written), tuple(unchanged), tuple(failed),
                        tuple(orphans(config)), tuple(notes))


def model_line(config: Config, spec: ModelSpec, key: str = "target") -> Location:
    return Location(relative(config.pyproject, config.root),
                    model_key_line(config, spec, key) or spec.line or 1)
