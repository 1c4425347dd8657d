"""Replay the last clean `ckptlint check` when none of its inputs changed.

A pre-commit hook runs `ckptlint check` on every commit, most of which touch no model. After a
clean run of plain `ckptlint check`, the run's every input is recorded (pyproject.toml, each
model's import closure, its signature and checkpoints, the signatures directory, the
environment) with the output it printed. The next plain `ckptlint check` verifies those inputs
and prints the same output, before argparse, dataclasses or any other part of ckptlint loads.
Anything unexpected means "no replay": the normal run (with its per-model cache) takes over.
This module imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Iterable, TextIO

RECORD = os.path.join(".ckptlint_cache", "v1", "last-clean-check.json")
_SIZE_LIMIT = 1 << 20  # files up to this are hashed by content; checkpoints by size and mtime


def use_color(choice: str, stream: TextIO) -> bool:
    """`--color` wins; then NO_COLOR / FORCE_COLOR (no-color.org); then whether it is a tty."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def digest(path: str) -> str | None:
    """A file by content (or by size and mtime when large), a folder by its files' stats."""
    try:
        if os.path.isdir(path):
            stats = sorted((os.path.relpath(os.path.join(d, f), path), s.st_size, s.st_mtime_ns)
                           for d, _, files in os.walk(path) for f in files
                           for s in [os.stat(os.path.join(d, f))])
            return hashlib.sha256(json.dumps(stats).encode()).hexdigest()
        info = os.stat(path)
        if info.st_size > _SIZE_LIMIT:
            return f"stat:{info.st_size}:{info.st_mtime_ns}"
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def environment(root: str) -> list:
    """What decides how models would be built: interpreter, torch, ckptlint, interpreter choice."""
    torch = torch_dists(p for p in sys.path if p)
    venvs = [os.path.exists(os.path.join(root, v, "bin", "python")) for v in (".venv", "venv")]
    # the torch of an interpreter that builds for us (a project venv, CKPTLINT_PYTHON)
    elsewhere = [os.path.join(root, ".venv"), os.path.join(root, "venv")]
    if os.environ.get("CKPTLINT_PYTHON"):
        elsewhere.append(os.path.dirname(os.path.dirname(os.environ["CKPTLINT_PYTHON"])))
    torch += torch_dists(place for prefix in elsewhere for place in site_packages(prefix))
    from ckptlint import __version__

    # python and python3 in one venv are one interpreter: name it by its prefix and real file
    return [sys.prefix, os.path.realpath(sys.executable), sys.version, __version__, torch, venvs,
            os.environ.get("CKPTLINT_PYTHON", "")]


def torch_dists(places: Iterable[str]) -> list[str]:
    """The `torch-<version>.dist-info` folders of these places, place by place (sorted within
    one): what is installed, without importing torch or importlib.metadata."""
    found = []
    for place in places:
        try:
            found += sorted(name for name in os.listdir(place)
                            if name.startswith("torch-") and name.endswith(".dist-info"))
        except OSError:
            continue
    return found


def site_packages(prefix: str) -> list[str]:
    """The site-packages folders of the Python environment at `prefix` (POSIX or Windows)."""
    lib = os.path.join(prefix, "lib")
    try:
        versions = sorted(v for v in os.listdir(lib) if v.startswith("python"))
    except OSError:
        versions = []
    candidates = [os.path.join(lib, v, "site-packages") for v in versions]
    candidates.append(os.path.join(prefix, "Lib", "site-packages"))
    return [p for p in candidates if os.path.isdir(p)]


def _root(start: str) -> str | None:
    """The directory of the first pyproject.toml above `start` that mentions ckptlint."""
    directory = start
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        try:
            with open(candidate, encoding="utf-8") as handle:
                if "ckptlint" in handle.read():
                    return directory
        except OSError:
            pass
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _replayable(argv: list[str]) -> bool:
    return (argv == ["check"] and os.environ.get("CKPTLINT_NO_CACHE", "") in ("", "0")
            and os.environ.get("GITHUB_ACTIONS") != "true")  # that run also writes a summary


def replay(argv: list[str], stdout: TextIO) -> int | None:
    """Print the recorded output and return its exit code, or None to run normally."""
    if not _replayable(argv):
        return None
    cwd = os.getcwd()
    root = _root(cwd)
    if root is None:
        return None
    try:
        with open(os.path.join(root, RECORD), encoding="utf-8") as handle:
            doc = json.load(handle)
        if doc["cwd"] != cwd or doc["environment"] != json.loads(json.dumps(environment(root))):
            return None
        if any(digest(os.path.join(root, p)) != d for p, d in doc["inputs"].items()):
            return None
        stdout.write(doc["color" if use_color("auto", stdout) else "plain"])
        return int(doc["exit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(root: str, inputs: Iterable[str], plain: str, color: str) -> None:
    """Remember a clean run of plain `ckptlint check` (inputs relative to `root`)."""
    from ckptlint.atomic import write_atomic

    doc = {"cwd": os.getcwd(), "environment": environment(root), "exit": 0,
           "inputs": {p: digest(os.path.join(root, p)) for p in sorted(set(inputs))},
           "plain": plain, "color": color}
    if None in doc["inputs"].values():
        return
    from pathlib import Path

    write_atomic(Path(root) / RECORD, json.dumps(doc, indent=1) + "\n")
