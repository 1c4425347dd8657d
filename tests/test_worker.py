"""Building in another interpreter: the project's own Python, chosen by config, env or .venv."""

from __future__ import annotations

import json
import subprocess
import sys

MODEL = "from torch import nn\n\n\nclass M(nn.Module):\n    def __init__(self):\n" \
        "        super().__init__()\n        self.fc = nn.Linear(3, 4)\n"


def _project(project, extra: str = ""):
    project.write("m.py", MODEL)
    project.configure('name = "m"\ntarget = "m:M"', extra=extra)
    return project


def test_an_interpreter_without_torch_is_one_sentence(project, tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    run = _project(project).run_subprocess("check", "--no-cache",
                                           env={"CKPTLINT_PYTHON": str(bare / "bin" / "python")})
    assert run.code == 2 and "Traceback" not in run.err
    assert f"building models with {bare}/bin/python failed: torch is not installed" in run.err


def test_a_configured_python_that_does_not_exist(project):
    run = _project(project, 'python = "nowhere/bin/python"\n').run("check")
    assert run.code == 2
    assert "tool.ckptlint.python = 'nowhere/bin/python' in pyproject.toml names no Python" \
        in run.err


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def test_the_project_venv_builds_the_models(project):
    _project(project)
    (project.root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    inside = project.run("update")
    assert inside.code == 0 and inside.out == "wrote signatures/m.toml\n"
    project.write("m.py", MODEL.replace("(3, 4)", "(3, 5)"))
    run = project.run("check", "--format", "json")
    assert run.code == 1
    assert {f["key"] for f in explained(json.loads(run.out)["findings"])} == \
        {"fc.weight", "fc.bias"}
    assert json.loads(run.out)["findings"][0]["file"] == "m.py"
