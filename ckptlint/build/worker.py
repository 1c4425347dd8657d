"""Build models in other processes: the project's own interpreter, or several workers at once.

The parent sends a JSON request on stdin and reads JSON `BuildResult`s from stdout. The child
needs only the standard library, torch and the few ckptlint modules of the build step, which it
imports from a private directory holding nothing but this package: ckptlint need not be
installed where the models live (a pre-commit environment has ckptlint but not torch; the
project's virtualenv has torch but not ckptlint).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ckptlint.build.wire import decode_request, decode_result, encode_request, encode_result
from ckptlint.core.errors import CkptlintError
from ckptlint.core.paths import PACKAGE_DIR
from ckptlint.core.records import BuildResult, Config, ModelSpec, Signature


class WorkerError(CkptlintError):
    def __init__(self, python: str, detail: str):
        super().__init__(f"building models with {python} failed: {detail}")


# -- the child -----------------------------------------------------------------------------------

def serve() -> None:
    """Child entry point: read a request on stdin, build, write results on a private channel.

    File descriptor 1 is re-pointed at stderr before anything else runs, so nothing a model
    does (print, `os.write(1, …)`, a subprocess's output) can reach the reply; the reply goes
    to a duplicate of the original stdout that only this function knows.
    """
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from ckptlint.build.isolate import build_isolated

    doc = json.loads(sys.stdin.read())
    specs, config, refs = decode_request(doc)
    try:
        results = build_isolated(specs, config, refs, int(doc.get("processes", 1)))
    except CkptlintError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    reply.write(json.dumps([encode_result(r) for r in results]))
    reply.flush()


# -- the parent ----------------------------------------------------------------------------------

def _private_path() -> str:
    """A directory whose only entry is this package, for the child's sys.path."""
    directory = Path(tempfile.mkdtemp(prefix="ckptlint-worker-"))
    (directory / "ckptlint").symlink_to(PACKAGE_DIR, target_is_directory=True)
    return str(directory)


def build_in_worker(python: str, jobs: int, specs: Sequence[ModelSpec], config: Config,
                    references: Sequence[Signature | None]) -> list[BuildResult]:
    """Build in one process of `python` (the project's interpreter), which forks `jobs`
    children of its own; results keep the input order."""
    path = _private_path()
    code = (f"import sys; sys.path.insert(0, {path!r}); "
            "from ckptlint.build.worker import serve; serve()")
    # the user's own setting for bytecode caching holds: the tracking reads sources either way
    request = encode_request(specs, config, references, jobs)
    try:
        proc = subprocess.run([python, "-c", code], input=request, capture_output=True,
                              text=True, cwd=config.root, errors="replace")
    except OSError as exc:
        raise WorkerError(python, f"cannot run it ({exc.strerror})") from None
    finally:
        (Path(path) / "ckptlint").unlink()
        os.rmdir(path)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise WorkerError(python, lines[-1] if lines else f"exit code {proc.returncode}")
    sys.stderr.write(proc.stderr)  # what the models printed while building
    try:
        return [decode_result(doc) for doc in json.loads(proc.stdout)]
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkerError(python, f"its reply could not be read ({type(exc).__name__})") from None
