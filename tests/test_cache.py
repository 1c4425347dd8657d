"""The no-op cache: what a warm run skips, what invalidates it, and that it is never trusted blindly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

COMMON = "from torch import nn\n\n\ndef layer(n):\n    return nn.Linear(n, n)\n"
MODEL_A = '''
from torch import nn

from common import layer


class A(nn.Module):
    def __init__(self, n=4):
        super().__init__()
        print("building A")
        self.fc = layer(n)
'''
MODEL_B = '''
from torch import nn


class B(nn.Module):
    def __init__(self, n=4):
        super().__init__()
        print("building B")
        self.fc = nn.Linear(n, 2)
'''
A = 'name = "a"\ntarget = "a:A"'
B = 'name = "b"\ntarget = "b:B"'


@pytest.fixture
def cached(project):
    project.write("common.py", COMMON)
    project.write("a.py", MODEL_A)
    project.write("b.py", MODEL_B)
    project.configure(A, B)
    assert project.run("update").code == 0
    first = project.run("check")
    assert first.code == 0 and _built(first) == {"A", "B"}
    return project


def _built(run) -> set[str]:
    return {line.split()[-1] for line in run.err.splitlines() if line.startswith("building ")}


def test_warm_run_builds_nothing_and_leaves_a_tagged_ignored_directory(cached):
    run = cached.run("check")
    assert (run.code, _built(run)) == (0, set())
    assert run.out == "All clear: 2 models match their committed signatures.\n"
    top = cached.root / ".ckptlint_cache"
    assert (top / ".gitignore").read_text().endswith("*\n")
    assert (top / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


@pytest.mark.parametrize("change,rebuilt", [
    (lambda p: p.write("common.py", COMMON + "# touched\n"), {"A"}),
    (lambda p: p.write("a.py", MODEL_A + "\n# touched\n"), {"A"}),
    (lambda p: p.write("b.py", MODEL_B.replace("(n, 2)", "(n, 2)  # same")), {"B"}),
    (lambda p: p.configure(A, B + "\nkwargs = { n = 4 }"), {"B"}),
    (lambda p: (p.root / "signatures" / "a.toml").write_text(
        (p.root / "signatures" / "a.toml").read_text() + "\n"), {"A"}),
])
def test_each_input_invalidates_exactly_its_model(cached, change, rebuilt):
    change(cached)
    run = cached.run("check")
    assert (run.code, _built(run)) == (0, rebuilt)


def test_failing_state_is_recomputed_every_time(cached):
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))
    for _ in range(2):
        run = cached.run("check")
        assert run.code == 1 and _built(run) == {"B"} and "CKL103" in run.out


def test_corrupt_entry_is_ignored_and_rebuilt(cached):
    entry = cached.root / ".ckptlint_cache" / "v1" / "a.json"
    entry.write_text("{not json")
    run = cached.run("check")
    assert (run.code, _built(run)) == (0, {"A"})
    assert json.loads(entry.read_text())["files"]
    doc = json.loads(entry.read_text())
    doc["files"]["a.py"] = "0" * 64  # a forged hash is not trusted either
    entry.write_text(json.dumps(doc))
    assert _built(cached.run("check")) == {"A"}


def test_no_cache_flag_and_environment_variable(cached, monkeypatch):
    assert _built(cached.run("check", "--no-cache")) == {"A", "B"}
    monkeypatch.setenv("CKPTLINT_NO_CACHE", "1")
    assert _built(cached.run("check")) == {"A", "B"}


def test_cached_run_imports_neither_torch_nor_libcst(cached):
    code = textwrap.dedent('''
        import sys
        from ckptlint.cli import main
        code = main(["check"])
        print(code, sorted({m.split(".")[0] for m in sys.modules} & {"torch", "libcst"}))
        ''')
    out = subprocess.run([sys.executable, "-c", code], cwd=cached.root, capture_output=True,
                         text=True, check=True)
    assert out.stdout.splitlines()[-1] == "0 []"
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))  # the control: now it must build
    out = subprocess.run([sys.executable, "-c", code], cwd=cached.root, capture_output=True,
                         text=True)
    assert out.stdout.splitlines()[-1] == "1 ['libcst', 'torch']"


def test_help_imports_neither_torch_nor_libcst():
    code = ("import sys, contextlib, io\nfrom ckptlint.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'libcst'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parallel_workers_give_the_same_report(cached):
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))
    serial = cached.run("check", "--no-cache", "--format", "json")
    parallel = cached.run("check", "--no-cache", "--format", "json", "-j", "2")
    assert json.loads(parallel.out) == json.loads(serial.out)
    assert parallel.code == serial.code == 1
