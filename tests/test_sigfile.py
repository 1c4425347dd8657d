"""Signature files: deterministic text, strict reading, atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from ckptlint.core.errors import SignatureFileError
from ckptlint.core.records import Signature, TensorSpec
from ckptlint.core.atomic import write_atomic
from ckptlint.core.sigfile import dumps, loads
from ckptlint.readers.sigtoml import read_signature as read

SIG = Signature(
    tensors={"emb.weight": TensorSpec("float32", (10, 4), "parameter"),
             **{f"h.{i}.w": TensorSpec("bfloat16", (4, 4), "parameter") for i in range(3)},
             "bn.num_batches_tracked": TensorSpec("int64", (), "buffer"),
             "head.weight": TensorSpec("float32", (10, 4), "parameter"),
             "odd": TensorSpec("float8_e4m3fn", (2,), "parameter"),
             "custom": TensorSpec("quint8", (1,), "buffer")},
    versions={"bn": 2}, aliases={"head.weight": "emb.weight"},
    model="m", target="pkg:M", torch_version="2.13.0")


def test_round_trip():
    assert loads(dumps(SIG), "m.toml") == SIG


def test_text_is_deterministic_and_folded():
    text = dumps(SIG)
    assert text == dumps(Signature(**{**{f: getattr(SIG, f) for f in SIG.__slots__},
                                      "tensors": dict(reversed(SIG.tensors.items()))}))
    assert '"h.{0..2}.w" = "bf16[4, 4]"' in text
    assert '"bn.num_batches_tracked" = "i64[] buffer"' in text
    assert '"custom" = "quint8[1] buffer"' in text
    assert "\n[versions]\n\"bn\" = 2\n" in text


@pytest.mark.parametrize("text,sentence", [
    ("[signature\n", "m.toml:1: is not valid TOML"),
    ("[signature]\nformat = 9\n[tensors]\n", "m.toml:2: was written by a newer ckptlint (format 9; "
                                             "this one reads format 1): upgrade ckptlint"),
    ("[tensors]\n", "m.toml: has no [signature] table"),
    ("[signature]\nformat = 1\n[tensors]\n\"a\" = \"f32(3)\"\n",
     "m.toml:4: tensor `a` has value 'f32(3)', expected \"dtype[shape]\""),
    ("[signature]\nformat = 1\ncolour = 1\n[tensors]\n",
     "m.toml:3: has an unknown key in [signature] `colour`"),
    ("[signature]\nformat = 1\n[tensors]\n\"h.{0..1}.w\" = \"f32[1]\"\n\"h.1.w\" = \"f32[1]\"\n",
     "m.toml:5: lists tensor `h.1.w` twice"),
])
def test_broken_files_name_the_file(text, sentence):
    with pytest.raises(SignatureFileError) as info:
        loads(text, "m.toml")
    assert str(info.value).startswith(sentence)


def test_atomic_write_keeps_mode_leaves_no_temp_and_skips_equal_content(tmp_path):
    path = tmp_path / "sigs" / "m.toml"
    assert write_atomic(path, "a\n")
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    os.chmod(path, 0o664)
    assert write_atomic(path, "b\n") and oct(path.stat().st_mode & 0o777) == oct(0o664)
    assert not write_atomic(path, "b\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.toml"]


def test_unreadable_file_is_a_signature_error(tmp_path):
    (tmp_path / "m.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SignatureFileError, match="cannot be read"):
        read(tmp_path / "m.toml")


def test_hand_broken_committed_signature_is_a_finding_not_a_crash(project):
    project.write("m.py", "from torch import nn\nclass M(nn.Linear):\n"
                          "    def __init__(self):\n        super().__init__(2, 2)\n")
    project.configure('name = "m"\ntarget = "m:M"', 'name = "n"\ntarget = "m:M"')
    project.run("update")
    (project.root / "signatures" / "m.toml").write_text("[signature]\nformat = 2\n")
    run = project.run("check", "--color", "never")
    assert run.code == 2
    assert "signatures/m.toml:2:1: CKL204 signatures/m.toml:2: was written by a newer ckptlint" \
        in run.out
    assert "Checked 2 models: 1 could not be checked, 1 clean." in run.out


HEADER = "[signature]\nformat = 1\nmodel = \"m\"\n\n[tensors]\n"
INVALID = [
    # (the file, its line with the problem, the sentence)
    ("[signature]\nformat = 0\n[tensors]\n", 2, "has `format = 0` in [signature], not a format "
                                                "number (1 or more)"),
    ("[signature]\nformat = -5\n[tensors]\n", 2, "has `format = -5`"),
    ("[signature]\nformat = true\n[tensors]\n", 2, "has `format = true`"),
    (HEADER + '"w" = "f32[2]"\n"v" = "zz[4]"\n', 7, "tensor `v` has dtype `zz`, which is not a "
                                                    "torch dtype"),
    (HEADER + '"w" = "f32[1000000000000000000000000000000]"\n', 6,
     "has a dimension in 'f32[1000000000000000000000000000000]' larger than torch's sizes"),
    (HEADER + '"w" = "f32[4611686018427387904, 4]"\n', 6, "would take more than 2**63 bytes"),
    (HEADER + '"a.{0..100000000}.w" = "f32[1]"\n', 6, "`a.{0..100000000}.w` stands for "
                                                      "100,000,001 keys, more than the 1,000,000"),
    (HEADER + '"a.{5..2}.w" = "f32[1]"\n', 6, "has a range {5..2} that is not a run of layers"),
    (HEADER + "[versions]\n\"b.{0..99999999999999999999}\" = 2\n", 7, "has a range"),
    ("[signature]\nformat = 1\nmetadata = \"yes\"\n[tensors]\n", 3,
     "[signature] `metadata` must be true or false"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", None, "nests its TOML too deeply"),
]


@pytest.mark.parametrize("text, line, sentence", INVALID)
def test_invalid_signature_names_the_line(text, line, sentence):
    with pytest.raises(SignatureFileError) as info:
        loads(text, "m.toml")
    where = f"m.toml:{line}: " if line else "m.toml: "
    assert str(info.value).startswith(where) and sentence in str(info.value)
    assert info.value.line == line


def test_a_huge_folded_range_costs_nothing_to_refuse():
    """60 bytes standing for 10**8 keys: refused from the range's size, never expanded."""
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(SignatureFileError, match="stands for"):
        loads(HEADER + '"a.{0..100000000}.w" = "f32[1]"\n', "m.toml")
    assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    tracemalloc.stop()


@pytest.mark.parametrize("text, line, sentence", [INVALID[0], INVALID[3], INVALID[4], INVALID[6]])
def test_check_reports_ckl204_at_the_line(project, text, line, sentence):
    project.write("ckl204_model.py", "from torch import nn\nclass M(nn.Linear):\n"
                                    "    def __init__(self):\n        super().__init__(2, 2)\n")
    project.configure('name = "m"\ntarget = "ckl204_model:M"')
    project.write("signatures/m.toml", text)
    run = project.run("check", "--color", "never", "--format", "json")
    assert run.code == 2
    [finding] = json.loads(run.out)["findings"]
    assert finding["code"] == "CKL204" and finding["line"] == line
    assert sentence in finding["message"] and finding["file"] == "signatures/m.toml"


@pytest.mark.parametrize("command", ["inspect", "diff"])
def test_inspect_and_diff_refuse_an_invalid_signature(project, command):
    project.write("bad.toml", HEADER + '"a.{0..100000000}.w" = "f32[1]"\n')
    project.write("good.toml", HEADER + '"w" = "f32[1]"\n')
    argv = ["inspect", "bad.toml"] if command == "inspect" else ["diff", "good.toml", "bad.toml"]
    run = project.run(*argv)
    assert run.code == 2 and run.out == ""
    assert run.err == ("ckptlint: error: bad.toml:6: `a.{0..100000000}.w` stands for 100,000,001 "
                       "keys, more than the 1,000,000 a signature may hold\n")


def test_every_dtype_a_model_can_have_round_trips():
    import torch

    dtypes = {str(v).removeprefix("torch.") for v in vars(torch).values()
              if isinstance(v, torch.dtype)}
    sig = Signature(tensors={d: TensorSpec(d, (2,), "parameter") for d in dtypes},
                    model="m", target="pkg:M")
    assert loads(dumps(sig), "m.toml") == sig


def test_keys_beyond_the_bmp_and_control_characters_round_trip():
    """JSON writes 😀 as a surrogate pair, which TOML refuses: it is written as \\U0001F600."""
    sig = Signature(tensors={"emoji😀.w": TensorSpec("float32", (1,), "parameter"),
                             "esc\x1b[2J": TensorSpec("float32", (1,), "parameter"),
                             "中文": TensorSpec("float32", (1,), "parameter")}, model="m")
    text = dumps(sig)
    assert '"emoji\\U0001F600.w"' in text and "\x1b" not in text
    assert loads(text, "m.toml") == sig


def test_a_lone_surrogate_cannot_be_written():
    from ckptlint.core.errors import CkptlintError

    sig = Signature(tensors={"w\ud800": TensorSpec("float32", (1,), "parameter")}, model="m")
    with pytest.raises(CkptlintError, match="lone surrogate"):
        dumps(sig)


def test_the_root_modules_version_round_trips() -> None:
    """A model whose own class has a `_version` (BatchNorm as the whole model) keeps it under
    the empty key; it once came out as a nested dict, which is not TOML."""
    spec = TensorSpec("float32", (4,), "parameter")
    sig = Signature({"weight": spec, "sub.weight": spec}, versions={"": 2, "sub": 3})
    assert loads(dumps(sig), "<test>").versions == {"": 2, "sub": 3}
