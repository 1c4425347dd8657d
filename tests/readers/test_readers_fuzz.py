"""Fuzzing: random and mutated checkpoints end in a Signature or a CheckpointError, quickly."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ckptlint.core.errors import CheckpointError
from ckptlint.core.records import Signature
from ckptlint.readers import read_checkpoint

SETTINGS = settings(max_examples=150, deadline=2000, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 2.0  # one file, however hostile, is answered well within this


def _seeds() -> dict[str, bytes]:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    seeds: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, save in {
            "zip": lambda p: torch.save({"state_dict": state, "epoch": 1}, p),
            "legacy": lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
            "safetensors": lambda p: save_file(dict(state), p),
        }.items():
            path = Path(tmp) / name
            save(path)
            seeds[name] = path.read_bytes()
    return seeds


SEEDS = _seeds()


def _outcome(data: bytes, name: str = "fuzz.pt") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        start = time.monotonic()
        try:
            read = read_checkpoint(path)
        except CheckpointError as exc:
            assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        else:
            assert isinstance(read.signature, Signature)
        assert time.monotonic() - start < SECONDS


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _outcome(data)


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_truncated(seed: str, data: st.DataObject) -> None:
    blob = SEEDS[seed]
    _outcome(blob[:data.draw(st.integers(0, len(blob)))])


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes(seed: str, flips: list[tuple[int, int]]) -> None:
    blob = bytearray(SEEDS[seed])
    for where, value in flips:
        blob[where % len(blob)] = value
    _outcome(bytes(blob))


@SETTINGS
@given(st.binary(min_size=1, max_size=64), st.integers(0, 2**64 - 1))
def test_safetensors_headers(body: bytes, length: int) -> None:
    _outcome(length.to_bytes(8, "little") + b"{" + body, "x.safetensors")


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seeds_read(seed: str) -> None:
    _outcome(SEEDS[seed])
