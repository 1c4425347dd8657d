"""A damaged, hostile or unwritable cache is never trusted and never a traceback.

Whatever sits where the cache expects its own files, `check` of code that drifted reports the
drift (exit 1), and a cache it cannot use is one warning on stderr, not a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptlint.core.constants import CACHE_DIRECTORY, CACHE_VERSION
from tests.conftest import Project

MODEL = "from torch import nn\n\n\nclass M(nn.Module):\n    def __init__(self):\n" \
        "        super().__init__()\n        self.fc = nn.Linear(4, {})\n"


def _ready(project) -> None:
    project.write("m.py", MODEL.format(2))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    assert project.run("check").code == 0
    assert project.run("check", "--color", "never").code == 0


def _drift_is_reported(project, *options: str) -> None:
    project.write("m.py", MODEL.format(3))
    run = project.run("check", *options)
    assert run.code == 1 and "CKL103" in run.out, (run.out, run.err)
    assert "Traceback" not in run.err


# -- what can be done to a file ---------------------------------------------------------------

def _flip(data: bytes, at: int) -> bytes:
    if not data:
        return b"\xff"
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:]


def _retype(doc, path: list[int]):
    """Replace one value deep in the document with a value of another type."""
    if isinstance(doc, dict) and doc:
        key = sorted(doc)[path[0] % len(doc)] if path else None
        if key is not None:
            if len(path) > 1 and isinstance(doc[key], (dict, list)):
                doc[key] = _retype(doc[key], path[1:])
            else:
                doc[key] = [None] if isinstance(doc[key], str) else "x"
    elif isinstance(doc, list) and doc:
        i = path[0] % len(doc) if path else 0
        doc[i] = {"x": 1}
    return doc


CORRUPTIONS = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=256)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.integers(0, 10**6)),
    st.tuples(st.just("retype"), st.lists(st.integers(0, 50), min_size=1, max_size=4)),
    st.tuples(st.just("drop-inputs"), st.sampled_from(["files", "env", "paths", "listings"])),
    st.tuples(st.just("directory"), st.none()),
    st.tuples(st.just("symlink"), st.none()),
    st.tuples(st.just("deep"), st.integers(1000, 200_000)),
)


def _corrupt(path, how, arg, elsewhere) -> None:
    data = path.read_bytes()
    path.unlink()
    if how == "bytes":
        path.write_bytes(arg)
    elif how == "truncate":
        path.write_bytes(data[:int(len(data) * arg)])
    elif how == "flip":
        path.write_bytes(_flip(data, arg))
    elif how == "retype":
        path.write_text(json.dumps(_retype(json.loads(data), arg)))
    elif how == "drop-inputs":
        doc = json.loads(data)
        doc.get("inputs", {})[arg] = {}  # an entry that claims to depend on nothing
        path.write_text(json.dumps(doc))
    elif how == "directory":
        path.mkdir()
    elif how == "symlink":
        elsewhere.write_bytes(data)  # a copy of the good file, outside the project
        path.symlink_to(elsewhere)
    else:
        path.write_text("[" * arg)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=CORRUPTIONS, record=CORRUPTIONS)
def test_corrupted_cache_and_replay_files_never_hide_drift(project, tmp_path_factory, entry,
                                                            record):
    shutil.rmtree(project.root, ignore_errors=True)
    project.root.mkdir()
    _ready(project)
    folder = project.root / CACHE_DIRECTORY / CACHE_VERSION
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    _corrupt(folder / "m.json", *entry, elsewhere / "entry.json")
    _corrupt(folder / "last-clean-check.json", *record, elsewhere / "record.json")
    _drift_is_reported(project)            # the replay first
    _drift_is_reported(project, "--color", "never")  # then the per-model cache


@pytest.mark.parametrize("what", ["top is a file", "top is a symlink", "version is a file",
                                  "version is a symlink"])
def test_cache_folders_that_are_not_folders(project, tmp_path_factory, what):
    _ready(project)
    top = project.root / CACHE_DIRECTORY
    outside = tmp_path_factory.mktemp("outside")
    target = top if what.startswith("top") else top / CACHE_VERSION
    shutil.copytree(target, outside / "copy")
    shutil.rmtree(target)
    if what.endswith("file"):
        target.write_text("not a folder")
    else:
        target.symlink_to(outside / "copy")
    _drift_is_reported(project, "--color", "never")
    run = project.run("check", "--color", "never")
    assert "cannot be used as the cache" in run.err or "cannot write the cache" in run.err
    assert sorted(p.name for p in (outside / "copy").rglob("*")) == \
        sorted(p.name for p in (outside / "copy").rglob("*"))  # nothing new written there
    before = {p: p.stat().st_mtime_ns for p in (outside / "copy").rglob("*")}
    project.run("check")
    assert {p: p.stat().st_mtime_ns for p in (outside / "copy").rglob("*")} == before


def test_a_read_only_project_checks_without_the_cache(tmp_path):
    """Root ignores permissions: the check runs as `nobody` in a tree it cannot write."""
    from tests.test_failures import as_unprivileged  # one way to drop privileges, shared

    root = Path(tempfile.mkdtemp(prefix="ckptlint-shared-"))
    root.chmod(0o777)
    project = Project(root)
    try:
        project.write("m.py", MODEL.format(2))
        project.configure('name = "m"\ntarget = "m:M"')
        assert as_unprivileged(project, "update").code == 0
        assert as_unprivileged(project, "check").code == 0
        project.write("m.py", MODEL.format(3))
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        for argv in (["check"], ["check", "--color", "never"]):
            run = as_unprivileged(project, *argv)
            assert run.code == 1 and "CKL103" in run.out, (run.out, run.err)
            assert "Traceback" not in run.err
        fresh = as_unprivileged(project, "check", "--no-cache")
        assert fresh.code == 1
    finally:
        for path in [root, *root.rglob("*")]:
            os.chmod(path, 0o777)
        shutil.rmtree(root)
