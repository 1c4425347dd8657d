"""The hooks of .pre-commit-hooks.yaml, run by the real pre-commit on real `git commit`s.

Each test makes a git repository with a small model package, its [tool.ckptlint] table and
committed signatures, installs the hook, and walks one cycle: a clean commit passes; a layer
change is refused with the finding and its line; `ckptlint update` plus `git add` of the
signature lets the commit through again.

`language: system` runs from a `repo: local` config with this venv's bin on PATH. `language:
python` gets an environment built by pre-commit from a snapshot of this checkout (once per
session); torch is not in it, so the build runs in this interpreter, found through
CKPTLINT_PYTHON or through a `.venv` in the project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml  # a dependency of pre-commit

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / ".pre-commit-hooks.yaml"
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"
BIN = str(Path(sys.executable).parent)

MODEL = '''\
from torch import nn


class Net(nn.Module):
    def __init__(self, d=16, classes=5):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.embed(x))
'''
PYPROJECT = '''\
[project]
name = "demo"

[tool.ckptlint]

[[tool.ckptlint.models]]
name = "net"
target = "pkg.model:Net"
'''
OLD_LAYER = "self.head = nn.Linear(d, classes)"
NEW_LAYER = "self.head = nn.Linear(d, classes, bias=False)"


@dataclass(frozen=True)
class Result:
    code: int
    out: str


class GitProject:
    """A git repository holding the model package, with pre-commit installed in it."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def run(self, *argv: str | Path, timeout: int = 120) -> Result:
        proc = subprocess.run([str(a) for a in argv], cwd=self.root, env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return Result(proc.returncode, proc.stdout)

    def ok(self, *argv: str | Path, timeout: int = 120) -> str:
        result = self.run(*argv, timeout=timeout)
        assert result.code == 0, f"{argv} exited {result.code}:\n{result.out}"
        return result.out

    def commit(self, message: str, *paths: str) -> Result:
        self.ok("git", "add", *paths)
        # the first python-hook commit of a session builds pre-commit's environment
        return self.run("git", "commit", "-m", message, timeout=900)

    def head(self) -> str:
        return self.ok("git", "rev-parse", "HEAD").strip()

    def edit(self, relpath: str, old: str, new: str) -> None:
        path = self.root / relpath
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")


def _environment(home: Path, pre_commit_home: Path, path_with_bin: bool) -> dict[str, str]:
    """A clean, isolated environment: no user git config, no inherited ckptlint choices."""
    gitconfig = home / "gitconfig"
    gitconfig.write_text("[user]\n\tname = ckptlint tests\n\temail = tests@ckptlint.invalid\n"
                         "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "PRE_COMMIT", "CKPTLINT_")) and k != "VIRTUAL_ENV"}
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != BIN]
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1",
               PRE_COMMIT_HOME=str(pre_commit_home), NO_COLOR="1",
               PATH=os.pathsep.join([BIN, *path] if path_with_bin else path))
    return env


def _project(root: Path, env: dict[str, str], hooks_config: dict) -> GitProject:
    root.mkdir()
    files = {"pkg/__init__.py": "", "pkg/model.py": MODEL, "pyproject.toml": PYPROJECT,
             "README.md": "demo\n", ".gitignore": ".ckptlint_cache/\n.venv\n",
             ".pre-commit-config.yaml": yaml.safe_dump(hooks_config, sort_keys=False)}
    for relpath, text in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text, encoding="utf-8")
    project = GitProject(root, env)
    project.ok("git", "init", "-q")
    # signatures come from this interpreter, which has torch: the team's usual `ckptlint update`
    assert "wrote signatures/net.toml" in project.ok(sys.executable, "-m", "ckptlint", "update")
    assert "pre-commit installed" in project.ok(PRE_COMMIT, "install")
    return project


def _drift_cycle(project: GitProject) -> None:
    """Clean commit passes; a layer change is refused at its line; update + add passes again."""
    first = project.commit("models and their signatures", "-A")
    assert first.code == 0, first.out
    assert "ckptlint (architecture drift)" in first.out and "Passed" in first.out, first.out

    readme = project.root / "README.md"
    readme.write_text("demo, documented\n", encoding="utf-8")
    skipped = project.commit("docs only", "README.md")
    assert skipped.code == 0 and "Skipped" in skipped.out, skipped.out  # types_or: python, toml

    before = project.head()
    project.edit("pkg/model.py", OLD_LAYER, NEW_LAYER)
    refused = project.commit("drop the head's bias", "pkg/model.py")
    assert refused.code != 0, refused.out
    assert "Failed" in refused.out and "exit code: 1" in refused.out, refused.out
    assert "pkg/model.py:8:9: CKL102 `head.bias`" in refused.out, refused.out
    assert f"8 |         {NEW_LAYER}" in refused.out, refused.out  # the changed line is shown
    assert "ckptlint update net" in refused.out, refused.out
    assert project.head() == before

    updated = project.ok(sys.executable, "-m", "ckptlint", "update")
    assert "wrote signatures/net.toml" in updated
    accepted = project.commit("drop the head's bias", "pkg/model.py", "signatures/net.toml")
    assert accepted.code == 0 and "Passed" in accepted.out, accepted.out
    assert project.head() != before
    assert project.ok("git", "status", "--porcelain") == ""


def _manifest_hook(hook_id: str) -> dict:
    hooks = {hook["id"]: hook for hook in yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))}
    return hooks[hook_id]


# -- the manifest --------------------------------------------------------------------------


def test_manifest_is_valid_for_pre_commit() -> None:
    proc = subprocess.run([PRE_COMMIT, "validate-manifest", MANIFEST], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("hook_id, language", [("ckptlint", "python"),
                                               ("ckptlint-system", "system")])
def test_manifest_hooks_run_once_per_commit(hook_id: str, language: str) -> None:
    hook = _manifest_hook(hook_id)
    assert hook["language"] == language
    assert hook["entry"] == "ckptlint check"
    assert hook["pass_filenames"] is False and hook["require_serial"] is True
    assert set(hook["types_or"]) == {"python", "toml"}
    assert hook["description"]


# -- language: system, from a `repo: local` config -----------------------------------------


def test_system_hook_from_local_repo(tmp_path: Path) -> None:
    hook = {"id": "ckptlint-system", **_manifest_hook("ckptlint-system")}
    config = {"repos": [{"repo": "local", "hooks": [hook]}]}
    env = _environment(tmp_path, tmp_path / "pre-commit-home", path_with_bin=True)
    _drift_cycle(_project(tmp_path / "demo", env, config))


# -- language: python, installed by pre-commit from this checkout --------------------------


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout as pre-commit would fetch it: a commit of its tracked and not-ignored
    files, so uncommitted work (and this very manifest, before it is committed) is included."""
    snapshot = tmp_path_factory.mktemp("ckptlint-hook-repo")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for relpath in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / relpath
        if source.is_file():  # a file deleted but not yet staged is still listed
            (snapshot / relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, snapshot / relpath)
    env = _environment(snapshot.parent, snapshot.parent / "unused", path_with_bin=False)
    for argv in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "snapshot"]):
        subprocess.run(argv, cwd=snapshot, env=env, check=True, capture_output=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=snapshot, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    return snapshot, rev


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the python-hook tests, so pre-commit builds the hook environment once."""
    return tmp_path_factory.mktemp("pre-commit-home")


def _python_hook_project(tmp_path: Path, hook_repo: tuple[Path, str],
                         pre_commit_home: Path) -> GitProject:
    repo, rev = hook_repo
    config = {"repos": [{"repo": str(repo), "rev": rev, "hooks": [{"id": "ckptlint"}]}]}
    # this venv is not on PATH: nothing but ckptlint's own choice may lead the hook to torch
    env = _environment(tmp_path, pre_commit_home, path_with_bin=False)
    return _project(tmp_path / "demo", env, config)


def _assert_hook_env_has_no_torch(pre_commit_home: Path) -> None:
    pythons = sorted(pre_commit_home.glob("repo*/py_env-*/bin/python"))
    assert pythons, "pre-commit built no python environment"
    for python in pythons:
        probe = ("import importlib.util as u; "
                 "print(u.find_spec('ckptlint') is not None, u.find_spec('torch') is not None)")
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
        assert found.stdout.split() == ["True", "False"], found.stdout


def test_python_hook_builds_with_ckptlint_python(tmp_path: Path, hook_repo: tuple[Path, str],
                                                 pre_commit_home: Path) -> None:
    project = _python_hook_project(tmp_path, hook_repo, pre_commit_home)
    project.env["CKPTLINT_PYTHON"] = sys.executable
    _drift_cycle(project)
    _assert_hook_env_has_no_torch(pre_commit_home)


def test_python_hook_finds_the_project_venv(tmp_path: Path, hook_repo: tuple[Path, str],
                                            pre_commit_home: Path) -> None:
    project = _python_hook_project(tmp_path, hook_repo, pre_commit_home)
    (project.root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    _drift_cycle(project)
    _assert_hook_env_has_no_torch(pre_commit_home)
