"""The command line: every subcommand, its options and their help (`cli` runs it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from ckptlint.core.constants import VERSION
from ckptlint.core.errors import CkptlintError


DESCRIPTION = """\
Catch PyTorch architecture drift before it breaks a checkpoint.

ckptlint builds the models registered in pyproject.toml ([tool.ckptlint]) on the meta
device, so no weights are allocated, and compares their state-dict signatures (keys,
shapes, dtypes) with the committed files in signatures/.
"""

EXIT_CODES = """\
exit codes: 0 clean, 1 drift found, 2 could not check (usage, config, import or build
error, unreadable file), 3 both."""

CHECK_EXIT_CODES = EXIT_CODES + """
Drift means a finding at or above --fail-on (default: warning, so a dtype-only change
exits 1 too; --fail-on error lets warnings pass); --exit-zero turns it off altogether."""

EPILOG = EXIT_CODES + """

Start with `ckptlint init` (or register models in pyproject.toml and run `ckptlint update`),
commit the signatures, then run `ckptlint check` in pre-commit and CI. `ckptlint rules`
explains every finding code, `ckptlint rule CKL103` one of them."""


def _sink(value: str) -> Any:
    from ckptlint.commands.output import parse_sink

    try:
        return parse_sink(value)
    except CkptlintError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _codes(ignoring: bool) -> Any:
    def parse(value: str) -> tuple[str, ...]:
        from ckptlint.compare.selection import parse_codes

        try:
            return parse_codes(value, ignoring)
        except CkptlintError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _selection(parser: argparse.ArgumentParser) -> None:
    from ckptlint.compare.selection import DEFAULT_FAIL_ON, FAIL_ON

    parser.add_argument("--select", type=_codes(False), action="append", default=[],
                        metavar="CODES",
                        help="report only these finding codes: comma-separated codes (CKL103), "
                             "prefixes (CKL1: every code it starts) or slugs (shape-mismatch); "
                             "repeatable. A model that could not be checked (CKL201, CKL202, "
                             "CKL204, CKL206) is always reported")
    parser.add_argument("--ignore", type=_codes(True), action="append", default=[],
                        metavar="CODES",
                        help="leave these finding codes out of the report and the exit code "
                             "(as --select names them); `ignore` in a model's entry and "
                             "`# ckptlint: ignore[CODE]` comments do this per key or line")
    parser.add_argument("--fail-on", choices=FAIL_ON, default=DEFAULT_FAIL_ON,
                        help="the least severe finding that makes the run exit 1 (default: "
                             f"{DEFAULT_FAIL_ON}, so a dtype-only drift fails too; error: only "
                             "what breaks loading; note: also orphaned signatures and unused "
                             "suppressions). A model that could not be checked exits 2 either way")
    parser.add_argument("--statistics", action="store_true",
                        help="in the text output, count the findings of each code instead of "
                             "listing them")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="in the text output, print the findings only: no notes, verdicts "
                             "or summary (nothing when the run is clean)")


def _jobs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="build models in N worker processes (0: one per CPU; default 1, "
                             "which builds in this process)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", "--debug", dest="debug", action="store_true",
                        help="show the full traceback when something fails")


def _output(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--format", action="append", type=_sink, default=[],
                        metavar="FORMAT[:PATH]",
                        help="output format: text (default), json, github, sarif or markdown; "
                             "repeat to write several, e.g. --format text --format "
                             "sarif:out.sarif")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the text output (default: auto, honouring NO_COLOR and "
                             "FORCE_COLOR)")
    parser.add_argument("--exit-zero", action="store_true",
                        help=f"exit 0 even when {what} (errors still exit 2)")


def _state_dict_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dict-key", metavar="KEY",
                        help="the entry holding the state dict in a nested checkpoint, e.g. "
                             "state_dict or model.ema (default: found automatically)")


def _against(parser: argparse.ArgumentParser, instead_of: str) -> None:
    parser.add_argument("--against", metavar="FILE",
                        help="a checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, a sharded or DCP "
                             f"folder) or signature file, instead of {instead_of}")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter given the width `shutil.get_terminal_size` would find, without
    importing `shutil`: argparse makes a formatter for each argument it adds, and shutil
    brings bz2, lzma and zlib, 5 ms of a cold `ckptlint inspect`."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _columns() -> int:
    """The terminal's columns as `shutil.get_terminal_size` finds them: `COLUMNS`, else the
    size of the terminal on stdout, else 80 (tests/test_cli_parser.py compares the two)."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _command(sub: Any, name: str, help: str, description: str,
             epilog: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description, epilog=epilog,
                            formatter_class=_Formatter)
    parser.set_defaults(command=name)  # ckptlint/commands/<name>.py, imported only when run
    return parser


def parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; given `argv`, only the subcommand it names gets its arguments.

    Adding every command's arguments takes 10 ms, a tenth of `ckptlint inspect`, and a run
    uses one command's. `ckptlint --help` lists each command by its name and help line,
    which every subparser keeps. tests/test_cli_parser.py parses each command's arguments
    both ways and compares.
    """
    top = argparse.ArgumentParser(prog="ckptlint", description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=_Formatter)
    top.add_argument("--version", action="version", version=f"ckptlint {VERSION}")
    _common(top)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else _named_command(argv)
    for name, summary, description, epilog, arguments in _COMMANDS:
        p = _command(sub, name, summary, description, epilog)
        if argv is None or name == wanted:
            arguments(p)
    return top


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand argv names: its first word that is not an option (the top-level
    options, --version and --debug, take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all)")
    _against(p, "the committed signature")
    _state_dict_key(p)
    _output(p, "drift is found")
    _selection(p)
    p.add_argument("--no-cache", action="store_true",
                   help="rebuild every model instead of trusting .ckptlint_cache/ (also: "
                        "CKPTLINT_NO_CACHE=1)")
    _jobs(p)
    _common(p)


def _update_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="models to update (default: all)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="record the signature of this checkpoint file instead of the code's "
                        "(one NAME)")
    _state_dict_key(p)
    _jobs(p)
    _common(p)


def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE",
                   help="a checkpoint file or folder (torch.save, safetensors, sharded, DCP) or a "
                        "signature file")
    p.add_argument("--format", choices=("text", "json", "toml"), default="text",
                   help="text (default), json, or toml (a signature file)")
    p.add_argument("--build", action="store_true",
                   help="build the registered models (torch's dry run on the code as it is "
                        "now) instead of comparing with their committed signatures")
    p.add_argument("--no-fits", dest="fits", action="store_false",
                   help="do not say which registered models the file fits")
    _state_dict_key(p)
    _jobs(p)
    _common(p)


def _diff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", metavar="OLD", help="checkpoint or signature file loaded (the old one)")
    p.add_argument("new", metavar="NEW", help="checkpoint or signature file loaded into (the new)")
    _output(p, "they differ")
    _state_dict_key(p)
    _common(p)


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", nargs="+", metavar="NAME",
                   help="register exactly these: proposed names, targets (pkg.mod:Class) or "
                        "class names, including ones not proposed")
    p.add_argument("-y", "--yes", action="store_true",
                   help="ask nothing: write the proposed models, commenting out entries that "
                        "need arguments")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be appended to pyproject.toml; write nothing")
    _jobs(p)
    _common(p)


def _remap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the model to remap for")
    _against(p, "the committed signature")
    _state_dict_key(p)
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: a pre-hook to paste into the model class (default); json: the key "
                        "mapping and the hook")
    p.add_argument("--apply", action="store_true",
                   help="write the hook into the model's class, re-build it and keep the edit "
                        "only if the old checkpoint then loads strictly (else restore the file)")
    p.add_argument("--diff", action="store_true",
                   help="print the edit --apply would make, and write nothing")
    _jobs(p)
    _common(p)


def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", metavar="OLD", help="the checkpoint to migrate (any format inspect "
                                              "reads)")
    p.add_argument("out", metavar="OUT", help="the safetensors file to write")
    p.add_argument("--model", metavar="NAME", help="the registered model whose keys OUT gets "
                                                   "(needed when several are registered)")
    _state_dict_key(p)
    _jobs(p)
    _common(p)


def _rules_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("codes", nargs="*", metavar="CODE", help="only these codes (as `rule`)")
    _common(p)


def _rule_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("codes", nargs="+", metavar="CODE", help="the finding code(s)")
    _common(p)


# name, help line, description, epilog, and what adds its arguments
_COMMANDS: tuple = (
    ("check", "compare current code with the committed signatures",
     "Build each model on meta and compare it with its committed signature and the "
     "checkpoints its entry lists. Never writes signature files.",
     CHECK_EXIT_CODES,
     _check_arguments),
    ("update", "write signatures from the current code",
     "Build each model and write signatures/<name>.toml. This is how an intended "
     "change is accepted: commit the diff. Also lists orphaned signature files.",
     None,
     _update_arguments),
    ("inspect", "print the signature of a checkpoint or signature file",
     "Read a checkpoint's structure (no tensor data, no pickle code run) and print "
     "its signature. Inside a configured project, also say which registered models "
     "it fits.",
     None,
     _inspect_arguments),
    ("diff", "compare two checkpoint or signature files",
     "Compare OLD (in the role of the checkpoint) with NEW (in the role of the "
     "model), with the same findings and formats as check.",
     EXIT_CODES,
     _diff_arguments),
    ("init", "register the project's models and record their signatures",
     "Find the project's nn.Module classes and build_*/create_* factories without "
     "importing them, propose the main models, append [[tool.ckptlint.models]] "
     "entries for the chosen ones to pyproject.toml (nothing else in it changes), "
     "then run the first `update`. On a terminal, lets you pick from a numbered "
     "list and asks for required __init__ arguments; otherwise writes the proposed "
     "ones, entries that need arguments commented out with a TODO (never more than "
     "a screenful of those unless --select names them).",
     None,
     _init_arguments),
    ("remap", "print a key remap that loads an old checkpoint, proven",
     "Turn the renames and wrapper prefixes ckptlint finds into a load_state_dict "
     "pre-hook (text) or a key mapping (json), and prove it with torch's own "
     "load_state_dict on meta tensors. Exits 1 when the remapped checkpoint still "
     "does not load strictly.",
     None,
     _remap_arguments),
    ("convert", "write an old checkpoint with the keys the code expects",
     "Read OLD (no pickle code run), rename its keys by the proven remap, and write "
     "OUT.safetensors one tensor at a time; OUT is kept only when `check --against` "
     "says it loads strictly. Exits 1 when it cannot be proven.",
     None,
     _convert_arguments),
    ("rules", "list every finding code, what breaks and how to fix it",
     "Every finding code ckptlint reports, its severity, what breaks at load time "
     "and how to fix it (also in docs/rules.md).",
     None,
     _rules_arguments),
    ("rule", "explain one finding code, e.g. `ckptlint rule CKL103`",
     "One finding code's severity, what breaks at load time, how to fix it and how "
     "to suppress it. CODE is a code (CKL103) or its slug (shape-mismatch).",
     None,
     _rule_arguments),
)
