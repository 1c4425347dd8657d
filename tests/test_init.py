"""`ckptlint init`: static discovery of models, an append-only edit of pyproject.toml, the first
update; non-interactive (`--yes`, no tty) and interactive (a real pty) answers."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ckptlint.commands.init import discover

LAYERS = '''
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)
'''

MODEL = '''
from dataclasses import dataclass

from torch import nn

from pkg.layers import Block


@dataclass
class NetConfig:
    d: int = 8
    n: int = 2


class Net(nn.Module):
    def __init__(self, d=16, n=2):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.head = nn.Linear(d, 3)


class Configured(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.body = nn.Linear(config.d, config.n)


class Wide(nn.Module):
    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
'''

# never proposed: a test, an environment, a hidden folder, build output
ELSEWHERE = '''
from torch import nn


class Elsewhere(nn.Module):
    pass
'''

PYPROJECT = '''\
# the project's own settings: init must not touch a byte of them
[project]
name   = "fixture"      # odd spacing, kept
version = "0.1"

[tool.ruff]
line-length = 99
'''

APPENDED = '''
# Models registered by `ckptlint init`; `ckptlint update` records their signatures.
[tool.ckptlint]

[[tool.ckptlint.models]]
name = "net"
target = "pkg.model:Net"

[[tool.ckptlint.models]]
name = "configured"
target = "pkg.model:Configured"
kwargs = { config = { _target_ = "pkg.model:NetConfig" } }

# TODO: fill in kwargs (pkg/model.py:27 needs width), uncomment, then run `ckptlint update wide`
# [[tool.ckptlint.models]]
# name = "wide"
# target = "pkg.model:Wide"
# kwargs = { width = ... }
'''


@pytest.fixture
def models(project: Any) -> Any:
    project.write("pkg/__init__.py", "")
    project.write("pkg/layers.py", LAYERS)
    project.write("pkg/model.py", MODEL)
    for relpath in ("tests/test_model.py", ".venv/lib/python3.11/site-packages/dep.py",
                    ".hidden/x.py", "build/lib/pkg/model.py", "venv/x.py", "dist/x.py"):
        project.write(relpath, ELSEWHERE)
    (project.root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    return project


def _pyproject(project: Any) -> str:
    return (project.root / "pyproject.toml").read_bytes().decode("utf-8")


def test_yes_appends_entries_records_signatures_and_check_passes(models: Any) -> None:
    run = models.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    assert _pyproject(models) == PYPROJECT + APPENDED
    assert "left out as submodules of other classes: pkg.layers:Block" in run.out
    assert "wrote signatures/net.toml" in run.out and "wrote signatures/configured.toml" in run.out
    assert sorted(p.name for p in (models.root / "signatures").iterdir()) == \
        ["configured.toml", "net.toml"]
    check = models.run("check")
    assert check.code == 0, check.out + check.err


def test_a_second_init_adds_nothing(models: Any) -> None:
    assert models.run("init", "--yes").code == 0
    again = models.run("init", "--yes")
    assert again.code == 0 and "nothing to add" in again.out
    assert _pyproject(models) == PYPROJECT + APPENDED


def test_dry_run_prints_the_text_and_writes_nothing(models: Any) -> None:
    run = models.run("init", "--dry-run")
    assert run.code == 0, run.err
    assert run.out.endswith("would append to pyproject.toml:\n\n" + APPENDED.lstrip())
    assert _pyproject(models) == PYPROJECT
    assert not (models.root / "signatures").exists()


def test_existing_table_gets_only_new_models(models: Any) -> None:
    existing = PYPROJECT + '''
[tool.ckptlint]
signatures = "sigs"   # a comment that stays

[[tool.ckptlint.models]]
name = "main"
target = "pkg.model:Net"
kwargs = { d = 16 }

[tool.black]
line-length = 99'''  # no final newline
    (models.root / "pyproject.toml").write_text(existing, encoding="utf-8")
    run = models.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    text = _pyproject(models)
    assert text.startswith(existing + "\n\n# Models registered by `ckptlint init`")
    added = text[len(existing):]
    assert "[tool.ckptlint]\n" not in added and 'target = "pkg.model:Net"' not in added
    assert '[[tool.ckptlint.models]]\nname = "configured"' in added
    assert "already in pyproject.toml: pkg.model:Net" in run.out
    assert "wrote sigs/configured.toml" in run.out and "sigs/main.toml" not in run.out
    assert models.run("check", "configured").code == 0


def test_crlf_file_stays_crlf(models: Any) -> None:
    (models.root / "pyproject.toml").write_bytes(PYPROJECT.replace("\n", "\r\n").encode())
    assert models.run("init", "--dry-run").code == 0  # nothing built, nothing written
    assert models.run("init", "--yes").code == 0
    data = (models.root / "pyproject.toml").read_bytes()
    assert data.startswith(PYPROJECT.replace("\n", "\r\n").encode())
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_src_layout_gets_a_pythonpath(project: Any) -> None:
    project.write("src/lib/__init__.py", "")
    project.write("src/lib/net.py", ELSEWHERE)
    project.write("pyproject.toml", '[project]\nname = "lib"\n')
    run = project.run("init", "--dry-run")
    assert 'pythonpath = ["src"]\n\n[[tool.ckptlint.models]]\nname = "elsewhere"\n' \
        'target = "lib.net:Elsewhere"\n' in run.out


def test_no_pyproject_creates_one(project: Any) -> None:
    project.write("net.py", ELSEWHERE)
    run = project.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    assert (project.root / "pyproject.toml").read_text().startswith(
        "# Models registered by `ckptlint init`")
    assert (project.root / "signatures" / "elsewhere.toml").exists()


@pytest.mark.parametrize("source, expected", [
    # a model whose every argument has a default, and its submodule
    ("class A(nn.Module):\n    def __init__(self, n=2):\n        self.b = B(n)\n"
     "class B(nn.Module):\n    def __init__(self, n):\n        pass\n",
     {"m:A": ((), ())}),
    # a base class is not a model of its own; *args/**kwargs need nothing
    ("class Base(nn.Module):\n    pass\nclass Net(Base):\n    def __init__(self, *a, **k):\n"
     "        pass\n", {"m:Net": ((), ())}),
    # required arguments stay missing; private and nested-in-function classes are skipped
    ("class _P(nn.Module):\n    pass\ndef f():\n    class L(nn.Module):\n        pass\n"
     "class R(nn.Module):\n    def __init__(self, a, *, b, c=1):\n        pass\n",
     {"m:R": ((), ("a", "b"))}),
    # a config dataclass with defaults is built from them
    ("@dataclass\nclass C:\n    x: int = 1\nclass G(nn.Module):\n"
     "    def __init__(self, cfg: C):\n        pass\n",
     {"m:G": ((("cfg", '{ _target_ = "m:C" }'),), ())}),
    # ...but not one with a required field
    ("@dataclass\nclass C:\n    x: int\nclass G(nn.Module):\n    def __init__(self, cfg: C):\n"
     "        pass\n", {"m:G": ((), ("cfg",))}),
])
def test_discover(tmp_path: Path, source: str, expected: dict) -> None:
    (tmp_path / "m.py").write_text("from torch import nn\n" + source, encoding="utf-8")
    survey = discover(tmp_path, [], {})
    assert {c.target: (c.kwargs, c.missing) for c in survey.candidates} == expected


# -- stdin is not a terminal, or is one ----------------------------------------------------


def test_without_a_terminal_entries_needing_arguments_are_commented(models: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "init"], cwd=models.root,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _pyproject(models) == PYPROJECT + APPENDED
    assert "1 left commented out with a TODO" in proc.stdout


def _converse(cwd: Path, argv: list[str], script: list[tuple[str, str]],
              timeout: float = 240) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal; for each (prompt, answer) wait for the prompt, type the
    answer. Returns the exit code and everything the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
    os.close(slave)
    shown, seen, deadline = b"", 0, time.monotonic() + timeout
    steps = iter(script)
    step = next(steps, None)
    try:
        while True:
            if step is not None and step[0].encode() in shown[seen:]:
                seen = shown.index(step[0].encode(), seen) + len(step[0])
                os.write(master, step[1].encode() + b"\n")
                step = next(steps, None)
                continue
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"timed out waiting for {step}; the terminal shows:\n"
                                     + shown.decode(errors="replace"))
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    code = proc.wait(timeout=60)
    assert step is None, f"never asked {step[0]!r}:\n{shown.decode(errors='replace')}"
    return code, shown.decode(errors="replace").replace("\r\n", "\n")


def test_interactive_asks_for_required_arguments(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        ("  width = ", "wide"),  # not TOML: asked again
        ("  width = ", "32"),
        ("append 3 model(s) to pyproject.toml? [Y/n] ", ""),
    ])
    assert code == 0, screen
    assert "pkg.model:Wide (pkg/model.py:27) needs width" in screen
    assert "not a TOML value" in screen
    assert _pyproject(models) == PYPROJECT + APPENDED.split("# TODO")[0] + \
        '[[tool.ckptlint.models]]\nname = "wide"\ntarget = "pkg.model:Wide"\n' \
        'kwargs = { width = 32 }\n'
    assert "wrote signatures/wide.toml" in screen
    assert models.run("check").code == 0


def test_interactive_empty_answer_leaves_the_entry_commented(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        ("  width = ", ""),
        ("? [Y/n] ", "y"),
    ])
    assert code == 0, screen
    assert _pyproject(models) == PYPROJECT + APPENDED


def test_interactive_no_writes_nothing(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        ("  width = ", "32"),
        ("? [Y/n] ", "n"),
    ])
    assert code == 0 and "nothing written" in screen, screen
    assert _pyproject(models) == PYPROJECT
