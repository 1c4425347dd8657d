"""The no-op cache: what a warm run skips, what invalidates it, and that it is never trusted blindly.

Plain `ckptlint check` is answered by `ckptlint.run.replay` first; the per-model cache tests add
`--color never` so that they exercise the cache underneath it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ckptlint.core.constants import CACHE_DIRECTORY, CACHE_VERSION

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
    first = _check(project)
    assert first.code == 0 and _built(first) == {"A", "B"}
    return project


def _check(project, *extra: str):
    return project.run("check", "--color", "never", *extra)


def _built(run) -> set[str]:
    return {line.split()[-1] for line in run.err.splitlines() if line.startswith("building ")}


def test_warm_run_builds_nothing_and_leaves_a_tagged_ignored_directory(cached):
    run = _check(cached)
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
    run = _check(cached)
    assert (run.code, _built(run)) == (0, rebuilt)


def test_failing_state_is_recomputed_every_time(cached):
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))
    for _ in range(2):
        run = _check(cached)
        assert run.code == 1 and _built(run) == {"B"} and "CKL103" in run.out


def test_corrupt_entry_is_ignored_and_rebuilt(cached):
    entry = cached.root / CACHE_DIRECTORY / CACHE_VERSION / "a.json"
    entry.write_text("{not json")
    run = _check(cached)
    assert (run.code, _built(run)) == (0, {"A"})
    assert json.loads(entry.read_text())["inputs"]["files"]
    doc = json.loads(entry.read_text())
    doc["inputs"]["files"]["a.py"] = "0" * 64  # a forged hash is not trusted either
    entry.write_text(json.dumps(doc))
    assert _built(_check(cached)) == {"A"}


def test_no_cache_flag_and_environment_variable(cached, monkeypatch):
    assert _built(_check(cached, "--no-cache")) == {"A", "B"}
    monkeypatch.setenv("CKPTLINT_NO_CACHE", "1")
    assert _built(_check(cached)) == {"A", "B"}


def test_cached_run_imports_neither_torch_nor_libcst(cached):
    code = textwrap.dedent('''
        import sys
        from ckptlint.commands.cli import main
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
    code = ("import sys, contextlib, io\nfrom ckptlint.commands.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'libcst'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parallel_workers_give_the_same_report(cached):
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))
    serial = _check(cached, "--no-cache", "--format", "json")
    parallel = _check(cached, "--no-cache", "--format", "json", "-j", "2")
    assert json.loads(parallel.out) == json.loads(serial.out)
    assert parallel.code == serial.code == 1


# -- replaying the last clean plain `ckptlint check` --------------------------------------------

def _plain(project, **env: str):
    code = ("import sys\nfrom ckptlint.commands.cli import main\ncode = main(['check'])\n"
            "print(code, 'ckptlint.run.engine' in sys.modules, 'dataclasses' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                         text=True, env={**__import__("os").environ, **env})
    *printed, last = out.stdout.splitlines()
    code, engine, dataclasses = last.split()
    return int(code), engine == "True" or dataclasses == "True", "\n".join(printed)


def test_plain_check_replays_the_last_clean_run_without_loading_ckptlint(cached):
    # a plain run records (in a fresh interpreter: an in-process run's forked builds also key
    # every module the test process happens to hold, which other tests may delete)
    assert _plain(cached)[0] == 0
    code, loaded, printed = _plain(cached)
    assert (code, loaded) == (0, False)
    assert printed == "All clear: 2 models match their committed signatures."
    code, loaded, printed = _plain(cached, FORCE_COLOR="1")
    assert (code, loaded) == (0, False) and printed.startswith("\x1b[1;32mAll clear")


@pytest.mark.parametrize("change", [
    lambda p: p.write("common.py", COMMON + "# touched\n"),
    lambda p: p.configure(A, B + "\nkwargs = { n = 4 }"),
    lambda p: (p.root / "signatures" / "old.toml").write_text("[signature]\nformat = 1\n"),
    lambda p: (p.root / "signatures" / "a.toml").write_text(
        (p.root / "signatures" / "a.toml").read_text() + "\n"),
])
def test_any_changed_input_stops_the_replay(cached, change):
    cached.run("check")
    change(cached)
    code, loaded, _ = _plain(cached)
    assert loaded and code == 0


@pytest.mark.parametrize("env", [{"CKPTLINT_NO_CACHE": "1"}, {"CKPTLINT_PYTHON": sys.executable},
                                 {"GITHUB_ACTIONS": "true"}])
def test_environment_that_changes_the_run_stops_the_replay(cached, env):
    cached.run("check")
    assert _plain(cached, **env)[1]


def test_a_failing_run_is_never_replayed(cached):
    cached.run("check")
    cached.write("b.py", MODEL_B.replace("(n, 2)", "(n, 3)"))
    assert cached.run("check").code == 1
    cached.write("b.py", MODEL_B)  # back to the recorded state: replay is fine again
    code, loaded, _ = _plain(cached)
    assert code == 0


def test_a_data_file_the_model_reads_is_an_input(project):
    project.write("cfgmodel.py", '''
        import json
        from pathlib import Path

        from torch import nn


        class M(nn.Module):
            def __init__(self):
                super().__init__()
                width = json.loads((Path(__file__).parent / "cfg.json").read_text())["d"]
                self.lin = nn.Linear(width, 2)
        ''')
    project.write("cfg.json", '{"d": 8}')
    project.configure('name = "m"\ntarget = "cfgmodel:M"')
    project.run("update")
    assert project.run("check").code == 0
    assert "cfg.json" in (project.root / CACHE_DIRECTORY / CACHE_VERSION / "m.json").read_text()
    project.write("cfg.json", '{"d": 12}')
    run = project.run("check")
    assert run.code == 1 and "CKL103" in run.out


def test_a_sharded_checkpoint_folder_is_answered_from_the_cache(project):
    """A clean result whose report carries a note (how the folder was read) is cached with
    it: the next check builds nothing, imports no torch, and says the note again."""
    import torch
    from safetensors.torch import save_file

    project.write("c.py", "from torch import nn\n\n\nclass C(nn.Module):\n"
                          "    def __init__(self):\n        super().__init__()\n"
                          "        self.a = nn.Linear(2, 2)\n        self.b = nn.Linear(2, 2)\n")
    folder = project.root / "ckpt"
    folder.mkdir()
    state = {"a.weight": torch.zeros(2, 2), "a.bias": torch.zeros(2),
             "b.weight": torch.zeros(2, 2), "b.bias": torch.zeros(2)}
    save_file({k: v for k, v in state.items() if k.startswith("a.")}, folder / "m-1.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("b.")}, folder / "m-2.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        k: "m-1.safetensors" if k.startswith("a.") else "m-2.safetensors" for k in state}}))
    project.configure('name = "c"\ntarget = "c:C"\ncheckpoints = ["ckpt"]')
    assert project.run("update").code == 0
    code = textwrap.dedent('''
        import sys
        from ckptlint.commands.cli import main
        code = main(["check", "--format", "json"])
        print(code, sorted({m.split(".")[0] for m in sys.modules} & {"torch", "libcst"}))
        ''')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True,
                           text=True, env=env) for _ in range(2)]
    assert runs[0].stdout.splitlines()[-1] == "0 ['torch']", runs[0].stdout + runs[0].stderr
    assert runs[1].stdout.splitlines()[-1] == "0 []", runs[1].stdout + runs[1].stderr
    cold, warm = (json.loads("\n".join(r.stdout.splitlines()[:-1])) for r in runs)
    assert warm["models"][0]["notes"] == cold["models"][0]["notes"] != []
