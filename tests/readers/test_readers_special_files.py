"""Only regular files where a file is expected: no read may block or never end.

A named pipe without a writer blocks the reader forever (a hung pre-commit hook or CI job),
`/dev/zero` never ends. Each is refused with a sentence before it is opened.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptlint.core.errors import CheckpointError, SignatureFileError
from ckptlint.readers import NotRegularFile, file_kind, open_regular, read_checkpoint
from ckptlint.readers.sigtoml import read_signature


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "x.pt"
    os.mkfifo(path)
    return path


def test_inspect_on_a_fifo_returns_at_once(fifo: Path) -> None:
    """`mkfifo x.pt; ckptlint inspect x.pt` used to block forever."""
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "inspect", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (f"ckptlint: error: {fifo}: is a named pipe (FIFO), not a checkpoint "
                           "file: ckptlint reads only regular files and checkpoint folders\n")


@pytest.mark.parametrize("kind", ["fifo", "socket", "char-device"])
def test_special_files_are_refused_by_kind(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "weights.safetensors"
    if kind == "fifo":
        os.mkfifo(path)
        said = "a named pipe (FIFO)"
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        said = "a socket"
    else:
        path.symlink_to("/dev/zero")  # followed once: what it points to is judged
        said = "a character device"
    with pytest.raises(CheckpointError, match=rf"weights.safetensors: is {re.escape(said)}, "
                                              "not a checkpoint file"):
        read_checkpoint(path)
    with pytest.raises(NotRegularFile):
        open_regular(path)
    if kind == "socket":
        server.close()


def test_symlink_loop_is_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "a.pt").symlink_to(tmp_path / "b.pt")
    (tmp_path / "b.pt").symlink_to(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="a.pt: is a symbolic link that loops back on itself"):
        read_checkpoint(tmp_path / "a.pt")


def test_symlink_to_a_checkpoint_is_followed(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "real.pt")
    (tmp_path / "link.pt").symlink_to(tmp_path / "real.pt")
    assert set(read_checkpoint(tmp_path / "link.pt").signature.tensors) == {"w"}
    assert file_kind(tmp_path / "link.pt") == "file" and file_kind(tmp_path) == "folder"


def test_a_fifo_in_a_folder_is_never_chosen(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="holds no checkpoint ckptlint recognises"):
        read_checkpoint(tmp_path)
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    assert set(read_checkpoint(tmp_path).signature.tensors) == {"w"}


def test_a_fifo_named_as_a_shard_is_refused(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(1)}, tmp_path / "one.safetensors")
    os.mkfifo(tmp_path / "two.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}))
    with pytest.raises(CheckpointError, match="two.safetensors: is a named pipe"):
        read_checkpoint(index)


def test_a_fifo_as_the_index_or_dcp_metadata_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.safetensors.index.json")
    with pytest.raises(CheckpointError, match="index.json: is a named pipe"):
        read_checkpoint(tmp_path / "model.safetensors.index.json")
    dcp = tmp_path / "dcp"
    dcp.mkdir()
    os.mkfifo(dcp / ".metadata")
    with pytest.raises(CheckpointError, match=r"\.metadata: is a named pipe"):
        read_checkpoint(dcp)


def test_a_folder_where_a_shard_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one.safetensors").mkdir()
    index = tmp_path / "x.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "one.safetensors"}}))
    with pytest.raises(CheckpointError, match="one.safetensors: is a folder, not a checkpoint"):
        read_checkpoint(index)


def test_a_fifo_as_a_signature_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.toml")
    with pytest.raises(SignatureFileError, match="m.toml: is a named pipe"):
        read_signature(tmp_path / "m.toml")
    with pytest.raises(CheckpointError, match="m.toml: is a named pipe"):
        read_checkpoint(tmp_path / "m.toml")


def test_a_fifo_listed_in_checkpoints_is_a_finding(project) -> None:
    project.write("fifo_model.py", "from torch import nn\nclass M(nn.Linear):\n"
                                   "    def __init__(self):\n        super().__init__(1, 1)\n")
    project.configure('name = "m"\ntarget = "fifo_model:M"\ncheckpoints = ["ckpt/old.pt"]')
    (project.root / "ckpt").mkdir()
    os.mkfifo(project.root / "ckpt" / "old.pt")
    project.run("update")
    run = project.run("check", "--no-cache", "--color", "never")
    assert run.code == 2
    assert "CKL206" in run.out and "ckpt/old.pt: is a named pipe (FIFO)" in run.out
