"""Fixture projects written into tmp_path, and ways to run the real CLI against them."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckptlint.commands.cli import main

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


class Project:
    """A throwaway project: pyproject.toml with [tool.ckptlint], model sources, signatures."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def configure(self, *models: str, extra: str = "") -> Path:
        """`models` are TOML bodies of [[tool.ckptlint.models]] tables."""
        tables = "".join(f"\n[[tool.ckptlint.models]]\n{textwrap.dedent(m).strip()}\n"
                         for m in models)
        return self.write("pyproject.toml",
                          f'[project]\nname = "fixture"\n\n[tool.ckptlint]\n{extra}{tables}')

    def run(self, *argv: str) -> Run:
        """`ckptlint ARGV` in-process, from the project root."""
        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        finally:
            os.chdir(cwd)
        return Run(code, out.getvalue(), err.getvalue())

    def run_subprocess(self, *argv: str, env: dict[str, str] | None = None) -> Run:
        """`python -m ckptlint ARGV` in a fresh interpreter."""
        proc = subprocess.run([sys.executable, "-m", "ckptlint", *argv], cwd=self.root,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, **(env or {})})
        return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)
