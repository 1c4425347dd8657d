"""`ckptlint diff OLD NEW`: compare two checkpoint or signature files like `check` would."""

from __future__ import annotations

import argparse

from ckptlint.commands.output import emit
from ckptlint.compare.diff import compare
from ckptlint.core.kinds import Outcome
from ckptlint.core.records import ModelReport, Report
from ckptlint.core.urls import RemotePath, location
from ckptlint.readers import read_checkpoint
from ckptlint.run.report import restore_ties


def run(args: argparse.Namespace) -> int:
    old_at, new_at = location(args.old), location(args.new)
    old = read_checkpoint(old_at, args.state_dict_key)
    new = read_checkpoint(new_at, args.state_dict_key)
    # as typed, except that a URL is named without its secrets
    old_name, new_name = (str(at) if isinstance(at, RemotePath) else arg
                          for at, arg in ((old_at, args.old), (new_at, args.new)))
    label = f"{old_name} -> {new_name}"
    # NEW plays the model: its own dropped ties are ties of that model, so restore them
    old_sig, new_sig = old.signature, new.full_signature
    # OLD's own missing tied keys are filled from their tie, and still reported: plain
    # load_state_dict(strict=True) fails on them
    restored = restore_ties(old_sig, new_sig)
    findings = tuple(compare(label, restored, new_sig,
                             restored=set(restored.tensors) - set(old_sig.tensors)))
    notes = tuple(f"{name}: {r.note}" for name, r in ((old_name, old), (new_name, new)) if r.note)
    report = Report(models=(ModelReport(
        name=label, findings=findings,
        old_parameters=old.signature.num_parameters,
        new_parameters=new.signature.num_parameters),), notes=notes,
        compared=(old_name, new_name))
    emit(report, args.format, args.color)
    outcome = report.outcome
    if args.exit_zero:
        outcome &= ~Outcome.DRIFT
    return int(outcome)
