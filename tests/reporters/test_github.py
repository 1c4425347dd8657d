"""`--format github`: workflow commands, the toolkit's escaping, and GitHub's annotation budget."""

from __future__ import annotations

import re

import pytest

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Location, ModelReport, Report
from ckptlint.reporters import RenderOptions, renderer
from ckptlint.reporters.github import escape_data, escape_property, render

OPTIONS = RenderOptions()


def test_golden(report, golden):
    golden("sample.github.txt", render(report, OPTIONS))


def test_registered():
    assert renderer("github") is render


def test_only_workflow_commands(report):
    out = render(report, OPTIONS)
    assert out.endswith("\n")
    assert all(line.startswith("::") for line in out.splitlines())


def test_clean_report_prints_nothing():
    assert render(Report(models=(ModelReport("m"),)), OPTIONS) == ""


@pytest.mark.parametrize(("raw", "data", "prop"), [
    ("100%", "100%25", "100%25"),
    ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
    ("a:b,c", "a:b,c", "a%3Ab%2Cc"),
    ("%0A", "%250A", "%250A"),  # `%` goes first, so an escape in the input survives as text
    ("x]y;z", "x]y;z", "x]y;z"),  # the old `##[` syntax's escapes are gone from the toolkit
])
def test_escaping_matches_actions_toolkit(raw, data, prop):
    assert escape_data(raw) == data
    assert escape_property(raw) == prop


def test_escaping_in_output(report):
    weird = [line for line in render(report, OPTIONS).splitlines() if "(weird)" in line]
    assert weird == [
        "::error file=src/odd%2Cdir/v2%3Amodel.py,line=3,endLine=3,col=5,endColumn=17,"
        "title=CKL103 shape-mismatch (weird)::100%25 of `head.weight` changed:%0A"
        "was f32[3, 4], now f32[3, 5]%0D%0Asee <module>"
    ]


def _one(location: Location | None) -> str:
    f = Finding(Kind.SHAPE_MISMATCH, "m", "msg", key="w", location=location)
    return render(Report(models=(ModelReport("m", (f,)),)), OPTIONS).rstrip("\n")


@pytest.mark.parametrize(("location", "expected"), [
    (Location("a.py", 4, 9, 4, 20), "file=a.py,line=4,endLine=4,col=9,endColumn=20,"),
    (Location("a.py", 4, 9), "file=a.py,line=4,col=9,"),
    (Location("a.py", 4, 9, None, 20), "file=a.py,line=4,col=9,endColumn=20,"),
    (Location("a.py", 4, 9, 6, 2), "file=a.py,line=4,endLine=6,"),
    (None, ""),
])
def test_columns_only_on_one_line(location, expected):
    assert _one(location) == f"::error {expected}title=CKL103 shape-mismatch (m)::msg"


def _findings(kind: Kind, n: int) -> tuple[Finding, ...]:
    return tuple(Finding(kind, "m", f"{kind.slug} {i}", key=f"layers.{i}.w",
                         location=Location("m.py", i + 1)) for i in range(n))


def _levels(out: str) -> list[str]:
    return [re.match(r"::(\w+)", line).group(1) for line in out.splitlines()]


def test_budget_ten_per_level_most_severe_first():
    findings = (_findings(Kind.SIGNATURE_ORPHANED, 3) + _findings(Kind.DTYPE_MISMATCH, 12)
                + _findings(Kind.SHAPE_MISMATCH, 25))
    out = render(Report(models=(ModelReport("m", findings),)), OPTIONS)
    assert _levels(out) == ["error"] * 10 + ["warning"] * 10 + ["notice"] * 4
    assert out.splitlines()[-1] == (
        "::notice title=More ckptlint findings::17 more findings are not annotated "
        "(15 errors, 2 warnings; GitHub shows 10 per level); run `ckptlint check` locally "
        "or read the job summary")
    # Within a level the report's order is kept: the first ten errors, not any ten.
    assert "shape-mismatch 0" in out and "shape-mismatch 9" in out
    assert "shape-mismatch 10" not in out


@pytest.mark.parametrize(("notes", "errors", "shown", "overflow"), [
    (10, 0, 10, None),
    (11, 0, 9, "2 more findings are not annotated (2 notes;"),
    (10, 11, 9, "2 more findings are not annotated (1 error, 1 note;"),
    (3, 11, 3, "1 more finding is not annotated (1 error;"),
])
def test_overflow_notice_fits_the_notice_budget(notes, errors, shown, overflow):
    findings = _findings(Kind.SIGNATURE_ORPHANED, notes) + _findings(Kind.BUILD_ERROR, errors)
    lines = render(Report(models=(ModelReport("m", findings),)), OPTIONS).splitlines()
    notices = [line for line in lines if line.startswith("::notice")]
    assert len(notices) <= 10
    regular = [line for line in notices if "More ckptlint findings::" not in line]
    assert len(regular) == shown
    if overflow is None:
        assert len(notices) == shown
    else:
        assert overflow in notices[-1]


def test_overflow_names_the_configured_command():
    findings = _findings(Kind.BUILD_ERROR, 11)
    out = render(Report(models=(ModelReport("m", findings),)), RenderOptions(command="ck"))
    assert "run `ck check` locally" in out.splitlines()[-1]
