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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ckptlint import sigfile
from ckptlint.errors import CkptlintError
from ckptlint.ftypes import (BuildResult, Config, LoadReport, Location, ModelSpec, ModuleInfo,
                             Signature, Site)

PACKAGE_DIR = Path(__file__).resolve().parent


class WorkerError(CkptlintError):
    def __init__(self, python: str, detail: str):
        super().__init__(f"building models with {python} failed: {detail}")


# -- the wire format ---------------------------------------------------------------------------

def encode_request(specs: Sequence[ModelSpec], config: Config,
                   references: Sequence[Signature | None], processes: int = 1) -> str:
    return json.dumps({
        "processes": processes,
        "config": {**asdict(config), "models": []},
        "jobs": [{"spec": asdict(spec), "reference": sigfile.dumps(ref) if ref else None}
                 for spec, ref in zip(specs, references)],
    })


def decode_request(doc: dict) -> tuple[list[ModelSpec], Config, list[Signature | None]]:
    config = Config(**{**doc["config"], "pythonpath": tuple(doc["config"]["pythonpath"])})
    specs = [ModelSpec(**job["spec"]) for job in doc["jobs"]]
    refs = [sigfile.loads(job["reference"], "<reference>") if job["reference"] else None
            for job in doc["jobs"]]
    return specs, config, refs


def encode_result(result: BuildResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "signature": sigfile.dumps(result.signature) if result.signature else None,
        "load": asdict(result.load) if result.load else None,
        "error": result.error,
        "error_location": asdict(result.error_location) if result.error_location else None,
        "notes": list(result.notes),
        "fallbacks": list(result.fallbacks),
        "sites": {k: [s.file, s.line] for k, s in result.sites.items()},
        "modules": {k: [m.type_name, [list(c) for c in m.classes]]
                    for k, m in result.modules.items()},
        "files": list(result.files),
        "nonpersistent": list(result.nonpersistent),
        "inputs": result.inputs,
    }


def decode_result(doc: dict[str, Any]) -> BuildResult:
    location = doc["error_location"]
    return BuildResult(
        model=doc["model"],
        signature=sigfile.loads(doc["signature"], "<worker>") if doc["signature"] else None,
        load=LoadReport(**{k: tuple(v) for k, v in doc["load"].items()}) if doc["load"] else None,
        error=doc["error"],
        error_location=Location(**{k: v for k, v in location.items() if k != "source"})
        if location else None,
        notes=tuple(doc["notes"]),
        fallbacks=tuple(doc.get("fallbacks", ())),
        sites={k: Site(f, line) for k, (f, line) in doc["sites"].items()},
        modules={k: ModuleInfo(t, tuple(tuple(c) for c in classes))
                 for k, (t, classes) in doc["modules"].items()},
        files=tuple(doc["files"]),
        nonpersistent=tuple(doc.get("nonpersistent", ())),
        inputs=doc.get("inputs"),
    )


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
    from ckptlint.isolate import build_isolated

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
    code = f"import sys; sys.path.insert(0, {path!r}); from ckptlint.worker import serve; serve()"
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
