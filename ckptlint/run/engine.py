"""The check and update loops: config -> builds -> pure diff -> findings. No printing, no exits.

What only a build needs (the diff, signature files, git, suppressions) is imported where it is
used, so a run answered from the cache stays a few imports long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ckptlint.config import signature_path
from ckptlint.core.kinds import Kind
from ckptlint.core.paths import display, relative
from ckptlint.core.record import replace
from ckptlint.core.records import (BuildResult, Config, Finding, Location, ModelReport, ModelSpec,
                                   Report)
from ckptlint.core.urls import RemotePath, location
from ckptlint.run.cache import Cache
from ckptlint.run.fit import UpdateResult
from ckptlint.run.plan import (Builder, build_per_model, default_builder, references, select,
                               write_signature)
from ckptlint.run.report import locate_findings, model_report


def check(config: Config, names: Sequence[str] = (), builder: Builder = default_builder,
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
    built = build_per_model(builder, config, plans)
    fresh, locators = [], {}  # one Locator per run: each source file is parsed once
    sources: set[str] = set()
    for spec, refs in plans:
        results = built[spec.name]
        sources.update(results[0].files)
        report = model_report(config, spec, refs, results, alone=len(specs) == 1)
        if report.findings:
            report = locate_findings(config, spec, results[0], report, locators, refs)
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


def update(config: Config, names: Sequence[str] = (),
           builder: Builder = default_builder) -> UpdateResult:
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
        changed = write_signature(config, path, sigfile.dumps(result.signature))
        (written if changed else unchanged).append(relative(path, config.root))
    return UpdateResult(tuple(written), tuple(unchanged), tuple(failed),
                        tuple(orphans(config)), tuple(notes))
