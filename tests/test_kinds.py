"""One `KindSpec` per finding kind, complete, and read by everything that speaks of kinds."""

from __future__ import annotations

import re

import pytest

from ckptlint.commands.rules import rule_text, rules_text
from ckptlint.compare.messages import describe
from ckptlint.compare.verdict import verdict
from ckptlint.core.kinds import BEST_FIRST, WORST_FIRST, Kind, Outcome, Severity, Verdict
from ckptlint.core.records import Finding, TensorSpec
from ckptlint.core.sigfile import format_spec
from ckptlint.reporters.options import RenderOptions
from ckptlint.reporters.sarif import help_text
from ckptlint.source.advice import advice

OLD, NEW = TensorSpec("float32", (4, 8), "parameter"), TensorSpec("float16", (4, 16), "buffer")
O, N = format_spec(OLD), format_spec(NEW)  # "f32[4, 8] parameter", as signature files say


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.code)
def test_every_kind_says_what_breaks_and_how_to_fix_it(kind: Kind) -> None:
    spec = kind.spec
    assert re.fullmatch(r"CKL[12]\d\d", spec.code) and re.fullmatch(r"[a-z]+(-[a-z]+)*", spec.slug)
    assert isinstance(spec.severity, Severity) and isinstance(spec.outcome, Outcome)
    for text in (spec.doc, spec.fix, spec.help):
        assert len(text) > 20 and not text.startswith(" ")
    assert spec.sides in ("", "-", "+", "-+", "->")
    assert spec.shows in ("spec", "dtype", "role")
    # a drift kind that is not only a note decides the verdict or says why it does not
    if kind.outcome is Outcome.DRIFT and kind.severity is Severity.ERROR:
        assert spec.verdict is not None


def test_codes_and_slugs_are_unique() -> None:
    assert len({k.code for k in Kind}) == len({k.slug for k in Kind}) == len(Kind)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.code)
def test_sarif_and_rules_show_a_fix_for_every_code(kind: Kind) -> None:
    shown = help_text(kind, RenderOptions(command="ckptlint"))
    assert kind.spec.help.format(cmd="ckptlint") in shown and "{cmd}" not in shown
    assert f"- fix: {kind.spec.fix}" in rule_text(kind)
    assert f"## {kind.code} {kind.slug}" in rules_text()


# (kind, old, new, what the message must say)
MESSAGES = [
    (Kind.MISSING_KEY, None, NEW, f"`k` ({N}) is created by the code but absent"),
    (Kind.UNEXPECTED_KEY, OLD, None, f"`k` ({O}) is in the checkpoint but the code"),
    (Kind.SHAPE_MISMATCH, OLD, NEW, f"`k` is {O} in the checkpoint but {N} in the code"),
    (Kind.DTYPE_MISMATCH, OLD, NEW, "`k` is float32 in the checkpoint but float16 in the code"),
    (Kind.ROLE_CHANGED, OLD, NEW, "`k` was a parameter in the checkpoint and is a buffer"),
    (Kind.BUFFER_NOT_PERSISTENT, OLD, None, f"`k` ({O}) is in the checkpoint but the code "
                                            "registers it with persistent=False"),
    (Kind.TIE_CHANGED, OLD, NEW, Kind.TIE_CHANGED.doc),
]


@pytest.mark.parametrize("kind, old, new, says", MESSAGES, ids=[m[0].code for m in MESSAGES])
def test_a_findings_message_comes_from_its_spec(kind: Kind, old: TensorSpec | None,
                                                new: TensorSpec | None, says: str) -> None:
    assert describe(kind, "k", old, new).startswith(says)


def test_a_folded_key_pattern_is_kept_as_written() -> None:
    assert describe(Kind.MISSING_KEY, "layers.{0..3}.w", None, NEW).startswith(
        f"`layers.{{0..3}}.w` ({N})")


# (kinds found, verdict): the worst implied verdict wins; silence is its own verdict
VERDICTS = [
    ((), Verdict.LOADS),
    ((Kind.DTYPE_MISMATCH, Kind.ROLE_CHANGED, Kind.TIE_CHANGED), Verdict.LOADS),
    ((Kind.MISSING_KEY,), Verdict.LOADS_NON_STRICT),
    ((Kind.TIED_KEY_ABSENT, Kind.DTYPE_MISMATCH), Verdict.LOADS_NON_STRICT),
    ((Kind.MISSING_KEY, Kind.SHAPE_MISMATCH), Verdict.DOES_NOT_LOAD),
    ((Kind.PREFIX_MISMATCH,), Verdict.DOES_NOT_LOAD),
    ((Kind.SHAPE_MISMATCH, Kind.NEEDS_REAL_LOAD), Verdict.NEEDS_REAL_LOAD),
]


@pytest.mark.parametrize("kinds, expected", VERDICTS)
def test_verdict_is_the_worst_a_kind_implies(kinds: tuple[Kind, ...], expected: Verdict) -> None:
    found = [Finding(k, "m", "x", key=f"k{i}", keys=(f"k{i}",)) for i, k in enumerate(kinds)]
    assert verdict(found)[0] is expected


def test_a_silent_drop_alone_is_its_own_verdict() -> None:
    silent = Finding(Kind.UNEXPECTED_KEY, "m", "x", key="k", keys=("k",), silent=True)
    assert verdict([silent])[0] is Verdict.DROPS_SILENTLY


def test_every_verdict_is_ranked_and_said_two_ways() -> None:
    assert set(BEST_FIRST) == set(Verdict) and set(WORST_FIRST) < set(Verdict)
    for v in Verdict:
        assert v.text and v.of_it and f"{v}" == v.value == str(v)


@pytest.mark.parametrize("kind", [k for k in Kind if k.spec.advice], ids=lambda k: k.code)
def test_advice_names_the_model_and_the_command(kind: Kind) -> None:
    finding = Finding(kind, "net", "x", key="k", keys=("k",), new_key="k2")
    said = advice(finding, "net")
    assert "`ckptlint update net`" in said and "{" not in said
