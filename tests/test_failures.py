"""Every failure is one sentence and exit 2: no traceback, nothing written outside, nothing left.

File permissions do not bind root, so the tests that need a folder ckptlint may not write run the
CLI as an unprivileged user (`nobody`) when the suite runs as root, and as the current user
otherwise; either way the project lives in a folder that user can reach.
"""

from __future__ import annotations

import errno
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ckptlint.core.atomic import SCRATCH, STALE_SECONDS, SUFFIX
from ckptlint.run.cache import DIRECTORY
from tests.conftest import REPO, Project, Run

MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(width, 2)
'''
ENTRY = 'name = "net"\ntarget = "models:Net"'


def one_sentence(run: Run, sentence: str) -> None:
    assert run.code == 2, (run.out, run.err)
    assert "Traceback" not in run.out + run.err
    assert run.err == f"ckptlint: error: {sentence}\n"


@pytest.fixture
def shared(tmp_path: Path):
    """A project in a folder an unprivileged user can enter and write (tmp_path's parents are
    private to the user running the tests)."""
    root = Path(tempfile.mkdtemp(prefix="ckptlint-shared-"))
    root.chmod(0o777)
    project = Project(root)
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    yield project
    root.chmod(0o777)  # read-only folders are not removable by their owner unless root
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777)
    shutil.rmtree(root)


def as_unprivileged(project: Project, *argv: str, **kwargs) -> Run:
    """`python -m ckptlint ARGV` as a user whom file permissions bind."""
    command = [sys.executable, "-m", "ckptlint", *argv]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        command = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups", *command]
    env = {**os.environ, "HOME": str(project.root), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(command, cwd=project.root, capture_output=True, text=True,
                          timeout=300, env=env, **kwargs)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def leftovers(project: Project) -> list[str]:
    """Every file ckptlint may have left outside its cache folder's `.gitignore`d scratch."""
    return sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*")
                  if p.name.endswith((SUFFIX, ".tmp")) or ".tmp" in p.name)


# -- 1. a signature file that cannot be written ------------------------------------------------

def test_update_into_a_read_only_signatures_folder(shared):
    (shared.root / "signatures").mkdir(mode=0o555)
    run = as_unprivileged(shared, "update")
    one_sentence(run, "signatures/net.toml: cannot be written (permission denied)")
    assert os.listdir(shared.root / "signatures") == [] and leftovers(shared) == []


def test_update_into_a_read_only_project_that_has_no_signatures_folder(shared):
    shared.root.chmod(0o555)
    run = as_unprivileged(shared, "update")
    one_sentence(run, "signatures/net.toml: cannot be written (permission denied)")
    assert sorted(os.listdir(shared.root)) == ["models.py", "pyproject.toml"]


def test_a_signature_write_that_fails_halfway_leaves_no_temp_file(project):
    """The file-size limit makes the write itself fail (EFBIG), as a full disk (ENOSPC) does."""
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    limit = 64  # bytes: less than the signature file, more than nothing
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "update"], cwd=project.root,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                (limit, limit)))
    one_sentence(Run(proc.returncode, proc.stdout, proc.stderr),
                 "signatures/net.toml: cannot be written (file too large)")
    assert os.listdir(project.root / "signatures") == [] and leftovers(project) == []


def test_a_folder_where_the_signature_file_goes(project):
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    (project.root / "signatures" / "net.toml").mkdir(parents=True)
    one_sentence(project.run("update"), "signatures/net.toml: cannot be written (is a directory)")
    assert leftovers(project) == []


# -- 2. a pyproject.toml that is not UTF-8 -----------------------------------------------------

LATIN1 = '[tool.ckptlint]\n\n[[tool.ckptlint.models]]\nname = "net"  # r\xe9seau\n' \
         'target = "models:Net"\n'.encode("latin-1")


@pytest.mark.parametrize("argv", [["check", "--no-cache"], ["update"], ["inspect", "c.pt"]],
                         ids=["check", "update", "inspect"])
def test_a_pyproject_that_is_not_utf8(project, argv):
    import torch

    project.write("models.py", MODEL)
    (project.root / "pyproject.toml").write_bytes(LATIN1)
    torch.save({"fc.weight": torch.zeros(2, 4)}, project.root / "c.pt")
    one_sentence(project.run(*argv), "pyproject.toml:4: is not UTF-8 text (byte 0xe9 at offset "
                                     f"{LATIN1.index(0xe9)}); TOML files must be saved as UTF-8")


def test_another_projects_pyproject_that_is_not_utf8_is_not_ckptlints_business(project):
    import torch

    (project.root / "pyproject.toml").write_bytes(b'[project]\nname = "caf\xe9"\n')
    torch.save({"fc.weight": torch.zeros(2, 4)}, project.root / "c.pt")
    run = project.run("inspect", "c.pt")
    assert run.code == 0 and "c.pt: torch-zip, 1 tensor," in run.out, run.err


# -- 3. names and the signatures folder --------------------------------------------------------

@pytest.mark.parametrize("signatures,problem", [
    ("../../outside", "goes up with `..`"),
    ("{outside}", "is an absolute path"),
    ("link/sub", "leads outside the project through a symlink (to {outside}/sub)"),
    ("link", "leads outside the project through a symlink (to {outside})"),
])
def test_update_never_writes_outside_the_project(tmp_path, signatures, problem):
    outside = tmp_path / "outside"
    outside.mkdir()
    project = Project(tmp_path / "a" / "b")
    project.write("models.py", MODEL)
    (project.root / "link").symlink_to(outside, target_is_directory=True)
    project.configure(ENTRY, extra=f'signatures = "{signatures.format(outside=outside)}"\n')
    run = project.run("update")
    value = signatures.format(outside=outside)
    one_sentence(run, f"pyproject.toml:5: `tool.ckptlint.signatures` = {value!r} "
                      f"{problem.format(outside=outside)}; it must name a folder inside the "
                      "project, such as \"signatures\"")
    assert list(outside.iterdir()) == [] and not (tmp_path / "outside.toml").exists()


def test_a_long_name_is_refused_before_any_file_is_named_after_it(project):
    project.write("models.py", MODEL)
    project.configure(f'name = "{"n" * 251}"\ntarget = "models:Net"')
    one_sentence(project.run("update"), "pyproject.toml:7: `tool.ckptlint.models[0].name` is "
                                        "251 characters long; a model name (the name of its "
                                        "signature file) may have at most 200")
    assert not (project.root / "signatures").exists()


def test_the_longest_name_allowed_can_be_written(project):
    from ckptlint.config import MAX_NAME_LENGTH

    name = "n" * MAX_NAME_LENGTH
    project.write("models.py", MODEL)
    project.configure(f'name = "{name}"\ntarget = "models:Net"')
    assert project.run("update").out == f"wrote signatures/{name}.toml\n"


# -- 4. kwargs nested deeper than anything walking them can follow -----------------------------

class_with_any_kwargs = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.fc = nn.Linear(4, 2)
'''


def nested_inline(depth: int) -> str:
    return "kwargs = " + "{ a = " * depth + "1" + " }" * depth


@pytest.mark.parametrize("kwargs,sentence", [
    ("kwargs." + ".".join(["a"] * 5000) + " = 1",
     "pyproject.toml:9: `tool.ckptlint.models[0].kwargs` nests tables or arrays more than 32 "
     "levels deep; flatten it"),
    ("kwargs = { a = " + "[" * 5000 + "]" * 5000 + " }",
     "pyproject.toml:9: `tool.ckptlint.models[0]` nests arrays or inline tables too deeply to be "
     "parsed; flatten them"),
    (nested_inline(5000),
     "pyproject.toml:9: `tool.ckptlint.models[0]` nests arrays or inline tables too deeply to be "
     "parsed; flatten them"),
    (nested_inline(33),
     "pyproject.toml:9: `tool.ckptlint.models[0].kwargs` nests tables or arrays more than 32 "
     "levels deep; flatten it"),
], ids=["dotted keys", "arrays", "inline tables", "one level too deep"])
def test_deep_kwargs_are_refused_with_the_entry_and_line(project, kwargs, sentence):
    project.write("models.py", class_with_any_kwargs)
    project.configure(f'{ENTRY}\n{kwargs}')
    one_sentence(project.run("update"), sentence)


def test_kwargs_as_deep_as_allowed_build_and_check(project):
    from ckptlint.config import MAX_KWARGS_DEPTH

    project.write("models.py", class_with_any_kwargs)
    project.configure(f"{ENTRY}\n{nested_inline(MAX_KWARGS_DEPTH)}")
    assert project.run("update").code == 0
    assert project.run("check").code == 0 and project.run("check").code == 0  # cache key too


# -- 5. a run killed between the temp write and the rename -------------------------------------

KILLED_BEFORE_RENAME = '''
import os, signal, sys
real = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("net.toml"):  # the temp file is written and flushed; die now
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from ckptlint.commands.cli import main
sys.exit(main(["update"]))
'''


def killed_update(project: Project) -> int:
    return subprocess.run([sys.executable, "-c", KILLED_BEFORE_RENAME], cwd=project.root,
                          capture_output=True, timeout=300).returncode


def staged(project: Project, *paths: str) -> list[str]:
    git = ["git", "-C", str(project.root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", *paths], check=True)
    return subprocess.run([*git, "diff", "--cached", "--name-only"], check=True,
                          capture_output=True, text=True).stdout.split()


def test_a_killed_update_leaves_nothing_git_add_would_stage(project):
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    assert killed_update(project) == -signal.SIGKILL
    scratch = project.root / DIRECTORY / SCRATCH
    left = [p for p in scratch.iterdir() if p.name != ".gitignore"]
    assert len(left) == 1 and left[0].name.startswith(".net.toml.")  # killed after the write
    assert not (project.root / "signatures" / "net.toml").exists()
    assert staged(project, "signatures/") == []
    assert staged(project, "-A") == ["models.py", "pyproject.toml"]


def test_stale_temp_files_are_removed_on_the_next_run_and_fresh_ones_kept(project):
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    assert killed_update(project) == -signal.SIGKILL
    scratch = project.root / DIRECTORY / SCRATCH
    stale, = [p for p in scratch.iterdir() if p.name != ".gitignore"]
    old = time.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    fresh = scratch / f".other.toml.abcdefgh{SUFFIX}"  # a concurrent run's, mid-write
    fresh.write_text("")
    assert project.run("update").out == "wrote signatures/net.toml\n"
    assert not stale.exists() and fresh.exists()


def test_without_a_cache_folder_the_temp_file_is_named_for_gitignore_and_swept(project):
    """`.ckptlint_cache` is a file: the temp file goes next to the signature, under the name the
    README's .gitignore advice covers, and the next run removes it once stale."""
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    (project.root / DIRECTORY).write_text("not a folder")
    assert killed_update(project) == -signal.SIGKILL
    left, = (project.root / "signatures").iterdir()
    assert left.name.startswith(".net.toml.") and left.name.endswith(SUFFIX)
    assert f"*{SUFFIX}" in (REPO / "README.md").read_text(encoding="utf-8")
    old = time.time() - STALE_SECONDS - 60
    os.utime(left, (old, old))
    assert project.run("update").out == "wrote signatures/net.toml\n"
    assert os.listdir(project.root / "signatures") == ["net.toml"]


def test_the_file_reaches_the_disk_before_the_rename_and_the_rename_after(project, monkeypatch):
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert project.run("update").code == 0
    written = (project.root / "signatures" / "net.toml").stat().st_ino
    folder = (project.root / "signatures").stat().st_ino
    at = events.index(("replace", written))
    assert ("fsync", written) in events[:at] and ("fsync", folder) in events[at:]


# -- 6. code frames of tab-indented code -------------------------------------------------------

def test_the_caret_of_tab_indented_code_is_under_the_statement(project):
    source = "from torch import nn\n\n\nclass Net(nn.Module):\n\tdef __init__(self, width=4):\n" \
             "\t\tsuper().__init__()\n\t\tself.fc = nn.Linear(width, 2)\n"
    (project.root / "models.py").write_text(source)
    project.configure(ENTRY)
    assert project.run("update").code == 0
    (project.root / "models.py").write_text(source.replace("width, 2", "width, 3"))
    run = project.run("check", "--color", "never")
    assert run.code == 1
    assert "models.py:7:3: CKL103" in run.out
    shown = " " * 8 + "self.fc = nn.Linear(width, 3)"
    frame = [line for line in run.out.splitlines() if line.startswith(("7 |", "  |"))]
    assert frame[1] == f"7 | {shown}"
    assert frame[2] == f"  | {' ' * 8}{'^' * len(shown.strip())}"


# -- 7. reports that cannot be written, closed pipes -------------------------------------------

def test_a_report_into_a_read_only_folder(shared):
    assert as_unprivileged(shared, "update").code == 0
    (shared.root / "reports").mkdir(mode=0o555)
    run = as_unprivileged(shared, "check", "--format", "sarif:reports/x.sarif")
    one_sentence(run, "reports/x.sarif: cannot write the sarif report (permission denied)")
    assert os.listdir(shared.root / "reports") == []


def test_a_closed_stdout(project):
    project.write("models.py", MODEL)
    project.configure(ENTRY)
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "ckptlint", "update"], cwd=project.root,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    one_sentence(Run(proc.returncode, "", proc.stderr),
                 "the output was closed before the report was written (a closed pipe)")


def test_init_into_a_read_only_project(shared):
    shared.write("pyproject.toml", '[project]\nname = "fixture"\n')
    shared.root.chmod(0o555)
    run = as_unprivileged(shared, "init", "-y")
    one_sentence(run, "pyproject.toml: cannot be written (permission denied)")


# -- 8. the boundary: whatever escapes a command is one sentence and exit 2 ---------------------

@pytest.mark.parametrize("exc,sentence", [
    (PermissionError(errno.EACCES, "Permission denied", "/srv/x/y.toml"),
     "/srv/x/y.toml: permission denied"),
    (FileExistsError(errno.EEXIST, "File exists", "a", None, "b"), "a: file exists (and b)"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "a file that must be UTF-8 text is not (byte 0xff at offset 0); run with --debug to see "
     "which"),
    (RecursionError("maximum recursion depth exceeded"),
     "an input nests too deeply to be processed; run with --debug to see which"),
    (MemoryError(), "ran out of memory; run with --debug to see where"),
    (SystemExit(1), "code run while building the models (an import, a constructor) called "
                    "sys.exit(1)"),
    (KeyError("x"), "unexpected KeyError: 'x'; this is a bug in ckptlint, please report it with "
                    "the output of --debug"),
], ids=["PermissionError", "two paths", "no path", "UnicodeDecodeError", "RecursionError",
        "MemoryError", "sys.exit", "a bug"])
def test_anything_escaping_a_command_is_one_sentence_and_exit_2(project, monkeypatch, exc,
                                                                sentence):
    from ckptlint.commands import rules

    def fail(args):
        raise exc

    monkeypatch.setattr(rules, "run", fail)
    one_sentence(project.run("rules"), sentence)
    debug = project.run("rules", "--debug")
    assert debug.code == 2 and "Traceback" in debug.err
    assert debug.err.endswith(f"ckptlint: error: {sentence}\n")
