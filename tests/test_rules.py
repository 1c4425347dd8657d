"""`ckptlint rule CODE` (one code's docs, like `ruff rule E501`) next to `ckptlint rules`."""

from __future__ import annotations

import pytest

from ckptlint.commands.rules import rule_text, rules_text
from ckptlint.core.kinds import Kind

SHAPE = '''\
CKL103 shape-mismatch

- severity: error
- what breaks: the shapes differ: load_state_dict fails with "size mismatch", even with strict=False
- fix: Restore the old size, or accept the change with `ckptlint update NAME` and retrain or convert the old checkpoints.
- suppress: `ignore = { "KEY-PATTERN" = ["CKL103"] }` in the model's entry, or `# ckptlint: ignore[CKL103]` on the statement that creates the layer
'''


@pytest.mark.parametrize("argv", [["rule", "CKL103"], ["rule", "ckl103"],
                                  ["rule", "shape-mismatch"], ["rules", "CKL103"]])
def test_one_code(project, argv):
    run = project.run(*argv)
    assert (run.code, run.out, run.err) == (0, SHAPE, "")


def test_every_code_has_its_page_and_it_is_its_section_of_rules(project):
    full = rules_text()
    for kind in Kind:
        page = project.run("rule", kind.code).out
        assert page == rule_text(kind) and page.startswith(f"{kind.code} {kind.slug}\n")
        facts = page.split("\n\n", 1)[1].split("\n- suppress:")[0].rstrip("\n")
        assert f"## {kind.code} {kind.slug}\n\n{facts}\n" in full
    # findings about a build or a file are not silenced by key patterns: no suppress line
    assert "suppress" not in project.run("rule", "CKL201").out


def test_several_codes(project):
    run = project.run("rule", "CKL101", "CKL205")
    assert run.out == rule_text(Kind.MISSING_KEY) + "\n" + rule_text(Kind.UNUSED_SUPPRESSION)


@pytest.mark.parametrize("argv", [["rule", "CKL999"], ["rules", "E501"]])
def test_an_unknown_code_is_one_sentence_and_exit_2(project, argv):
    run = project.run(*argv)
    assert (run.code, run.out) == (2, "")
    codes = sorted(k.code for k in Kind)
    assert run.err == (f"ckptlint: error: `{argv[1]}` is not a ckptlint finding code "
                       f"({codes[0]} to {codes[-1]}); `ckptlint rules` lists them all\n")


def test_rule_needs_a_code(project):
    run = project.run("rule")
    assert run.code == 2 and "the following arguments are required: CODE" in run.err


def test_rules_still_lists_every_code(project):
    run = project.run("rules")
    assert run.code == 0 and run.out == rules_text()
    assert all(f"## {k.code} {k.slug}" in run.out for k in Kind)
