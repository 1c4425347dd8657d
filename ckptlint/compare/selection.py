"""Which findings a `check` run reports and which fail it: `--select`, `--ignore`, `--fail-on`.

Pure: a finished report in, a narrower report or an exit code out. A finding that says a model
could not be checked (build error, missing or unreadable signature or checkpoint) is never
narrowed away: it is what keeps a run that checked nothing from reading as clean.
"""

from __future__ import annotations

from typing import Sequence

from ckptlint.core.errors import CkptlintError
from ckptlint.core.kinds import Kind, Outcome, Severity
from ckptlint.core.record import replace
from ckptlint.core.records import Finding, Report

FAIL_ON = tuple(s.value for s in Severity)  # error, warning, note: most severe first
DEFAULT_FAIL_ON = Severity.WARNING.value  # a warning-only run fails, as it always has


def parse_codes(text: str, ignoring: bool = False) -> tuple[str, ...]:
    """`CKL103,dtype-mismatch,CKL2` -> the codes it names (a prefix names every code it starts).

    `ignoring`: naming one code of a model that was not checked (CKL201) is refused; a prefix
    that covers such codes ignores the others.
    """
    codes: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kinds = _kinds(item)
        if ignoring and len(kinds) == 1 and _unchecked(kinds[0]):
            raise CkptlintError(f"{kinds[0].code} ({kinds[0].slug}) cannot be ignored: a model "
                                "that was not checked is always reported")
        codes += [k.code for k in kinds if k.code not in codes]
    if not codes:
        raise CkptlintError(f"`{text}` names no finding code (e.g. CKL103 or shape-mismatch)")
    return tuple(codes)


def _kinds(item: str) -> list[Kind]:
    by_slug = [k for k in Kind if k.slug == item.lower()]
    found = by_slug or sorted((k for k in Kind if k.code.startswith(item.upper())),
                              key=lambda k: k.code)
    if not found:
        codes = sorted(k.code for k in Kind)
        raise CkptlintError(f"`{item}` is not a ckptlint finding code, a prefix of one or a "
                            f"slug ({codes[0]} to {codes[-1]}); `ckptlint rules` lists them")
    return found


def narrowed(report: Report, select: Sequence[str], ignore: Sequence[str]) -> Report:
    """The report with only the selected codes, less the ignored ones (codes as parsed)."""
    if not (select or ignore):
        return report

    def kept(finding: Finding) -> bool:
        return _unchecked(finding.kind) or (
            (not select or finding.code in select) and finding.code not in ignore)

    models = tuple(replace(m, findings=tuple(f for f in m.findings if kept(f)))
                   for m in report.models)
    return replace(report, models=models, extra=tuple(f for f in report.extra if kept(f)))


def outcome(report: Report, fail_on: str = DEFAULT_FAIL_ON) -> Outcome:
    """The exit bits: UNCHECKED for a model not checked, DRIFT for a finding of `fail_on`'s
    severity or worse (at `note`, also an orphaned signature or an unused suppression)."""
    worst = FAIL_ON.index(fail_on)
    bits = Outcome.CLEAN
    for finding in report.findings:
        if _unchecked(finding.kind):
            bits |= Outcome.UNCHECKED
        elif FAIL_ON.index(finding.severity.value) <= worst:
            bits |= Outcome.DRIFT
    return bits


def _unchecked(kind: Kind) -> bool:
    return bool(kind.outcome & Outcome.UNCHECKED)
