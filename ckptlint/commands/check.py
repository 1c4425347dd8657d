"""`ckptlint check`: compare current code with the committed signatures; never writes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ckptlint import cache, engine, replay
from ckptlint.commands.output import append_job_summary, emit
from ckptlint.commands.setup import Setup, prepare
from ckptlint.errors import CkptlintError
from ckptlint.ftypes import Outcome, Report
from ckptlint.paths import relative
from ckptlint.reporters import RenderOptions, renderer


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=cache.enabled(args.no_cache))
    against = Path(args.against) if args.against else None
    if against is not None and not against.exists():
        raise CkptlintError(f"{args.against}: no such checkpoint or signature file")
    if against is not None and not args.names and len(setup.config.models) > 1:
        names = ", ".join(m.name for m in setup.config.models)
        raise CkptlintError(f"name the model to check against {args.against} (configured: "
                            f"{names}); `ckptlint inspect {args.against}` shows which ones it fits")
    report = engine.check(setup.config, args.names, setup.builder, setup.cache, against)
    emit(report, args.format, args.color)
    append_job_summary(report, args.format)
    outcome = report.outcome
    if args.exit_zero:  # like ruff: drift no longer fails, a model we could not check still does
        outcome &= ~Outcome.DRIFT
    if outcome == Outcome.CLEAN and setup.cache and _plain(args):
        _remember(setup, report)
    return int(outcome)


def _plain(args: argparse.Namespace) -> bool:
    """Exactly `ckptlint check`: the only run `ckptlint.replay` answers."""
    return (not args.names and not args.against and not args.format and args.color == "auto"
            and not args.exit_zero and args.jobs == 1 and not args.debug)


def _remember(setup: Setup, report: Report) -> None:
    config, store = setup.config, setup.cache
    inputs = [relative(config.pyproject, config.root), config.signatures]
    for spec in config.models:
        files = store.files_of(spec)
        if files is None:
            return
        inputs += files + [relative(p, config.root) for p in engine.inputs_of(config, spec, None)]
    text = renderer("text")
    replay.record(config.root, inputs, text(report, RenderOptions(color=False)),
                  text(report, RenderOptions(color=True)))
