"""`ckptlint check`: compare current code with the committed signatures; never writes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ckptlint import engine
from ckptlint.commands.output import emit
from ckptlint.config import load_config
from ckptlint.ftypes import Outcome


def run(args: argparse.Namespace) -> int:
    config = load_config(Path.cwd())
    report = engine.check(config, args.names)
    emit(report, args.format, args.color)
    outcome = report.outcome
    if args.exit_zero:  # like ruff: drift no longer fails, a model we could not check still does
        outcome &= ~Outcome.DRIFT
    return int(outcome)
