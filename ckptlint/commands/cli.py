"""The one boundary: parse argv, run a subcommand, turn `CkptlintError` into stderr and exit 2."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from ckptlint.commands.arguments import parser as command_line
from ckptlint.core.collector import young_collections_only
from ckptlint.core.errors import CkptlintError, reason
from ckptlint.run import replay

EXIT_ERROR = 2

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with young_collections_only():  # what a command makes, it keeps until it ends
            code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit (code 120)
        return code
    except BrokenPipeError:  # `ckptlint check | head`: the reader left before the report ended
        _drop_stdout()
        return _fail("the output was closed before the report was written (a closed pipe)",
                     _wants_traceback(argv))
    except CkptlintError as exc:
        return _fail(str(exc), _wants_traceback(argv))
    except KeyboardInterrupt:
        print("ckptlint: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: no failure may exit 1, which reads as drift found
        return _fail(_unexpected(exc), _wants_traceback(argv))


def _run(argv: list[str]) -> int:
    _new_remote_run()
    replayed = replay.replay(argv, sys.stdout)
    if replayed is not None:  # nothing changed since the last clean `ckptlint check`
        return replayed
    parser = command_line(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; main() returns
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    args.argv = argv  # what `replay.replayable` judges: the run exactly as it was asked for
    if getattr(args, "jobs", 1) < 0:
        parser.error("--jobs takes a number of processes, or 0 for one per CPU")
    command = importlib.import_module(f"ckptlint.commands.{args.command}")
    try:
        return command.run(args)
    except SystemExit as exc:  # commands return their code: this exit came from code they ran
        raise CkptlintError(f"code run while building the models (an import, a constructor) "
                            f"called sys.exit({exc.code!r})") from None


def _new_remote_run() -> None:
    """Each run asks remote servers afresh (a URL's metadata is kept for one run only); the
    module is loaded only once a URL was read, and nothing needs resetting before that."""
    remote = sys.modules.get("ckptlint.readers.remote")
    if remote is not None:
        remote.new_run()


def _drop_stdout() -> None:
    """Point the closed stdout at devnull, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured in tests): nothing to flush
        pass


def _wants_traceback(argv: list[str]) -> bool:
    """`--debug` anywhere before a `--`; read from argv, as the failure may precede parsing."""
    options = argv[:argv.index("--")] if "--" in argv else argv
    return any(a in ("-v", "--verbose", "--debug") for a in options)


def _fail(sentence: str, debug: bool) -> int:
    if debug:
        import traceback  # only a failure asked to show it pays for the import

        traceback.print_exc()
    try:
        print(f"ckptlint: error: {sentence}", file=sys.stderr)
    except OSError:  # stderr is gone too: the exit code is all that is left to say it
        pass
    return EXIT_ERROR


def _unexpected(exc: BaseException) -> str:
    """One sentence for an exception that is not a `CkptlintError`, naming its file if known."""
    from ckptlint.core.paths import display

    if isinstance(exc, OSError):
        where = f"{display(exc.filename)}: " if exc.filename else ""
        also = f" (and {display(exc.filename2)})" if exc.filename2 else ""
        return f"{where}{reason(exc)}{also}"
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file that must be UTF-8 text is not (byte 0x{exc.object[exc.start]:02x} at "
                f"offset {exc.start}); run with --debug to see which")
    if isinstance(exc, RecursionError):
        return "an input nests too deeply to be processed; run with --debug to see which"
    if isinstance(exc, MemoryError):
        return "ran out of memory; run with --debug to see where"
    return (f"unexpected {type(exc).__name__}: {exc}; this is a bug in ckptlint, please "
            "report it with the output of --debug")
