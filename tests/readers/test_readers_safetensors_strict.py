"""safetensors as its Rust reader sees it: what `safe_open` refuses, ckptlint refuses too.

Each header is written by hand; the reference is the installed safetensors library itself.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from ckptlint.core.errors import CheckpointError
from ckptlint.readers import read_checkpoint


def _file(tmp_path: Path, header: bytes, data: bytes = b"") -> Path:
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _u8(begin: int, end: int, shape: list[int] | None = None) -> dict:
    return {"dtype": "U8", "shape": [end - begin] if shape is None else shape,
            "data_offsets": [begin, end]}


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()


def _rust_keys(path: Path) -> list[str] | None:
    try:
        with safe_open(str(path), "np") as handle:
            return sorted(handle.keys())
    except Exception:  # the Rust reader's SafetensorError: it refuses the file
        return None


HOSTILE = {
    # a tensor named __metadata__ used to be dropped silently from the listing
    "tensor-named-metadata": (_json({"__metadata__": _u8(0, 1), "w": _u8(1, 2)}), b"xy",
                              "`__metadata__` entry that is not a table of strings"),
    "metadata-not-strings": (_json({"__metadata__": {"a": 1}}), b"", "not a table of strings"),
    # two tensors whose byte ranges overlap (aliased offsets)
    "overlapping": (_json({"a": _u8(0, 2), "b": _u8(1, 3)}), b"xyz", "which overlap"),
    "aliased": (_json({"a": _u8(0, 2), "b": _u8(0, 2)}), b"xy", "which overlap"),
    "gap": (_json({"a": _u8(0, 1), "b": _u8(2, 3)}), b"xyz", "leaving bytes 1..2 that no tensor"),
    "trailing-bytes": (_json({"a": _u8(0, 1)}), b"xy", "1 bytes after its last tensor"),
    "duplicate-field": (b'{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
                        b"x", "names `dtype` twice"),
    "lone-surrogate-key": (b'{"w\\ud800":' + _json(_u8(0, 1)) + b"}", b"x", "lone surrogate"),
    "lone-surrogate-metadata": (b'{"__metadata__":{"a":"\\udc00"}}', b"", "lone surrogate"),
    "float-dimension": (b'{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"x",
                        "malformed shape"),
    "dimension-past-u64": (_json({"a": _u8(0, 0, [0, 2**64])}), b"", "malformed shape"),
    "overflowing-shape": (_json({"a": _u8(0, 0, [2**32, 2**32, 0])}), b"",
                          "overflows safetensors' arithmetic"),
    "nan-dimension": (b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', b"x",
                      "not valid JSON"),
    "unknown-dtype": (_json({"a": {"dtype": "C128", "shape": [1], "data_offsets": [0, 16]}}),
                      b"\0" * 16, "dtype 'C128'"),
    "control-character": (b'{"a\x01":' + _json(_u8(0, 1)) + b"}", b"x", "not valid JSON"),
    "not-an-object": (b"[]", b"", "is not a checkpoint ckptlint can read"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_what_the_rust_reader_refuses_is_refused(tmp_path: Path, case: str) -> None:
    header, data, sentence = HOSTILE[case]
    path = _file(tmp_path, header, data)
    assert _rust_keys(path) is None
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert sentence in str(info.value) and "\n" not in str(info.value)


VALID = {
    "padded-header": (_json({"a": _u8(0, 1)}) + b"   ", b"x"),
    "leading-space": (b" " + _json({"a": _u8(0, 1)}), b"x"),
    "empty-tensors-share-an-offset": (_json({"a": _u8(0, 0, [0]), "b": _u8(0, 0, [0, 3]),
                                             "c": _u8(0, 2)}), b"xy"),
    "extra-field-in-entry": (_json({"a": {**_u8(0, 1), "note": "kept"}}), b"x"),
    "null-metadata": (_json({"__metadata__": None, "a": _u8(0, 1)}), b"x"),
    "escaped-control-in-key": (_json({"a\x1b[2J": _u8(0, 1)}), b"x"),
    "surrogate-pair": (b'{"\\ud83d\\ude00":' + _json(_u8(0, 1)) + b"}", b"x"),
    "no-tensors": (b"{}", b""),
}


@pytest.mark.parametrize("case", list(VALID))
def test_what_the_rust_reader_reads_is_read(tmp_path: Path, case: str) -> None:
    path = _file(tmp_path, *VALID[case])
    keys = _rust_keys(path)
    assert keys is not None
    assert sorted(read_checkpoint(path).signature.tensors) == keys


def test_a_name_given_twice_is_refused(tmp_path: Path) -> None:
    """serde and Python's json both keep the last entry of a name; other readers keep the first,
    so which tensor the file holds is ambiguous."""
    first = json.dumps({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})
    second = json.dumps({"dtype": "U8", "shape": [2], "data_offsets": [0, 2]})
    path = _file(tmp_path, f'{{"a": {first}, "a": {second}}}'.encode(), b"xy")
    assert _rust_keys(path) == ["a"]  # the Rust reader takes the second, silently
    with pytest.raises(CheckpointError, match="names `a` twice: readers disagree"):
        read_checkpoint(path)


def test_many_recorded_ties_are_restored_in_one_pass(tmp_path: Path) -> None:
    """`save_model` records each dropped tie in the metadata; 20,000 of them (distinct kept
    tensors) must not cost 20,000 scans of every alias."""
    count = 20_000
    header = {f"kept.{i}": _u8(i, i + 1) for i in range(count)}
    header["__metadata__"] = {f"dropped.{i}": f"kept.{i}" for i in range(count)}
    path = _file(tmp_path, _json(header), b"x" * count)
    read = read_checkpoint(path)
    assert len(read.tied) == count
    full = read.full_signature
    assert len(full.tensors) == 2 * count and full.aliases["kept.7"] == "dropped.7"
