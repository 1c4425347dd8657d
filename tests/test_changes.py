"""What changed since a signature was committed, from real git in temporary repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ckptlint.source import changes
from ckptlint.source.changes import Hunk

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
BEFORE = "".join(f"line{i} = {i}\n" for i in range(1, 11))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env=ENV, capture_output=True, check=True)


def repo(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "m.py").write_text(BEFORE)
    (tmp_path / "sig.toml").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "signature")
    return tmp_path


def edit(root: Path, old: str, new: str) -> None:
    path = root / "m.py"
    path.write_text(path.read_text().replace(old, new))


def test_hunks_of_a_replacement_a_deletion_and_an_insertion(tmp_path):
    root = repo(tmp_path)
    edit(root, "line2 = 2\n", "line2 = 20\n")
    edit(root, "line5 = 5\n", "")
    edit(root, "line8 = 8\n", "line8 = 8\nextra = 0\n")
    found = changes.since(root, "sig.toml", ["m.py"])
    assert found is not None and found.signature == "sig.toml"
    assert found.of("m.py") == (Hunk(2, 1, 2, 1), Hunk(5, 1, 4, 0), Hunk(8, 0, 8, 1))
    # old line 5 was deleted: it maps to the gap after new line 4
    assert found.new_line("m.py", 5) == (4, Hunk(5, 1, 4, 0))
    assert found.new_line("m.py", 7) == (6, None)  # moved up by the deletion, unchanged
    assert found.new_line("m.py", 10) == (10, None)  # and down again by the insertion
    assert found.touched("m.py", 2) and not found.touched("m.py", 3)
    assert found.touched("m.py", 4, 5)  # the deletion falls inside lines 4..5
    assert found.touched("m.py", 8) == Hunk(8, 0, 8, 1)  # `extra = 0`, after new line 7


def test_a_comment_or_indentation_change_is_trivial(tmp_path):
    root = repo(tmp_path)
    edit(root, "line3 = 3\n", "line3 = 3  # why\n")
    found = changes.since(root, "sig.toml", ["m.py"])
    assert found.hunks["m.py"][0].trivial and found.of("m.py") == ()


def test_untracked_files_are_wholly_new_and_none_lists_every_python_file(tmp_path):
    root = repo(tmp_path)
    (root / "new.py").write_text("a = 1\nb = 2\n")
    edit(root, "line1 = 1\n", "line1 = 10\n")
    assert changes.since(root, "sig.toml", ["new.py"]).of("new.py") == (Hunk(0, 0, 1, 2),)
    every = changes.since(root, "sig.toml", None)
    assert set(every.hunks) == {"m.py", "new.py"}


def test_no_answer_for_a_rewritten_or_uncommitted_signature_or_without_git(tmp_path):
    root = repo(tmp_path / "a")
    (root / "sig.toml").write_text("x = 2\n")  # rewritten since its commit: not its origin
    assert changes.since(root, "sig.toml", ["m.py"]) is None
    assert changes.since(root, "other.toml", ["m.py"]) is None  # never committed
    plain = tmp_path / "b"
    plain.mkdir()
    (plain / "m.py").write_text(BEFORE)
    assert changes.since(plain, "sig.toml", ["m.py"]) is None  # no repository


def test_old_text_is_the_committed_file_byte_for_byte(tmp_path):
    root = repo(tmp_path)
    (root / "m.py").write_text("\n\n" + BEFORE)  # leading blank lines shift every line
    git(root, "add", "m.py")
    git(root, "commit", "-q", "-m", "blank lines")
    git(root, "commit", "-q", "--allow-empty", "-m", "later")
    found = changes.since(root, "sig.toml", ["m.py"])
    assert changes.old_text(root, found.commit, "m.py") == BEFORE
    assert found.new_line("m.py", 1) == (3, None)


def test_a_project_in_a_subfolder_of_the_repository(tmp_path):
    outer = tmp_path
    root = outer / "proj"
    root.mkdir()
    (root / "m.py").write_text(BEFORE)
    (root / "sig.toml").write_text("x = 1\n")
    git(outer, "init", "-q")
    git(outer, "add", "-A")
    git(outer, "commit", "-q", "-m", "signature")
    edit(root, "line4 = 4\n", "line4 = 40\n")
    found = changes.since(root, "sig.toml", ["m.py"])
    assert found.of("m.py") == (Hunk(4, 1, 4, 1),)
    assert changes.old_text(root, found.commit, "m.py") == BEFORE
