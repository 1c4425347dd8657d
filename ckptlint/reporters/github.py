"""`--format github`: one GitHub Actions workflow command (`::error file=…::msg`) per finding.

GitHub shows at most 10 annotations per level per step, so the most severe come first and one
closing notice counts the findings that did not fit. The output is workflow commands only.
Text from files is escaped twice: control characters as `keys.printable` shows them (the log
viewer would render an ESC sequence), except the line breaks the runner's own escaping turns
into `%0A` (a multi-line annotation is safe), then as that escaping demands.
"""

from __future__ import annotations

import re
from typing import Iterable

from ckptlint.core.keys import printable
from ckptlint.core.kinds import Severity
from ckptlint.core.records import Finding, Location, Report
from ckptlint.reporters.options import RenderOptions

PER_LEVEL = 10  # annotations GitHub displays per level (error, warning, notice) per step
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
ORDER = (Severity.ERROR, Severity.WARNING, Severity.NOTE)
_BREAKS = re.compile(r"(\r\n|\r|\n)")


def visible(text: str) -> str:
    """Untrusted text with its control characters escaped, its line breaks kept."""
    return "".join(part if i % 2 else printable(part)
                   for i, part in enumerate(_BREAKS.split(text)))


def escape_data(text: str) -> str:
    """A command's message, escaped as @actions/core's `escapeData` does (`%` first)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value, escaped as @actions/core's `escapeProperty` does."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, properties: Iterable[tuple[str, object]], message: str) -> str:
    # Like the toolkit, leave out properties without a value rather than send `key=`.
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties if v)
    return f"::{level}{' ' + props if props else ''}::{escape_data(message)}"


def location_properties(loc: Location | None) -> list[tuple[str, object]]:
    """file/line/endLine, plus col/endColumn only on a one-line span (the runner rejects them
    on a multi-line one). `end_column` is passed through exclusive, as ruff does."""
    if loc is None:
        return []
    props: list[tuple[str, object]] = [("file", printable(loc.file)), ("line", loc.line),
                                       ("endLine", loc.end_line)]
    if loc.end_line is None or loc.end_line == loc.line:
        props += [("col", loc.column), ("endColumn", loc.end_column)]
    return props


def title(f: Finding) -> str:
    return f"{f.code} {f.kind.slug}" + (f" ({printable(f.model)})" if f.model else "")


MAX_MEMBERS = 20  # keys listed in one annotation; SARIF and JSON keep every one


def annotation(f: Finding) -> str:
    message = visible(f.message) + members(f) + \
        (f"\n\nhelp: {visible(f.help)}" if f.help else "")
    props = location_properties(f.location) + [("title", title(f))]
    return command(LEVELS[f.severity], props, message)


def members(f: Finding) -> str:
    """The keys a grouped finding explains, one per line, each with its creating statement
    when that is elsewhere: one annotation per cause, not one per key."""
    from ckptlint.source.wording import brief

    lines = []
    for member in f.members[:MAX_MEMBERS]:
        loc = member.location
        where = f" ({loc.file}:{loc.line})" if loc and f.location and \
            (loc.file, loc.line) != (f.location.file, f.location.line) else ""
        lines.append(f"- {member.code} {visible(brief(member))}{visible(where)}")
    if len(f.members) > MAX_MEMBERS:
        lines.append(f"- … and {len(f.members) - MAX_MEMBERS} more")
    return "\n\n" + "\n".join(lines) if lines else ""


def budget(counts: dict[Severity, int]) -> dict[Severity, int]:
    """How many findings of each level to annotate; the overflow notice takes one notice slot."""
    shown = {sev: min(counts[sev], PER_LEVEL) for sev in ORDER}
    if any(counts[sev] > shown[sev] for sev in ORDER):
        shown[Severity.NOTE] = min(counts[Severity.NOTE], PER_LEVEL - 1)
    return shown


def overflow_notice(hidden: dict[Severity, int], options: RenderOptions) -> str:
    total = sum(hidden.values())
    words = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}
    parts = ", ".join(f"{n} {words[sev]}{'s' if n != 1 else ''}"
                      for sev, n in hidden.items() if n)
    verb = "finding is" if total == 1 else "findings are"
    return command("notice", [("title", "More ckptlint findings")],
                   f"{total} more {verb} not annotated ({parts}; GitHub shows {PER_LEVEL} "
                   f"per level); run `{options.command} check` locally or read the job summary")


def render(report: Report, options: RenderOptions) -> str:
    groups = {sev: [f for f in report.findings if f.severity is sev] for sev in ORDER}
    shown = budget({sev: len(group) for sev, group in groups.items()})
    lines = [annotation(f) for sev in ORDER for f in groups[sev][:shown[sev]]]
    hidden = {sev: len(groups[sev]) - shown[sev] for sev in ORDER}
    if any(hidden.values()):
        lines.append(overflow_notice(hidden, options))
    return "".join(line + "\n" for line in lines)
