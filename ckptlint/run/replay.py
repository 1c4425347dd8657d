"""Replay the last clean `ckptlint check` when none of its inputs changed.

A pre-commit hook runs `ckptlint check` on every commit, most of which touch no model. After a
clean run of plain `ckptlint check`, the run's every input is recorded (pyproject.toml, every
input each model's build used, its signature and checkpoints, the signatures directory, the
environment) with the output it printed. The next plain `ckptlint check` verifies those inputs
and prints the same output, before argparse, dataclasses or any other part of ckptlint loads.
Anything unexpected means "no replay": the normal run (with its per-model cache) takes over.
This module imports only the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterable, Mapping, Sequence, TextIO

from ckptlint.core.constants import (CACHE_DIRECTORY, CACHE_VERSION, ENV_NO_CACHE, ENV_PYTHON,
                                     VENVS, VERSION)
from ckptlint.core.environment import site_packages, torch_dists, venv_python
from ckptlint.core.inputs import load_json, merge, read_regular, seal, unsealed, verify

RECORD = os.path.join(CACHE_DIRECTORY, CACHE_VERSION, "last-clean-check.json")
# what else decides a run's output besides its inputs: recorded with it, compared on replay
_MADE_UNDER = (ENV_NO_CACHE, "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")


def use_color(choice: str, stream: TextIO) -> bool:
    """`--color` wins; then NO_COLOR / FORCE_COLOR (no-color.org); then whether it is a tty."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def cache_enabled(no_cache_flag: bool = False) -> bool:
    return not no_cache_flag and os.environ.get(ENV_NO_CACHE, "") in ("", "0")


def replayable(argv: Sequence[str]) -> bool:
    """The one definition of "a plain `ckptlint check`", the only run that is replayed and
    recorded: no option at all (any option may change what is checked or printed), the cache
    on, and not on GitHub Actions (whose run also writes a job summary)."""
    return list(argv) == ["check"] and cache_enabled() and os.environ.get("GITHUB_ACTIONS") != "true"


def environment(root: str) -> list:
    """What decides how models would be built: interpreter, torch, ckptlint, interpreter choice."""
    torch = torch_dists(p for p in sys.path if p)
    venvs = [os.path.exists(venv_python(os.path.join(root, v))) for v in VENVS]
    # the torch of an interpreter that builds for us (a project venv, CKPTLINT_PYTHON)
    elsewhere = [os.path.join(root, v) for v in VENVS]
    if os.environ.get(ENV_PYTHON):
        elsewhere.append(os.path.dirname(os.path.dirname(os.environ[ENV_PYTHON])))
    torch += torch_dists(place for prefix in elsewhere for place in site_packages(prefix))
    # python and python3 in one venv are one interpreter: name it by its prefix and real file
    return [sys.prefix, os.path.realpath(sys.executable), sys.version, VERSION, torch, venvs,
            os.environ.get(ENV_PYTHON, "")]


def identities(urls: list) -> Mapping:
    """`inputs.Identities` through the remote reader, which (and fsspec) loads only when a
    recorded input is remote."""
    from ckptlint.readers.remote import identities as ask

    return ask(urls)


def verified(doc: Mapping, root: str, memo: dict | None = None) -> bool:
    """`inputs.verify`, remote files asked about afresh (the cache and the replay both use it)."""
    return verify(doc, root, memo, identities)


def _root(start: str) -> str | None:
    """The directory of the first pyproject.toml above `start` that mentions ckptlint."""
    directory = start
    while True:
        data = read_regular(os.path.join(directory, "pyproject.toml"), 16 << 20)
        if data is not None and b"ckptlint" in data:  # bytes: any encoding, no decode error
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _made_under() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in _MADE_UNDER}


def replay(argv: list[str], stdout: TextIO) -> int | None:
    """Print the recorded output and return its exit code, or None to run normally."""
    if not replayable(argv):
        return None
    cwd = os.getcwd()
    root = _root(cwd)
    if root is None:
        return None
    doc = unsealed(load_json(os.path.join(root, RECORD)))
    try:
        if doc["argv"] != argv or doc["made_under"] != _made_under() or doc["cwd"] != cwd \
                or doc["environment"] != json.loads(json.dumps(environment(root))):
            return None
        if not verified(doc["inputs"], root):
            return None
        stdout.write(doc["color" if use_color("auto", stdout) else "plain"])
        return int(doc["exit"])
    except (KeyError, TypeError, ValueError):
        return None


def record(root: str, argv: Sequence[str], docs: Iterable[Mapping], plain: str,
           color: str) -> bool:
    """Remember a clean plain run: what it was made under, the inputs each model's result was
    computed from (digests taken before they were read, never after), and what it printed.
    Returns False when nothing could be recorded (an input changed during the run)."""
    from pathlib import Path

    from ckptlint.core.atomic import write_atomic

    inputs = merge(docs)
    if inputs is None or not replayable(argv):
        return False
    doc = {"argv": list(argv), "made_under": _made_under(), "cwd": os.getcwd(),
           "environment": environment(root), "exit": 0, "inputs": inputs,
           "plain": plain, "color": color}
    write_atomic(Path(root) / RECORD, json.dumps(seal(doc), indent=1) + "\n")
    return True
