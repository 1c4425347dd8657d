"""Untrusted text is never printed raw: keys from a checkpoint reach every text output escaped.

A key can hold an ESC sequence that repaints the terminal, a newline followed by a GitHub
Actions workflow command, or a lone surrogate that no UTF-8 stream can carry. Text, github and
markdown output show them escaped (`\\x1b`, `\\n`, `\\ud800`); JSON and SARIF keep them exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckptlint.core.keys import printable

ESC = "fc.weight\x1b[2J\x1b[31mFAKE: All clear"
COMMAND = "x\n::error file=README.md,line=1::pwned"
SURROGATE = "w\ud800"
MODEL = """
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
"""


def _state(*keys: str) -> dict:
    state = {"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}
    state.update({key: torch.zeros(1) for key in keys})
    return state


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text
    assert not any(line.startswith("::error file=README.md") for line in text.splitlines())
    assert all(0xD800 > ord(c) or ord(c) > 0xDFFF for c in text)


@pytest.fixture
def weird(project) -> Path:
    project.write("escaping_model.py", MODEL)
    project.configure('name = "m"\ntarget = "escaping_model:M"')
    path = project.root / "weird.pt"
    torch.save(_state(ESC, COMMAND, SURROGATE), path)
    return path


def test_printable_escapes_only_what_is_not_printable() -> None:
    assert printable("layers.0.attn.q_proj.weight") == "layers.0.attn.q_proj.weight"
    assert printable("ünïcode ключ 键") == "ünïcode ключ 键"
    assert printable(ESC) == "fc.weight\\x1b[2J\\x1b[31mFAKE: All clear"
    assert printable(COMMAND) == "x\\n::error file=README.md,line=1::pwned"
    assert printable(SURROGATE) == "w\\ud800"
    assert printable("a\u202eb\tc\x7f") == "a\\u202eb\\tc\\x7f"  # bidi override, tab, DEL
    assert printable(printable(ESC)) == printable(ESC)


def test_inspect_text_escapes_and_json_keeps_keys_exactly(project, weird: Path) -> None:
    run = project.run_subprocess("inspect", str(weird))
    assert run.code == 0 and run.err == "", run.err
    _assert_inert(run.out)
    assert "fc.weight\\x1b[2J\\x1b[31mFAKE: All clear" in run.out
    assert "x\\n::error file=README.md,line=1::pwned" in run.out and "w\\ud800" in run.out
    doc = project.run_subprocess("inspect", str(weird), "--format", "json")
    assert doc.code == 0, doc.err
    assert {ESC, COMMAND, SURROGATE} <= set(json.loads(doc.out)["tensors"])


def test_check_against_in_every_format(project, weird: Path) -> None:
    run = project.run_subprocess("check", "m", "--against", str(weird), "--no-cache",
                                 "--color", "always", "--format", "text",
                                 "--format", "github:g.txt", "--format", "markdown:m.md",
                                 "--format", "sarif:s.sarif", "--format", "json:r.json")
    assert run.code == 1, run.err
    assert "Traceback" not in run.err
    assert "\\x1b[2J\\x1b[31mFAKE" in run.out  # our own colours are painted, the key's are not
    for line in run.out.splitlines():
        assert "\x1b[2J" not in line and "\x1b[31mFAKE" not in line
        assert not line.startswith("::")
    for name in ("g.txt", "m.md"):
        _assert_inert((project.root / name).read_text(encoding="utf-8"))
    github = (project.root / "g.txt").read_text(encoding="utf-8").splitlines()
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in github)
    sarif = json.loads((project.root / "s.sarif").read_text(encoding="utf-8"))
    keys = {r["properties"]["key"] for r in sarif["runs"][0]["results"]}
    report = json.loads((project.root / "r.json").read_text(encoding="utf-8"))
    exact = {k for f in report["findings"] for k in f["keys"]}
    assert {ESC, COMMAND, SURROGATE} <= exact
    assert keys & {ESC, COMMAND, SURROGATE}


def test_default_text_output_cannot_start_a_workflow_command(project, weird: Path) -> None:
    run = project.run("check", "m", "--against", str(weird), "--no-cache", "--color", "never")
    assert run.code == 1
    assert not any(line.startswith("::") for line in run.out.splitlines())
    assert "\x1b" not in run.out and "x\\n::error" in run.out


def test_diff_text_escapes(project, tmp_path: Path) -> None:
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    torch.save(_state(ESC), old)
    torch.save(_state(COMMAND, SURROGATE), new)
    run = project.run_subprocess("diff", str(old), str(new))
    assert run.code == 1 and "Traceback" not in run.err, run.err
    _assert_inert(run.out)
    assert "\\x1b[2J" in run.out and "x\\n::error" in run.out and "w\\ud800" in run.out


def test_remap_text_escapes(project, weird: Path) -> None:
    run = project.run("remap", "m", "--against", str(weird))
    assert run.code == 1
    _assert_inert(run.out)
    assert "unexpected:" in run.out and "\\x1b[2J" in run.out


def test_error_sentences_escape_the_file_s_text(project, tmp_path: Path) -> None:
    header = json.dumps({f"k{ESC}": {"dtype": "ZZ", "shape": [1], "data_offsets": [0, 1]}})
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"x")
    run = project.run("inspect", str(path))
    assert run.code == 2
    assert run.err.count("\n") == 1 and "\x1b" not in run.err and "kfc.weight\\x1b[2J" in run.err


def test_a_surrogate_key_cannot_become_a_signature_file(project, weird: Path) -> None:
    """TOML has no escape for a lone surrogate: refused with a sentence, nothing written."""
    run = project.run("update", "m", "--from", str(weird))
    assert run.code == 2
    assert "holds a lone surrogate, which a TOML signature file cannot hold" in run.err
    assert not (project.root / "signatures" / "m.toml").exists()
