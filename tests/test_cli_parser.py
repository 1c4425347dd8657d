"""The command line built for one run (only the named subcommand's arguments) parses and
helps exactly as the whole one does."""

from __future__ import annotations

import contextlib
import io

import pytest

from ckptlint.commands.arguments import _COMMANDS, parser as _parser

_RUNS = [
    ["check"], ["check", "a", "b", "--format", "json", "--select", "CKL1", "-j", "2", "-q"],
    ["-v", "check", "--against", "x.pt", "--fail-on", "error", "--no-cache", "--exit-zero"],
    ["update", "m", "--from", "x.pt", "--state-dict-key", "model"],
    ["inspect", "x.safetensors", "--format", "json", "--no-fits", "--build"],
    ["diff", "old.pt", "new.toml", "--format", "sarif:out.sarif"],
    ["init", "--select", "GPT", "Block", "-y", "--dry-run"],
    ["remap", "m", "--against", "old.pt", "--format", "json", "--diff"],
    ["convert", "old.pt", "new.safetensors", "--model", "m"],
    ["rules"], ["rules", "CKL101"], ["rule", "shape-mismatch"], ["--debug", "rule", "CKL103"],
]


def _outcome(parser, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = vars(parser.parse_args(argv))
        except SystemExit as exc:
            result = exc.code
    return result, out.getvalue(), err.getvalue()


def test_every_command_is_in_a_run_s_parser():
    assert {name for name, *_ in _COMMANDS} == set(
        _parser(["check"])._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("argv", _RUNS, ids=" ".join)
def test_a_run_s_parser_parses_as_the_whole_one(argv):
    assert _outcome(_parser(argv), argv) == _outcome(_parser(), argv)


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["chek"], ["check", "--jbos"],
                                  ["inspect"], ["rule"], ["-v"]] +
                         [[name, "--help"] for name, *_ in _COMMANDS], ids=" ".join)
def test_help_and_usage_errors_read_as_from_the_whole_parser(argv):
    whole = _outcome(_parser(), argv)
    assert _outcome(_parser(argv), argv) == whole
    if "--help" in argv:
        assert whole[1].startswith("usage: ckptlint")


@pytest.mark.parametrize("columns", [None, "57", "", "x", "-3", "0", "200"])
def test_help_is_as_wide_as_shutil_would_make_it(columns, monkeypatch):
    import shutil

    from ckptlint.commands.arguments import _columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns
    # and argparse's own default formatter lays the help out the same
    import argparse

    ours = _parser(["check"])._subparsers._group_actions[0].choices["check"]
    theirs = argparse.ArgumentParser(prog=ours.prog, description=ours.description,
                                     epilog=ours.epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for action in ours._actions[1:]:
        theirs._add_action(action)
    assert ours.format_help() == theirs.format_help()
