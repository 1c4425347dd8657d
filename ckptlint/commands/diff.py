"""`ckptlint diff OLD NEW`: compare two checkpoint or signature files like `check` would."""

from __future__ import annotations

import argparse
from pathlib import Path

from ckptlint.commands.output import emit
from ckptlint.diff import compare
from ckptlint.engine import restore_ties
from ckptlint.ftypes import ModelReport, Outcome, Report
from ckptlint.readers import read_checkpoint


def run(args: argparse.Namespace) -> int:
    old = read_checkpoint(Path(args.old), args.state_dict_key)
    new = read_checkpoint(Path(args.new), args.state_dict_key)
    label = f"{args.old} -> {args.new}"
    # NEW plays the model: its own dropped ties are ties of that model, so restore them
    old_sig, new_sig = old.signature, new.full_signature
    # OLD's own missing tied keys are filled from their tie, and still reported: plain
    # load_state_dict(strict=True) fails on them
    restored = restore_ties(old_sig, new_sig)
    findings = tuple(compare(label, restored, new_sig,
                             restored=set(restored.tensors) - set(old_sig.tensors)))
    notes = tuple(f"{name}: {r.note}" for name, r in ((args.old, old), (args.new, new)) if r.note)
    report = Report(models=(ModelReport(
        name=label, findings=findings,
        old_parameters=old.signature.num_parameters,
        new_parameters=new.signature.num_parameters),), notes=notes,
        compared=(args.old, args.new))
    emit(report, args.format, args.color)
    outcome = report.outcome
    if args.exit_zero:
        outcome &= ~Outcome.DRIFT
    return int(outcome)
