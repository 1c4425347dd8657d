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
from concurrent.futures import ThreadPoolExecutor
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
                   references: Sequence[Signature | None]) -> str:
    return json.dumps({
        "config": {**asdict(config), "models": []},
        "jobs": [{"spec": asdict(spec), "reference": sigfile.dumps(ref) if ref else None}
                 for spec, ref in zip(specs, references)],
    })


def decode_request(text: str) -> tuple[list[ModelSpec], Config, list[Signature | None]]:
    doc = json.loads(text)
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
        "sites": {k: [s.file, s.line] for k, s in result.sites.items()},
        "modules": {k: [m.type_name, [list(c) for c in m.classes]]
                    for k, m in result.modules.items()},
        "files": list(result.files),
        "nonpersistent": list(result.nonpersistent),
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
        sites={k: Site(f, line) for k, (f, line) in doc["sites"].items()},
        modules={k: ModuleInfo(t, tuple(tuple(c) for c in classes))
                 for k, (t, classes) in doc["modules"].items()},
        files=tuple(doc["files"]),
        nonpersistent=tuple(doc.get("nonpersistent", ())),
    )


# -- the child -----------------------------------------------------------------------------------

def serve() -> None:
    """Child entry point: read a request on stdin, build, write results on stdout."""
    from ckptlint.build import build_all

    specs, config, refs = decode_request(sys.stdin.read())
    stdout = sys.stdout
    sys.stdout = sys.stderr  # user code that prints must not corrupt the reply
    try:
        results = build_all(specs, config, refs)
    except CkptlintError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    stdout.write(json.dumps([encode_result(r) for r in results]))
    stdout.flush()


# -- the parent ----------------------------------------------------------------------------------

def _private_path() -> str:
    """A directory whose only entry is this package, for the child's sys.path."""
    directory = Path(tempfile.mkdtemp(prefix="ckptlint-worker-"))
    (directory / "ckptlint").symlink_to(PACKAGE_DIR, target_is_directory=True)
    return str(directory)


def run_worker(python: str, specs: Sequence[ModelSpec], config: Config,
               references: Sequence[Signature | None], path: str) -> list[BuildResult]:
    code = f"import sys; sys.path.insert(0, {path!r}); from ckptlint.worker import serve; serve()"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([python, "-c", code], input=encode_request(specs, config, references),
                              capture_output=True, text=True, cwd=config.root, env=env)
    except OSError as exc:
        raise WorkerError(python, f"cannot run it ({exc.strerror})") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise WorkerError(python, lines[-1] if lines else f"exit code {proc.returncode}")
    sys.stderr.write(proc.stderr)  # what the models printed while building
    return [decode_result(doc) for doc in json.loads(proc.stdout)]


def build_in_workers(python: str, jobs: int, specs: Sequence[ModelSpec], config: Config,
                     references: Sequence[Signature | None]) -> list[BuildResult]:
    """Split the models over `jobs` child processes of `python`; results keep the input order."""
    jobs = max(1, min(jobs, len(specs)))
    chunks = [list(range(i, len(specs), jobs)) for i in range(jobs)]
    path = _private_path()
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(lambda idx: run_worker(
                python, [specs[i] for i in idx], config, [references[i] for i in idx], path),
                chunks))
    finally:
        (Path(path) / "ckptlint").unlink()
        os.rmdir(path)
    ordered: list[BuildResult | None] = [None] * len(specs)
    for idx, results in zip(chunks, parts):
        for i, result in zip(idx, results):
            ordered[i] = result
    return [r for r in ordered if r is not None]
