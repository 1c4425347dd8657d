"""`ckptlint check`: compare current code with the committed signatures; never writes them."""

from __future__ import annotations

import argparse

from ckptlint import cache, engine
from ckptlint.commands.output import emit
from ckptlint.commands.setup import prepare
from ckptlint.ftypes import Outcome


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=cache.enabled(args.no_cache))
    report = engine.check(setup.config, args.names, setup.builder, setup.cache)
    emit(report, args.format, args.color)
    outcome = report.outcome
    if args.exit_zero:  # like ruff: drift no longer fails, a model we could not check still does
        outcome &= ~Outcome.DRIFT
    return int(outcome)
