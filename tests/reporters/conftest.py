"""A report that exercises every reporter edge, and golden-file comparison.

Regenerate the golden files with `CKPTLINT_REGEN_GOLDEN=1 pytest tests/reporters`, then read
the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Location, ModelReport, Report, TensorSpec

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("CKPTLINT_REGEN_GOLDEN") == "1"


def folded(pattern: str, n: int) -> tuple[str, ...]:
    head, _, tail = pattern.partition("{0..")
    tail = tail.partition("}")[2]
    return tuple(f"{head}{i}{tail}" for i in range(n))


F32_FC_OLD = TensorSpec("float32", (3072, 768), "parameter")
F32_FC_NEW = TensorSpec("float32", (4096, 768), "parameter")


def gpt2() -> ModelReport:
    fc = "transformer.h.{0..11}.mlp.c_fc.weight"
    return ModelReport("gpt2", (
        Finding(Kind.SHAPE_MISMATCH, "gpt2",
                f"`{fc}` is f32[3072, 768] in the checkpoint but f32[4096, 768] in the code: "
                "loading fails with \"size mismatch\", even with strict=False",
                key=fc, keys=folded(fc, 12), old=F32_FC_OLD, new=F32_FC_NEW,
                location=Location("src/models/gpt.py", 40, 9, 42, 10)),
        Finding(Kind.DTYPE_MISMATCH, "gpt2",
                "`lm_head.weight` is float32 in the checkpoint but bfloat16 in the code: "
                "loading casts it silently",
                key="lm_head.weight", keys=("lm_head.weight",),
                old=TensorSpec("float32", (50257, 768), "parameter"),
                new=TensorSpec("bfloat16", (50257, 768), "parameter"),
                location=Location("src/models/gpt.py", 55, 9, 55, 48)),
    ), signature_file="signatures/gpt2.toml", old_parameters=124_439_808,
        new_parameters=152_751_360)


def vit() -> ModelReport:
    bias, rel = "blocks.{0..11}.attn.bias", "blocks.{0..11}.attn.rel_pos"
    return ModelReport("vit", (
        Finding(Kind.MISSING_KEY, "vit",
                f"`{bias}` (f32[1, 1, 197, 197] buffer) is created by the code but absent from "
                "the checkpoint", key=bias, keys=folded(bias, 12),
                new=TensorSpec("float32", (1, 1, 197, 197), "buffer"),
                location=Location("src/models/vit.py", 21, 9)),
        Finding(Kind.UNEXPECTED_KEY, "vit",
                f"`{rel}` (f32[197, 64]) is in the checkpoint but the code no longer creates it",
                key=rel, keys=folded(rel, 12), old=TensorSpec("float32", (197, 64), "parameter"),
                location=Location("src/models/vit.py", 18, 5, 25, 1)),
    ), signature_file="signatures/vit.toml", old_parameters=85_806_346,
        new_parameters=85_653_514, notes=("vit: the signature was built with torch 2.3.0",))


def weird() -> ModelReport:
    """Everything the escapers must handle: `%`, CR/LF, `:` and `,` in message and path."""
    return ModelReport("weird", (
        Finding(Kind.SHAPE_MISMATCH, "weird",
                "100% of `head.weight` changed:\nwas f32[3, 4], now f32[3, 5]\r\nsee <module>",
                key="head.weight", keys=("head.weight",),
                old=TensorSpec("float32", (3, 4)), new=TensorSpec("float32", (3, 5)),
                location=Location("src/odd,dir/v2:model.py", 3, 5, 3, 17)),
    ), signature_file="signatures/weird.toml", old_parameters=12, new_parameters=15)


def broken() -> ModelReport:
    return ModelReport("broken", (
        Finding(Kind.BUILD_ERROR, "broken",
                "importing `mypkg.broken:Net` failed: NameError: name 'nn' is not defined",
                location=Location("src/mypkg/broken.py", 7, 5, 7, 30),
                help="fix the error above; the other models were still checked"),
    ), signature_file="signatures/broken.toml")


def newbie() -> ModelReport:
    return ModelReport("newbie", (
        Finding(Kind.SIGNATURE_MISSING, "newbie",
                "no committed signature signatures/newbie.toml for model `newbie`",
                help="run `ckptlint update newbie` and commit the file"),
    ), signature_file="signatures/newbie.toml", new_parameters=1_024)


def sample_report() -> Report:
    clean = ModelReport("resnet18", signature_file="signatures/resnet18.toml",
                        old_parameters=11_689_512, new_parameters=11_689_512)
    orphan = Finding(Kind.SIGNATURE_ORPHANED, "old_model",
                     "signatures/old_model.toml belongs to no configured model",
                     location=Location("signatures/old_model.toml", 1),
                     help="delete it, or register the model it describes")
    return Report(models=(gpt2(), vit(), weird(), broken(), newbie(), clean), extra=(orphan,),
                  notes=("torch changed since the signatures were written (2.3.0 -> 2.4.1)",))


@pytest.fixture
def report() -> Report:
    return sample_report()


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """`golden(name, actual)`: compare with tests/reporters/golden/NAME byte for byte."""
    def check(name: str, actual: str) -> None:
        path = GOLDEN / name
        if REGEN:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(actual.encode("utf-8"))
        assert path.exists(), f"no golden file {path}; run with CKPTLINT_REGEN_GOLDEN=1"
        assert actual == path.read_bytes().decode("utf-8")
    return check
