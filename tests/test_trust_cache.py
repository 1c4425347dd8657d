"""The cache and the replay notice every input of a build: each test changes one input and
`check` must not answer from the cache (the drift is reported).

Bytecode caching is on here, as on users' machines (these machines set
PYTHONDONTWRITEBYTECODE=1, which would hide a tracker that sees only `.pyc` files): in-process
runs turn `sys.dont_write_bytecode` off for the forked build, and one test runs the real CLI in
a fresh interpreter with the variable unset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ckptlint.core.constants import CACHE_DIRECTORY, CACHE_VERSION


@pytest.fixture(autouse=True)
def bytecode_on(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def _model(body: str, head: str = "") -> str:
    return (f"{head}from torch import nn\n\n\nclass M(nn.Module):\n    def __init__(self):\n"
            f"        super().__init__()\n        print('building M')\n        {body}\n")


def _recorded(project, change):
    """Record a signature, check until the cache answers, change one input, check again."""
    assert project.run("update").code == 0
    assert project.run("check").code == 0
    warm = project.run("check")
    assert (warm.code, "building M" in warm.err) == (0, False), "not answered from the cache"
    assert project.run("check", "--color", "never").code == 0  # the per-model cache too
    change()
    plain, cached = project.run("check"), project.run("check", "--color", "never")
    return plain, cached


def _drifted(*runs) -> None:
    for run in runs:
        assert run.code == 1 and "building M" in run.err, (run.out, run.err)
        assert "CKL103" in run.out or "CKL101" in run.out or "CKL102" in run.out


def test_a_constant_imported_from_another_module(project):
    project.write("pkg/__init__.py", "")
    project.write("pkg/consts.py", "HIDDEN = 24\n")
    project.write("m.py", _model("self.fc = nn.Linear(HIDDEN, 2)",
                                 "from pkg.consts import HIDDEN\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    _drifted(*_recorded(project, lambda: project.write("pkg/consts.py", "HIDDEN = 25\n")))


def test_imports_inside_functions_and_through_import_module(project):
    project.write("pkg/__init__.py", "")
    project.write("pkg/width.py", "W = 3\n")
    project.write("pkg/depth.py", "D = 2\n")
    project.write("m.py", _model(
        "import importlib\n        from pkg.width import W\n"
        "        D = importlib.import_module('pkg.depth').D\n"
        "        self.fc = nn.Linear(W, D)"))
    project.configure('name = "m"\ntarget = "m:M"')
    _drifted(*_recorded(project, lambda: project.write("pkg/depth.py", "D = 5\n")))
    project.write("pkg/depth.py", "D = 2\n")
    _drifted(*_recorded(project, lambda: project.write("pkg/width.py", "W = 4\n")))


def test_a_module_an_earlier_model_already_imported(project):
    project.write("shared.py", "N = 4\n")
    project.write("first.py", _model("self.fc = nn.Linear(N, 1)", "from shared import N\n")
                  .replace("class M", "class First").replace("building M", "building First"))
    project.write("m.py", _model("self.fc = nn.Linear(N, 2)", "from shared import N\n"))
    project.configure('name = "first"\ntarget = "first:First"', 'name = "m"\ntarget = "m:M"')
    plain, cached = _recorded(project, lambda: project.write("shared.py", "N = 5\n"))
    _drifted(plain, cached)
    assert "m:" in cached.out or "`m`" in cached.out or "m (signatures/m.toml)" in cached.out


def test_an_edit_made_while_check_runs_is_not_cached_as_clean(project):
    project.write("width.py", "W = 4\n")
    # the build itself "saves" an edit once, after it imported the old value
    project.write("m.py", _model(
        "self.fc = nn.Linear(W, 2)\n"
        "        import pathlib\n"
        "        marker = pathlib.Path(__file__).with_name('edited')\n"
        "        if pathlib.Path('armed').exists() and not marker.exists():\n"
        "            marker.touch()\n"
        "            pathlib.Path(__file__).with_name('width.py').write_text('W = 5\\n')",
        "from width import W\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    (project.root / "armed").touch()
    during = project.run("check")
    assert during.code == 0  # it built with W = 4, as it read it
    assert (project.root / "edited").exists()
    after = project.run("check")
    _drifted(after)


def test_an_environment_variable_the_model_reads(project, monkeypatch):
    project.write("m.py", _model("self.fc = nn.Linear(int(os.environ.get('WIDTH', '4')), 2)",
                                 "import os\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    _drifted(*_recorded(project, lambda: monkeypatch.setenv("WIDTH", "6")))


def test_a_module_in_a_pythonpath_folder_outside_the_root(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "widths.py").write_text("W = 4\n")
    root = project.root / "proj"
    root.mkdir()
    inner = type(project)(root)
    inner.write("m.py", _model("self.fc = nn.Linear(W, 2)", "from widths import W\n"))
    inner.configure('name = "m"\ntarget = "m:M"', extra=f'pythonpath = ["{outside}"]\n')
    _drifted(*_recorded(inner, lambda: (outside / "widths.py").write_text("W = 5\n")))


def test_a_module_that_did_not_exist(project):
    project.write("pkg/__init__.py", "")
    project.write("m.py", _model(
        "self.fc = nn.Linear(W, 2)",
        "try:\n    from pkg.custom import W\nexcept ImportError:\n    W = 4\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    _drifted(*_recorded(project, lambda: project.write("pkg/custom.py", "W = 7\n")))


def test_a_file_guarded_by_os_path_exists(project):
    project.write("m.py", _model(
        "w = int(open('override.txt').read()) if os.path.exists('override.txt') else 4\n"
        "        self.fc = nn.Linear(w, 2)", "import os\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    _drifted(*_recorded(project, lambda: project.write("override.txt", "9")))


def test_a_large_config_edited_to_the_same_size_with_its_mtime_restored(project):
    filler = " " * (2 << 20)
    project.write("cfg.json", json.dumps({"w": 4, "pad": filler}))
    project.write("m.py", _model("self.fc = nn.Linear(json.load(open('cfg.json'))['w'], 2)",
                                 "import json\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    path = project.root / "cfg.json"
    old = os.stat(path)
    time.sleep(2.1)  # past the racy window: the cache keys it by its stat fingerprint

    def edit() -> None:
        path.write_text(json.dumps({"w": 5, "pad": filler}))
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        assert os.stat(path).st_size == old.st_size

    time.sleep(0)
    _drifted(*_recorded(project, edit))


def test_an_installed_package_upgraded_in_place(project, tmp_path_factory):
    """A non-editable install, upgraded with pip: keyed by its distribution's RECORD."""
    site = tmp_path_factory.mktemp("env") / "site-packages"
    source = tmp_path_factory.mktemp("src")

    def install(width: int) -> None:
        (source / "tinypkg").mkdir(exist_ok=True)
        (source / "tinypkg" / "__init__.py").write_text(
            f"from torch import nn\n\n\ndef layer():\n    return nn.Linear(4, {width})\n")
        (source / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "tinypkg"\nversion = "1.0.{width}"\n')
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "--upgrade", "--target", str(site), str(source)],
                       check=True, capture_output=True)

    install(4)
    project.write("m.py", _model("self.fc = layer()", "from tinypkg import layer\n"))
    project.configure('name = "m"\ntarget = "m:M"', extra=f'pythonpath = ["{site}"]\n')
    plain, cached = _recorded(project, lambda: install(8))
    _drifted(plain, cached)
    entry = json.loads((project.root / CACHE_DIRECTORY / CACHE_VERSION / "m.json").read_text())
    assert any(p.endswith(".dist-info/RECORD") and "/tinypkg-1.0." in p
               for p in entry["inputs"]["files"])


def test_the_interpreter_chosen_is_keyed(project, tmp_path_factory):
    project.write("m.py", _model("self.fc = nn.Linear(4, 2)"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    assert project.run("check").code == 0
    shim = tmp_path_factory.mktemp("other") / "python"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    os.environ["CKPTLINT_PYTHON"] = str(shim)
    try:
        run = project.run("check", "--color", "never")
    finally:
        del os.environ["CKPTLINT_PYTHON"]
    assert run.code == 0 and "building M" in run.err  # built again, by the other interpreter


def test_a_run_under_options_is_never_replayed_as_the_plain_run(project):
    project.write("m.py", _model("self.fc = nn.Linear(4, 2)"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    record = project.root / CACHE_DIRECTORY / CACHE_VERSION / "last-clean-check.json"
    for options in (["--state-dict-key", "model"], ["--exit-zero"], ["-j", "2"],
                    ["--color", "never"], ["--format", "text"]):
        assert project.run("check", *options).code == 0
        assert not record.exists(), options
    assert project.run("check").code == 0
    assert json.loads(record.read_text())["argv"] == ["check"]


def test_the_real_cli_with_bytecode_caching_on(project):
    project.write("pkg/__init__.py", "")
    project.write("pkg/consts.py", "HIDDEN = 24\n")
    project.write("m.py", _model("self.fc = nn.Linear(HIDDEN, 2)",
                                 "from pkg.consts import HIDDEN\n"))
    project.configure('name = "m"\ntarget = "m:M"')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ckptlint", *argv], cwd=project.root,
                              env=env, capture_output=True, text=True, timeout=300)

    assert cli("update").returncode == 0
    assert cli("check").returncode == 0
    assert list((project.root / "pkg" / "__pycache__").glob("consts.*.pyc"))
    warm = cli("check")
    assert warm.returncode == 0 and "building M" not in warm.stderr
    project.write("pkg/consts.py", "HIDDEN = 25\n")
    for run in (cli("check"), cli("check", "--color", "never")):
        assert run.returncode == 1 and "CKL103" in run.stdout


@pytest.mark.parametrize("where", ["entry", "record"])
@pytest.mark.parametrize("what", ["fifo", "directory", "deep", "symlink"])
def test_odd_files_where_the_cache_expects_its_own(project, where, what, tmp_path_factory):
    project.write("m.py", _model("self.fc = nn.Linear(4, 2)"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    assert project.run("check").code == 0
    folder = project.root / CACHE_DIRECTORY / CACHE_VERSION
    path = folder / ("m.json" if where == "entry" else "last-clean-check.json")
    path.unlink()
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    elif what == "deep":
        path.write_text("[" * 100_000)
    else:
        target = tmp_path_factory.mktemp("elsewhere") / "x.json"
        target.write_text("{}")
        path.symlink_to(target)
    project.write("m.py", _model("self.fc = nn.Linear(4, 3)"))
    run = project.run("check")
    assert run.code == 1 and "CKL103" in run.out and "Traceback" not in run.err


def test_a_fifo_listed_as_a_checkpoint_never_hangs_the_cached_check(project):
    project.write("m.py", _model("self.fc = nn.Linear(4, 2)"))
    project.configure('name = "m"\ntarget = "m:M"\ncheckpoints = ["pipe.pt"]')
    os.mkfifo(project.root / "pipe.pt")
    assert project.run("update").code == 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for argv in (["check"], ["check", "--color", "never"]):
        proc = subprocess.run([sys.executable, "-m", "ckptlint", *argv], cwd=project.root,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "CKL206" in proc.stdout, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
