"""One model's report from its builds: the pure diff against each reference, findings located
at their source statements, suppressions applied, torch's verdict per checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ckptlint.config import entry_location
from ckptlint.core.kinds import Kind, Verdict
from ckptlint.core.paths import relative
from ckptlint.core.record import replace
from ckptlint.core.records import BuildResult, Config, Finding, ModelReport, ModelSpec, Signature
from ckptlint.run.plan import Reference


def locate_findings(config: Config, spec: ModelSpec, result: BuildResult, report: ModelReport,
             locators: dict, refs: Sequence[Reference] = ()) -> ModelReport:
    """The findings at their statements, suppressed where a comment says so, then one per
    cause (`ckptlint.source.causes`)."""
    from ckptlint.source import suppress
    # libcst is imported only when there is something to point at
    from ckptlint.source.locate import Locator

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


def model_report(config: Config, spec: ModelSpec, refs: Sequence[Reference],
                  results: Sequence[BuildResult], alone: bool = True) -> ModelReport:
    """One model's findings and notes; `alone`: no other model was checked in this run."""
    from ckptlint.compare import diff
    from ckptlint.compare.verdict import verdict as loading
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
    verdict, verdict_note = loading(per_ref[0][1]) if per_ref else ("", "")
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
    from ckptlint.source.evidence import rename_evidence

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
