"""Which registered model a checkpoint fits (`inspect`), and `update --from`: a signature
recorded from a checkpoint file instead of the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckptlint.config import signature_path
from ckptlint.core.errors import CheckpointError
from ckptlint.core.kinds import BEST_FIRST, Kind, Verdict
from ckptlint.core.paths import relative
from ckptlint.core.record import record, replace
from ckptlint.core.records import BuildResult, Config, Finding, ModelReport, ModelSpec, Signature
from ckptlint.core.urls import RemotePath
from ckptlint.run.plan import (Builder, Reference, build_per_model, committed_reference,
                               default_builder, listed_keys, read_reference, select,
                               without_entry_prefix, write_signature)
from ckptlint.run.report import model_report


@record
class UpdateResult:
    written: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    failed: tuple[Finding, ...] = ()
    orphaned: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


@record
class Fit:
    """How well a checkpoint fits one registered model; lower `rank` is better."""

    model: str
    verdict: str
    detail: str = ""
    rank: tuple = ()
    of_it: str = ""  # the verdict said of the checkpoint: "loads it strictly"


def fits(config: Config, checkpoint: Path | RemotePath, builder: Builder = default_builder,
         unrelated: bool = False, build: bool = False) -> list[Fit]:
    """How each registered model would load `checkpoint`, best first.

    Which model a file fits is a comparison of two signatures: a model's committed one stands
    for its code (no torch, no build), unless `build` asks for torch's dry run on the code as it
    is now; models without a committed signature are built. Models that share no key with it
    (even past a wrapper prefix) are left out, unless `unrelated`.
    """
    refs = [without_entry_prefix(spec, read_reference(config, spec, checkpoint, committed=False))
            for spec in config.models]
    readable = [(spec, ref) for spec, ref in zip(config.models, refs) if ref.signature is not None]
    committed = {} if build else {spec.name: r.signature for spec in config.models
                                  for r in [committed_reference(config, spec)] if r.signature is not None}
    built = build_per_model(builder, config, [(spec, [ref]) for spec, ref in readable
                                              if spec.name not in committed])
    results = [BuildResult(spec.name, signature=committed[spec.name]) if spec.name in committed
               else built[spec.name][0] for spec, _ in readable]
    found = [_fit(spec, model_report(config, spec, [ref], [result], alone=len(readable) == 1))
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
                builder: Builder = default_builder) -> UpdateResult:
    """Record a model's signature from a real checkpoint file instead of the code.

    The entry's `strip_prefix` applies, and a wrapper prefix every key carries that the code's
    keys do not (Lightning's `model.`, DDP's `module.`, AveragedModel's `module.` and
    `n_averaged`) is taken off too, with a note: a signature the code cannot load would fail
    every later `check`. The notes also say how the current code loads the file.
    """
    from ckptlint.compare import prefix
    from ckptlint.core import sigfile

    spec, = select(config, [name])
    reference = without_entry_prefix(spec, read_reference(config, spec, checkpoint,
                                                          committed=False))
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
    changed = write_signature(config, path, sigfile.dumps(signature))
    shown = (relative(path, config.root),)
    return UpdateResult(written=shown if changed else (), unchanged=() if changed else shown,
                        notes=notes + _loads_note(config, spec, reference, result))


_PARTIAL = "is a PEFT adapter (the keys it changes in a base model)"


def _unwrapped_note(label: str, wrapper: Any) -> str:
    from ckptlint.compare.diff import wrapped_by

    extra = f" and dropped {listed_keys(wrapper.dropped)}" if wrapper.dropped else ""
    return (f"every key of {label} sits under `{wrapper.prefix}` ({wrapped_by(wrapper)}): "
            f"recorded its keys with the prefix stripped{extra}, as the code names them")


def _loads_note(config: Config, spec: ModelSpec, reference: Reference,
                result: BuildResult) -> tuple[str, ...]:
    """How the current code loads the recorded signature."""
    fit = _fit(spec, model_report(config, spec, [reference], [result]))
    return (f"{spec.name}: the current code {fit.of_it}"
            + (f" ({fit.detail})" if fit.detail else "")
            + ("" if fit.rank[0] == 0 else f"; `ckptlint check {spec.name}` shows why"),)
