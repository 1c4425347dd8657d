"""`ckptlint check`: compare current code with the committed signatures; never writes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckptlint.commands.output import append_job_summary, emit
from ckptlint.commands.setup import Setup, prepare
from ckptlint.compare import selection
from ckptlint.core.errors import CkptlintError
from ckptlint.core.inputs import digest
from ckptlint.core.kinds import Outcome
from ckptlint.core.paths import relative
from ckptlint.core.records import Report
from ckptlint.core.urls import RemotePath, location
from ckptlint.reporters import RenderOptions, renderer
from ckptlint.run import cache, engine, replay


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=cache.enabled(args.no_cache))
    against = location(args.against) if args.against else None
    if isinstance(against, Path) and not against.exists():  # a URL's reader says it itself
        raise CkptlintError(f"{args.against}: no such checkpoint or signature file")
    if against is not None and not args.names and len(setup.config.models) > 1:
        names = ", ".join(m.name for m in setup.config.models)
        shown = str(against) if isinstance(against, RemotePath) else args.against
        raise CkptlintError(f"name the model to check against {shown} (configured: "
                            f"{names}); `ckptlint inspect {shown}` shows which ones it fits")
    argv = getattr(args, "argv", None) or []
    # taken before the run reads the folder (orphans), like every input a record rests on
    signatures = digest(str(Path(setup.config.root) / setup.config.signatures)) \
        if replay.replayable(argv) else None
    report = engine.check(setup.config, args.names, setup.builder, setup.cache, against)
    if setup.cache and setup.cache.problem:
        print(f"ckptlint: warning: {setup.cache.problem}", file=sys.stderr)
    # the cache holds the whole truth; the command line narrows only what is shown and judged
    report = selection.narrowed(report, _flat(args.select), _flat(args.ignore))
    emit(report, args.format, args.color,
         options=RenderOptions(statistics=args.statistics, quiet=args.quiet))
    append_job_summary(report, args.format)
    outcome = selection.outcome(report, args.fail_on)
    if args.exit_zero:  # like ruff: drift no longer fails, a model we could not check still does
        outcome &= ~Outcome.DRIFT
    if outcome == Outcome.CLEAN and setup.cache and replay.replayable(argv):
        _remember(setup, report, argv, signatures)
    return int(outcome)


def _flat(groups: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(code for group in groups for code in group))


def _remember(setup: Setup, report: Report, argv: list[str], signatures: str | None) -> None:
    """Record this clean plain run for `ckptlint.run.replay`, from the inputs each model's result
    rests on as they were read, never re-digested now (an edit during the run must not be
    recorded as clean)."""
    config, store = setup.config, setup.cache
    docs = [store.inputs_of(spec) for spec in config.models]
    if any(d is None for d in docs) or None in (signatures, setup.pyproject_digest) \
            or not store.writable():
        return
    docs.append({"files": {relative(config.pyproject, config.root): setup.pyproject_digest,
                           config.signatures: signatures}})
    text = renderer("text")
    try:
        replay.record(config.root, argv, docs, text(report, RenderOptions(color=False)),
                      text(report, RenderOptions(color=True)))
    except OSError:  # the cache folder could not take it: the next run is just not replayed
        pass
