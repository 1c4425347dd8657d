"""The README, followed literally from a clone of this repository: its install commands install
from the clone (ckptlint is not on PyPI), the pre-commit `rev` it shows is one the user can
resolve, and its first command prints only ckptlint's output, also where NumPy is absent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # a dependency of pre-commit

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_no_command_installs_ckptlint_from_the_registry() -> None:
    installs = [line for line in README.splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        # `ckptlint` as a requirement must come from a path or a git URL, never from PyPI
        assert not re.search(r"pip install[^#]*[\s\"']ckptlint(\[[^\]]*\])?(?!\s*@)[\s\"']",
                             line + " "), line


def test_the_install_commands_work_from_the_clone() -> None:
    [block] = _blocks(_section("Install"), "sh")
    commands = _commands(block)
    assert commands == ["pip install .", 'pip install ".[torch]"']
    for command in commands:
        argv = [sys.executable, "-m", *command.replace('"', "").split(), "--dry-run"]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Would install ckptlint-" in proc.stdout, proc.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of this repository, as a team would keep its copy."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "clone", "-q", str(REPO), str(tmp_path / "ckptlint")], env=env,
                   check=True, capture_output=True)
    return tmp_path / "ckptlint"


def test_the_pre_commit_rev_is_one_the_user_can_resolve(clone: Path, tmp_path: Path) -> None:
    section = _section("pre-commit")
    config = yaml.safe_load(_blocks(section, "yaml")[0])
    [repo] = config["repos"]
    assert [hook["id"] for hook in repo["hooks"]] == ["ckptlint"]
    assert "your copy of this repository" in section  # what to put in `repo:`
    # the README says which tag to make; made as it says, `rev` resolves in the clone
    tag = re.search(r"`git tag (\S+)`", section)
    assert tag is not None and repo["rev"] == tag.group(1)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "tag", tag.group(1)], cwd=clone, env=env, check=True)
    resolved = subprocess.run(["git", "rev-parse", "--verify", f"{repo['rev']}^{{commit}}"],
                              cwd=clone, env=env, capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stderr
    hooks = yaml.safe_load((clone / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert "ckptlint" in {hook["id"] for hook in hooks}
    # and the config, pointed at the clone, is one pre-commit accepts
    repo["repo"] = str(clone)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    check = subprocess.run([PRE_COMMIT, "validate-config", str(tmp_path / "config.yaml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def no_numpy(tmp_path: Path) -> dict[str, str]:
    """An environment where `import numpy` fails, as in a virtualenv with torch alone, for this
    process's children and theirs (worker processes too)."""
    (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["numpy"] = None\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPTLINT_")}
    return {**env, "PYTHONPATH": str(tmp_path), "NO_COLOR": "1"}


def test_torch_itself_warns_without_numpy(no_numpy: dict[str, str]) -> None:
    """The premise: torch's own import prints the warning users saw."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=no_numpy,
                          capture_output=True, text=True, timeout=300)
    assert "UserWarning: Failed to initialize NumPy" in proc.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_first_command_prints_only_ckptlint_output(no_numpy: dict[str, str],
                                                        jobs: str) -> None:
    [first] = _blocks(_section("Try it here (fresh machine, one command)"), "sh")
    assert first.strip().endswith("&& .venv/bin/ckptlint check")
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "check", "--no-cache", "-j", jobs],
                          cwd=REPO, env=no_numpy, capture_output=True, text=True, timeout=600)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "All clear: 4 models match their committed signatures.\n", "")
