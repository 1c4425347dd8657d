"""`--format markdown`: a job summary (`$GITHUB_STEP_SUMMARY`) or PR comment.

A table with one row per model, then for each model with findings a folded signature diff and
its findings. Every section is capped so even a 7B model's report stays far under GitHub's
1 MiB summary limit, and each cap says what it left out. Text from files (keys, notes, names)
has its control characters escaped (`keys.printable`) before any markup is added.
"""

from __future__ import annotations

import html
import re

from ckptlint.core.keys import EVERY_KEY, natural_key, printable
from ckptlint.core.kinds import Status
from ckptlint.core.records import Finding, ModelReport, Report, TensorSpec
from ckptlint.core.sigfile import format_spec
from ckptlint.reporters.options import RenderOptions

MAX_BYTES = 64 * 1024       # the whole summary; GitHub refuses more than 1 MiB per step
MAX_TABLE_ROWS = 100
MAX_DIFF_LINES = 100        # per model
MAX_FINDINGS = 30           # per model (and for findings outside any model)
MAX_MESSAGE = 500           # characters of one finding's message
MAX_NOTES = 50
MAX_KEY_WIDTH = 64          # keys are padded to align specs up to this width
RESERVE = 512               # room kept for the line that says what was elided

STATUS = {Status.CLEAN: "✅ clean", Status.DRIFT: "❌ drift", Status.ERROR: "⛔ error"}
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_SPECIAL = re.compile(r"([\\`*_\[\]<>&~|])")


def size(lines: list[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def code(text: str) -> str:
    """A code span that survives backticks inside `text` (CommonMark: a longer fence)."""
    text = printable(" ".join(text.splitlines()))
    runs = re.findall(r"`+", text)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    # GFM splits cells on `|` even inside code spans; `\|` is the one escape it honours there.
    return text.replace("|", "\\|")


def inline(text: str) -> str:
    """Message text on one line: code spans kept, markup and HTML outside them escaped.

    Messages quote keys in backticks on purpose, but a build error may carry `<module>` or
    `</details>`, which GitHub would swallow or which would break the page's structure.
    """
    text = printable(" ".join(text.splitlines()))
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 1] + "…"
    out, pos = [], 0
    for match in _SPAN.finditer(text):
        out += [_SPECIAL.sub(r"\\\1", text[pos:match.start()]), match.group(0)]
        pos = match.end()
    return "".join(out + [_SPECIAL.sub(r"\\\1", text[pos:])])


# --- parameter counts -------------------------------------------------------------------------

def _unit(n: int) -> tuple[int, str]:
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= scale:
            return scale, suffix
    return 1, ""


def count(n: int, unit: tuple[int, str] | None = None) -> str:
    scale, suffix = unit or _unit(n)
    return f"{n:,}" if scale == 1 or n == 0 else f"{n / scale:.1f}{suffix}"


def change(old: int, new: int) -> str:
    """`+0.1M, +0.08%`, in the totals' unit unless that rounds a real change to zero."""
    delta, sign = abs(new - old), "+" if new > old else "-"
    text = count(delta, _unit(max(old, new)))
    if text.startswith("0.0"):
        text = count(delta)
    if not old:
        return f"{sign}{text}"
    pct = delta / old * 100
    return f"{sign}{text}, {sign}{pct:.2f}%" if pct >= 0.005 else f"{sign}{text}, {sign}<0.01%"


def parameters(old: int | None, new: int | None) -> str:
    """`124.4M → 124.5M (+0.1M, +0.08%)`; one number when unchanged, `—` for an unknown side."""
    if old is None and new is None:
        return "—"
    if old is None or new is None:
        return " → ".join("—" if n is None else count(n) for n in (old, new))
    if old == new:
        return count(new)
    unit = _unit(max(old, new))
    return f"{count(old, unit)} → {count(new, unit)} ({change(old, new)})"


# --- heading and table ------------------------------------------------------------------------

def heading(report: Report, options: RenderOptions) -> list[str]:
    drifted = [m.name for m in report.models if m.status is Status.DRIFT]
    broken = [m for m in report.models if m.status is Status.ERROR]
    total = len(report.models)
    if not drifted and not broken:
        return [f"## ckptlint: ✅ {plural(total, 'model')} checked, no drift", ""]
    parts = [f"{len(drifted)} of {plural(total, 'model')} drifted"] if drifted else []
    parts += [f"{len(broken)} could not be checked"] if broken else []
    lines = [f"## ckptlint: ❌ {', '.join(parts)}", ""]
    if drifted:
        command = code(f"{options.command} update {' '.join(drifted)}")
        lines += [f"If the drift is intended, accept it with {command} and commit the "
                  "signature files; otherwise fix the code.", ""]
    return lines


def table(report: Report) -> list[str]:
    if not report.models:
        return []
    lines = ["| Model | Status | Findings | Parameters |", "| :-- | :-- | --: | :-- |"]
    for m in report.models[:MAX_TABLE_ROWS]:
        lines.append(f"| {cell(code(m.name))} | {STATUS.get(m.status, m.status)} | "
                     f"{len(m.findings):,} | {parameters(m.old_parameters, m.new_parameters)} |")
    if len(report.models) > MAX_TABLE_ROWS:
        lines.append(f"| … {len(report.models) - MAX_TABLE_ROWS:,} more | | | |")
    return lines + [""]


# --- per-model sections -----------------------------------------------------------------------

def _sides(f: Finding) -> list[tuple[str, str, TensorSpec | None]]:
    """The finding as signature-diff lines: `-` what the checkpoint has, `+` what the code has."""
    if f.key == EVERY_KEY:  # a change of every key (a whole-model dtype): its message says it
        return []
    sides = f.kind.spec.sides
    if sides == "->":  # moved: the old key's line, then the new key's
        return [("-", f.key, f.old), ("+", f.new_key or f.key, f.new)]
    return [(sign, f.key, f.old if sign == "-" else f.new) for sign in sides]


def diff(findings: tuple[Finding, ...]) -> list[str]:
    """A ```diff fence of the folded signature change, at most MAX_DIFF_LINES lines."""
    # a grouped finding (one cause) lists its keys through the findings it explains
    flat = [m for f in findings for m in (f.members or (f,))]
    ordered = sorted(flat, key=lambda f: natural_key(f.keys[0] if f.keys else f.key))
    sides = [s for f in ordered for s in _sides(f)]
    if not sides:
        return []
    width = min(max(len(printable(key)) for _, key, _ in sides), MAX_KEY_WIDTH)
    body = [f"{sign} {printable(key).ljust(width)}  {format_spec(spec)}".rstrip() if spec else
            f"{sign} {printable(key)}" for sign, key, spec in sides[:MAX_DIFF_LINES]]
    if len(sides) > MAX_DIFF_LINES:
        body.append(f"@@ {plural(len(sides) - MAX_DIFF_LINES, 'more line')} not shown @@")
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", "\n".join(body))), default=0) + 1)
    return [f"{fence}diff", *body, fence, ""]


def finding_line(f: Finding) -> str:
    loc = f.location
    where = f" {code(f'{loc.file}:{loc.line}')}" if loc else ""
    return f"- **{f.code}** {f.kind.slug}{where}: {inline(f.message)}"


def finding_list(findings: tuple[Finding, ...], options: RenderOptions,
                 name: str = "") -> list[str]:
    lines = [finding_line(f) for f in findings[:MAX_FINDINGS]]
    if len(findings) > MAX_FINDINGS:
        command = code(f"{options.command} check {name}".rstrip())
        lines.append(f"- … and {plural(len(findings) - MAX_FINDINGS, 'more finding')}; "
                     f"run {command} to see them all")
    return lines + [""]


def details(m: ModelReport, options: RenderOptions) -> list[str]:
    name = html.escape(printable(m.name))
    summary = (f"<code>{name}</code>: {STATUS.get(m.status, m.status)}, "
               f"{plural(len(m.findings), 'finding')}")
    return [f"<details><summary>{summary}</summary>", "", *diff(m.findings),
            *finding_list(m.findings, options, m.name), "</details>", ""]


def others(findings: tuple[Finding, ...], options: RenderOptions) -> list[str]:
    return ["### Other findings", "", *finding_list(findings, options)] if findings else []


def notes(report: Report) -> list[str]:
    every = [n for m in report.models for n in m.notes] + list(report.notes)
    if not every:
        return []
    lines = ["### Notes", "", *(f"- {inline(n)}" for n in every[:MAX_NOTES])]
    if len(every) > MAX_NOTES:
        lines.append(f"- … and {plural(len(every) - MAX_NOTES, 'more note')}")
    return lines + [""]


def fit(blocks: list[list[str]], budget: int, options: RenderOptions) -> list[str]:
    """Whole blocks, in order, while they fit; then one line saying how many were left out."""
    out: list[str] = []
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        if size(out) + size(block) > budget - (0 if last else RESERVE):
            left = len(blocks) - i
            return out + [f"_{plural(left, 'more section')} not shown to keep this summary "
                          f"under {MAX_BYTES // 1024} KiB; run {code(options.command + ' check')}"
                          " locally to see everything._", ""]
        out += block
    return out


def render(report: Report, options: RenderOptions) -> str:
    head = heading(report, options) + table(report)
    tail = notes(report)
    blocks = [details(m, options) for m in report.models if m.findings]
    blocks += [b for b in [others(report.extra, options)] if b]
    body = fit(blocks, MAX_BYTES - size(head) - size(tail), options)
    lines = head + body + tail
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
