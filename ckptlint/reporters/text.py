"""`--format text`: findings grouped by model, ruff-style lines, and a closing summary.

Every piece of text that comes from a file (keys in messages, notes, paths, source lines) is
escaped with `keys.printable` before it is painted: a key holding an ESC sequence or a newline
reaches the terminal (or a CI log) as visible `\x1b`/`\n`, never as a command.
"""

from __future__ import annotations

from ckptlint.core.keys import printable as _t
from ckptlint.core.kinds import Kind, Outcome, Severity, Status, Verdict
from ckptlint.core.records import Finding, Location, ModelReport, Report
from ckptlint.reporters.options import RenderOptions

_ANSI = {"bold": "1", "red": "31", "yellow": "33", "cyan": "36", "blue": "34", "dim": "2",
         "green": "32"}
TAB_WIDTH = 4  # code frames show tabs as spaces (ruff does too), so the carets line up
_SEVERITY_COLOR = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.NOTE: "blue"}


class Paint:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_ANSI[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def render(report: Report, options: RenderOptions) -> str:
    """Findings by model (or, with `statistics`, counts per code), notes, then the summary;
    `quiet` keeps the findings alone, so a clean run prints nothing."""
    paint = Paint(options.color)
    out: list[str] = statistics(report, paint) if options.statistics else []
    for model in report.models if not options.statistics else ():
        out += _model_block(model, paint, verdict=not options.quiet)
    for finding in report.extra if not options.statistics else ():
        out += _finding_lines(finding, paint)
    if options.quiet:
        return "\n".join(out) + "\n" if out else ""
    for note in (n for m in report.models for n in m.notes):
        out.append(f"{paint('note', 'bold', 'blue')}: {_t(note)}")
    out += [f"{paint('note', 'bold', 'blue')}: {_t(note)}" for note in report.notes]
    if out:
        out.append("")
    out += summary(report, options, paint)
    return "\n".join(out) + "\n"


def statistics(report: Report, paint: Paint) -> list[str]:
    """`    3  CKL103  shape-mismatch  [error]`: how many findings of each code, code order."""
    counts: dict[Kind, int] = {}
    for finding in report.findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    width = len(str(max(counts.values(), default=0)))
    return [f"{n:>{width}}  {paint(kind.code, 'bold', _SEVERITY_COLOR[kind.severity])}  "
            f"{kind.slug}  [{kind.severity.value}]"
            for kind, n in sorted(counts.items(), key=lambda item: item[0].code)]


def _model_block(model: ModelReport, paint: Paint, verdict: bool = True) -> list[str]:
    if not model.findings:
        return []
    count = len(model.findings)
    source = f" ({_t(model.signature_file)})" if model.signature_file else ""
    lines = [paint(_t(model.name), "bold") + f"{source}: {plural(count, 'finding')}"]
    for group in _same_statement(model.findings):
        lines += _group_lines(group, paint)
    if model.verdict and verdict:
        lines.append(verdict_line(model, paint))
    return lines


def verdict_line(model: ModelReport, paint: Paint) -> str:
    """`net: loads only with strict=False (stays randomly initialised: head.*)`."""
    color = {Verdict.LOADS: "green", Verdict.DOES_NOT_LOAD: "red"}.get(model.verdict, "yellow")
    note = f" ({_t(model.verdict_note)})" if model.verdict_note else ""
    said = Verdict(model.verdict).text if model.verdict else ""
    return f"{paint('verdict', 'bold')}: {_t(model.name)} {paint(said, 'bold', color)}{note}"


def _same_statement(findings: tuple[Finding, ...]) -> list[list[Finding]]:
    """Consecutive findings located at one statement (a layer's weight and bias) share a frame."""
    groups: list[list[Finding]] = []
    for finding in findings:
        if groups and finding.location and span(finding.location) == span(groups[-1][-1].location):
            groups[-1].append(finding)
        else:
            groups.append([finding])
    return groups


def span(loc: Location | None) -> tuple | None:
    return (loc.file, loc.line, loc.column, loc.end_line, loc.end_column) if loc else None


def _finding_lines(f: Finding, paint: Paint) -> list[str]:
    return _group_lines([f], paint)


def _group_lines(group: list[Finding], paint: Paint) -> list[str]:
    """Each finding's `path:line:col: CODE message` line, then one code frame, notes and helps."""
    loc = group[0].location
    where = f"{_t(loc.file)}:{loc.line}:{loc.column}: " if loc else ""
    lines = []
    for f in group:
        against = f"[against {_t(f.against)}] " if f.against else ""
        code = paint(f.code, "bold", _SEVERITY_COLOR[f.severity])
        lines.append(f"{paint(where, 'bold') if where else ''}{code} {against}{_t(f.message)}")
    worst = min(group, key=lambda f: list(Severity).index(f.severity))
    if loc and loc.source:
        lines += code_frame(loc, paint, _SEVERITY_COLOR[worst.severity])
    gutter = " " * (len(str(_last_line(loc))) + 1) if loc and loc.source else "  "
    for note in dict.fromkeys(f.location.note for f in group if f.location and f.location.note):
        lines.append(f"{gutter}= {paint('note', 'bold')}: {_t(note)}")
    for f in group:
        lines += _member_lines(f, gutter, paint)
    for text in dict.fromkeys(f.help for f in group if f.help):
        lines.append(f"{gutter}= {paint('help', 'bold', 'cyan')}: {_t(text)}")
    return lines


MAX_MEMBERS = 12  # keys listed under a grouped finding; JSON and SARIF keep every one


def _member_lines(f: Finding, gutter: str, paint: Paint) -> list[str]:
    """`= affects:` and one line per finding a grouped finding explains, with its statement
    when that is elsewhere."""
    from ckptlint.source.wording import brief

    lines = []
    for i, member in enumerate(f.members[:MAX_MEMBERS]):
        loc = member.location
        where = f" ({_t(loc.file)}:{loc.line})" if loc and f.location and \
            (loc.file, loc.line) != (f.location.file, f.location.line) else ""
        lead = f"= {paint('affects', 'bold')}: " if i == 0 else " " * len("= affects: ")
        lines.append(f"{gutter}{lead}{member.code} {_t(brief(member))}{where}")
    if len(f.members) > MAX_MEMBERS:
        rest = len(f.members) - MAX_MEMBERS
        lines.append(f"{gutter}{' ' * len('= affects: ')}… and {plural(rest, 'more')} "
                     "(`--format json` lists every key)")
    return lines


def _last_line(loc: Location) -> int:
    return loc.line + len(loc.source) - 1


def code_frame(loc: Location, paint: Paint, color: str) -> list[str]:
    """The located lines with a gutter and a caret underline, ruff style."""
    width = len(str(_last_line(loc)))
    bar = paint(" " * width + " |", "bold", "blue")
    frame = [bar]
    end_line = loc.end_line or loc.line
    for number, raw in enumerate(loc.source, start=loc.line):
        text = _t(raw.expandtabs(TAB_WIDTH))
        frame.append(paint(f"{number:>{width}} |", "bold", "blue") + f" {text}")
        start = _shown_column(raw, loc.column) if number == loc.line else \
            len(text) - len(text.lstrip()) + 1
        stop = _shown_column(raw, loc.end_column) if number == end_line and loc.end_column \
            else len(text) + 1
        if stop > start:
            frame.append(f"{bar} {' ' * (start - 1)}{paint('^' * (stop - start), 'bold', color)}")
    if end_line > _last_line(loc):
        frame.append(f"{bar} ...")
    frame.append(bar)
    return frame


def _shown_column(raw: str, column: int) -> int:
    """Where 1-based `column` (which counts a tab as one character, as every location does)
    lands once the line's tabs are expanded for display."""
    return len(raw[:column - 1].expandtabs(TAB_WIDTH)) + 1


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(report: Report, options: RenderOptions, paint: Paint) -> list[str]:
    """The closing lines: how many models were checked, drifted, and what to run next."""
    if report.compared:
        return _diff_summary(report, paint)
    total = len(report.models)
    drifted = [m for m in report.models if m.status is Status.DRIFT]
    broken = [m for m in report.models if m.status is Status.ERROR]
    if not (report.outcome & (Outcome.DRIFT | Outcome.UNCHECKED)):
        if report.against:
            text = f"All clear: {_t(report.against)} loads into {plural(total, 'model')}."
        else:
            verb = "matches its" if total == 1 else "match their"
            text = f"All clear: {plural(total, 'model')} {verb} committed " \
                   f"signature{'s' if total != 1 else ''}."
        return [paint(text, "bold", "green")]
    parts = [f"{len(drifted)} drifted"] if drifted else []
    parts += [f"{len(broken)} could not be checked"] if broken else []
    parts.append(f"{total - len(drifted) - len(broken)} clean")
    against = f" against {_t(report.against)}" if report.against else ""
    lines = [paint(f"Checked {plural(total, 'model')}{against}: {', '.join(parts)}.", "bold")]
    if report.against:
        return lines
    accept = [m for m in drifted if any(_drift(f) and not f.against for f in m.findings)]
    if accept:
        names = " ".join(_t(m.name) for m in accept)
        files = " ".join(_t(m.signature_file) for m in accept)
        lines.append(f"If the drift is intended, accept it with `{options.command} update {names}` "
                     f"and commit {files}; otherwise fix the code.")
    stale = sorted({(m.name, f.against) for m in drifted for f in m.findings
                    if f.against and _drift(f)})
    for name, checkpoint in ((_t(n), _t(c)) for n, c in stale):
        lines.append(f"{name} no longer loads {checkpoint} as it is: `{options.command} remap "
                     f"{name} --against {checkpoint}` shows how to load it, or drop it from the "
                     "model's `checkpoints`.")
    return lines


def _drift(f: Finding) -> bool:
    return bool(f.kind.outcome & Outcome.DRIFT)


def _diff_summary(report: Report, paint: Paint) -> list[str]:
    old, new = (_t(side) for side in report.compared or ("", ""))
    count = len(report.findings)
    if not count:
        return [paint(f"No differences: {old} and {new} have the same signature.",
                      "bold", "green")]
    return [paint(f"{old} -> {new}: {plural(count, 'difference')} "
                  f"({old} in the role of the checkpoint, {new} of the model).", "bold")]
