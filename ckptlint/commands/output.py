"""Where rendered reports go: `--format NAME[:PATH]`, several per run, and colour decisions."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from ckptlint.core.atomic import write_atomic
from ckptlint.core.errors import CkptlintError, reason
from ckptlint.core.record import record, replace
from ckptlint.core.records import Report
from ckptlint.reporters import REPORTERS, RenderOptions, renderer
from ckptlint.run.replay import use_color


@record
class Sink:
    format: str
    path: str | None = None


def parse_sink(value: str) -> Sink:
    name, sep, path = value.partition(":")
    if name not in REPORTERS:
        raise CkptlintError(f"unknown output format `{name}` (choose from "
                            f"{', '.join(REPORTERS)}; add `:PATH` to write it to a file)")
    if sep and not path:
        raise CkptlintError(f"`--format {value}` names no file after the colon")
    return Sink(name, path or None)


def check_sinks(sinks: Sequence[Sink]) -> None:
    """Two reports on stdout would be one unparsable stream: at most one may go there."""
    on_stdout = [s.format for s in sinks if s.path is None]
    if len(on_stdout) > 1:
        raise CkptlintError(f"only one --format can write to stdout, got {', '.join(on_stdout)}: "
                            "send the others to files, e.g. --format json:report.json")


def emit(report: Report, sinks: Sequence[Sink], color: str, stdout: TextIO | None = None,
         options: RenderOptions = RenderOptions()) -> None:
    """Render the report to every sink; `options` beyond colour (statistics, quiet) too."""
    stdout = stdout or sys.stdout
    check_sinks(sinks)
    for sink in sinks or (Sink("text"),):
        render = renderer(sink.format)
        if sink.path is None:
            stdout.write(render(report, replace(options, color=use_color(color, stdout))))
            continue
        try:
            write_atomic(Path(sink.path), render(report, replace(options, color=False)))
        except OSError as exc:
            raise CkptlintError(f"{sink.path}: cannot write the {sink.format} report "
                                f"({reason(exc)})") from None


def append_job_summary(report: Report, sinks: Sequence[Sink]) -> None:
    """On GitHub Actions, add the markdown summary to the job's summary page by itself.

    GitHub gives each step its own $GITHUB_STEP_SUMMARY file and expects appends to it.
    """
    target = os.environ.get("GITHUB_STEP_SUMMARY", "")
    if os.environ.get("GITHUB_ACTIONS") != "true" or not target:
        return
    if any(s.path and Path(s.path).resolve() == Path(target).resolve() for s in sinks):
        return
    text = renderer("markdown")(report, RenderOptions(color=False))
    try:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        print(f"ckptlint: warning: cannot append the job summary to {target}: {reason(exc)}",
              file=sys.stderr)
