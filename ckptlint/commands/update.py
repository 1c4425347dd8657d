"""`ckptlint update`: write signatures from the current code (how an intended change is accepted)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckptlint.commands.setup import prepare
from ckptlint.core.errors import CkptlintError
from ckptlint.core.kinds import Outcome
from ckptlint.core.urls import location
from ckptlint.run import engine, fit


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=False)
    if args.from_file is not None:
        if len(args.names) != 1:
            example = setup.config.models[0].name if setup.config.models else "NAME"
            raise CkptlintError("`ckptlint update --from FILE` records one model: name it, "
                                f"e.g. `ckptlint update {example} --from {args.from_file}`")
        source = location(args.from_file)
        result = fit.update_from(setup.config, args.names[0],
                                 source.resolve() if isinstance(source, Path) else source,
                                 setup.builder)
    else:
        result = engine.update(setup.config, args.names, setup.builder)
    out = sys.stdout
    for path in result.written:
        out.write(f"wrote {path}\n")
    for path in result.unchanged:
        out.write(f"unchanged {path}\n")
    for note in result.notes:
        out.write(f"note: {note}\n")
    for finding in result.failed:
        loc = finding.location
        where = f"{loc.file}:{loc.line}: " if loc else ""
        out.write(f"{where}{finding.code} {finding.model}: {finding.message} "
                  f"({finding.help})\n")
    for finding in result.orphaned:
        out.write(f"orphaned {finding.location.file if finding.location else finding.model}: "
                  "no configured model uses it; delete it or register its model\n")
    return int(Outcome.UNCHECKED) if result.failed else 0
