"""`ckptlint check`: compare current code with the committed signatures; never writes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ckptlint import cache, engine
from ckptlint.commands.output import append_job_summary, emit
from ckptlint.commands.setup import prepare
from ckptlint.errors import CkptlintError
from ckptlint.ftypes import Outcome


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=cache.enabled(args.no_cache))
    against = Path(args.against) if args.against else None
    if against is not None and not against.exists():
        raise CkptlintError(f"{args.against}: no such checkpoint or signature file")
    report = engine.check(setup.config, args.names, setup.builder, setup.cache, against)
    emit(report, args.format, args.color)
    append_job_summary(report, args.format)
    outcome = report.outcome
    if args.exit_zero:  # like ruff: drift no longer fails, a model we could not check still does
        outcome &= ~Outcome.DRIFT
    return int(outcome)
