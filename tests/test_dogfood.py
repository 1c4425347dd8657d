"""This repository's own demo: `ckptlint check` on the shipped example models passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_examples_match_their_committed_signatures():
    run = subprocess.run([sys.executable, "-m", "ckptlint", "check", "--no-cache"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert (run.returncode, run.stdout) == (
        0, "All clear: 4 models match their committed signatures.\n"), run.stderr


def test_update_on_the_examples_changes_no_byte(tmp_path):
    subprocess.run(["cp", "-r", str(REPO / "examples"), str(REPO / "signatures"),
                    str(REPO / "pyproject.toml"), str(tmp_path)], check=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "signatures").iterdir()}
    run = subprocess.run([sys.executable, "-m", "ckptlint", "update"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "wrote" not in run.stdout, run.stdout + run.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "signatures").iterdir()} == before
