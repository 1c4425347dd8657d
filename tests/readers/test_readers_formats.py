"""Real checkpoints of every format read back to the signature built from the model."""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file, save_model

from ckptlint.build.dryrun import signature_of
from ckptlint.core.errors import CheckpointError
from ckptlint.core.records import Signature
from ckptlint.readers import read_checkpoint, with_tied


class Tied(torch.nn.Module):
    """Embedding tied to the output head, BatchNorm (version 2), assorted dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.block = torch.nn.Sequential(torch.nn.Conv1d(6, 6, 3), torch.nn.BatchNorm1d(6))
        self.fp16 = torch.nn.Linear(6, 4).to(torch.float16)
        self.bf = torch.nn.Linear(4, 4).to(torch.bfloat16)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("mask", torch.ones(3, dtype=torch.bool))
        self.register_buffer("step", torch.tensor(7))
        self.register_buffer("ids", torch.arange(5))


def expected(module: torch.nn.Module) -> Signature:
    sig = signature_of(module)
    return replace(sig, tensors={k: replace(v, role=None) for k, v in sig.tensors.items()},
                   torch_version="", source="checkpoint")


def same(read: Signature, want: Signature, *, metadata: bool = True) -> None:
    assert dict(read.tensors) == dict(want.tensors)
    assert dict(read.aliases) == dict(want.aliases)
    if metadata:
        assert dict(read.versions) == dict(want.versions)
        assert read.has_metadata == want.has_metadata
    assert read.source == "checkpoint" and read.model == "" and read.target == ""


@pytest.fixture
def model() -> Tied:
    torch.manual_seed(0)
    return Tied()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_state_dict(tmp_path: Path, model: Tied, zip_format: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    read = read_checkpoint(path)
    assert read.format == ("torch-zip" if zip_format else "torch-legacy")
    assert read.note == ""
    same(read.signature, expected(model))
    assert read.signature.versions == {"block.1": 2}
    assert read.signature.aliases == {"head.weight": "emb.weight"}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_lightning_style_nested(tmp_path: Path, model: Tied, zip_format: bool) -> None:
    opt = torch.optim.Adam(model.parameters())
    model.emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    checkpoint = {
        "epoch": 3, "global_step": 10, "state_dict": model.state_dict(),
        "hyper_parameters": {"lr": 0.1, "ns": argparse.Namespace(depth=3, name="x"),
                             "path": Path("/data/x")},
        "optimizer_states": [opt.state_dict()],
    }
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    read = read_checkpoint(path)
    assert read.note == "using the `state_dict` entry"
    same(read.signature, expected(model))


def test_ema_alternative_reported_and_choosable(tmp_path: Path, model: Tied) -> None:
    ema = Tied()
    ema.head = torch.nn.Linear(6, 12, bias=False)
    path = tmp_path / "ema.pt"
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "step": 5}, path)
    read = read_checkpoint(path)
    assert read.note.startswith("using the `model` entry")
    assert "`model_ema`" in read.note
    same(read.signature, expected(model))
    chosen = read_checkpoint(path, state_dict_key="model_ema")
    assert chosen.signature.tensors["head.weight"].shape == (12, 6)
    assert "model_ema" in chosen.note


def test_dotted_state_dict_key(tmp_path: Path, model: Tied) -> None:
    path = tmp_path / "deep.pt"
    torch.save({"outer": {"inner": model.state_dict()}, "a": {"b": model.state_dict()}}, path)
    with pytest.raises(CheckpointError, match="several tensor dicts"):
        read_checkpoint(path)
    read = read_checkpoint(path, state_dict_key="outer.inner")
    same(read.signature, expected(model))
    with pytest.raises(CheckpointError, match="no entry `outer.nope`"):
        read_checkpoint(path, state_dict_key="outer.nope")


def test_flat_dict_ignores_non_tensors(tmp_path: Path) -> None:
    path = tmp_path / "flat.pt"
    torch.save({"w": torch.zeros(2, 3), "epoch": 4, "name": "run"}, path)
    sig = read_checkpoint(path).signature
    assert dict(sig.tensors) == {"w": sig.tensors["w"]} and sig.tensors["w"].shape == (2, 3)
    assert sig.has_metadata is False


def test_views_sharing_storage(tmp_path: Path) -> None:
    base = torch.arange(24.0).reshape(4, 6)
    state = {"full": base, "same": base.view(4, 6), "t": base.t(), "row": base[1],
             "scalar": torch.tensor(2.5, dtype=torch.float64)}
    for zip_format in (True, False):
        path = tmp_path / f"views{zip_format}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        sig = read_checkpoint(path).signature
        assert sig.tensors["t"].shape == (6, 4) and sig.tensors["row"].shape == (6,)
        assert sig.tensors["scalar"].shape == () and sig.tensors["scalar"].dtype == "float64"
        assert sig.aliases == {"same": "full"}


def test_whole_module_pickle(tmp_path: Path, model: Tied) -> None:
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    read = read_checkpoint(path)
    assert "Tied" in read.note
    same(read.signature, expected(model), metadata=False)


def test_safetensors_save_file_and_model(tmp_path: Path, model: Tied) -> None:
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight"}
    save_file(state, tmp_path / "plain.safetensors", metadata={"format": "pt"})
    plain = read_checkpoint(tmp_path / "plain.safetensors")
    assert plain.format == "safetensors" and plain.tied == {}
    want = expected(model)
    assert dict(plain.signature.tensors) == {k: v for k, v in want.tensors.items()
                                             if k != "head.weight"}
    save_model(model, str(tmp_path / "tied.safetensors"))
    tied = read_checkpoint(tmp_path / "tied.safetensors")
    kept = set(tied.signature.tensors)
    assert len(kept & {"emb.weight", "head.weight"}) == 1  # the writer keeps one of the pair
    assert set(tied.tied) == {"emb.weight", "head.weight"} - kept
    restored = with_tied(tied.signature, tied.tied)
    assert dict(restored.tensors) == dict(want.tensors)
    assert dict(restored.aliases) == dict(want.aliases)
    assert dict(with_tied(tied.signature, want.aliases).tensors) == dict(want.tensors)


def test_safetensors_dtypes(tmp_path: Path) -> None:
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool,
              torch.uint8, torch.int8, torch.float8_e4m3fn, torch.float8_e5m2, torch.float64]
    state = {str(d).removeprefix("torch."): torch.zeros(2, 3, dtype=d) for d in dtypes}
    state["zero_d"] = torch.tensor(1.0)
    save_file(state, tmp_path / "d.safetensors")
    sig = read_checkpoint(tmp_path / "d.safetensors").signature
    for key, tensor in state.items():
        assert sig.tensors[key].dtype == str(tensor.dtype).removeprefix("torch.")
        assert sig.tensors[key].shape == tuple(tensor.shape)


def test_torch_zip_dtypes_uint16_and_meta(tmp_path: Path) -> None:
    state = {"u16": torch.zeros(3, dtype=torch.uint16),
             "f8": torch.zeros(2, dtype=torch.float8_e4m3fn),
             "meta": torch.empty(4, 5, device="meta"), "c": torch.zeros(2, dtype=torch.complex64)}
    torch.save(state, tmp_path / "d.pt")
    sig = read_checkpoint(tmp_path / "d.pt").signature
    assert {k: (v.dtype, v.shape) for k, v in sig.tensors.items()} == {
        "u16": ("uint16", (3,)), "f8": ("float8_e4m3fn", (2,)), "meta": ("float32", (4, 5)),
        "c": ("complex64", (2,))}


def test_sharded_safetensors_by_transformers(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=128, n_positions=64)
    gpt = GPT2LMHeadModel(config)
    gpt.save_pretrained(tmp_path / "gpt", max_shard_size="30KB")
    index = tmp_path / "gpt" / "model.safetensors.index.json"
    assert index.is_file()
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert len(shards) > 1
    for where in (tmp_path / "gpt", index):
        read = read_checkpoint(where)
        assert read.format == "sharded"
        want = expected(gpt)
        got = with_tied(read.signature, want.aliases)
        assert {k: v for k, v in got.tensors.items()} == {
            k: v for k, v in want.tensors.items() if k in got.tensors}
        assert set(want.tensors) - set(got.tensors) <= {
            k for k in want.tensors if k.endswith(".attn.bias") or k.endswith("masked_bias")}


def test_sharded_index_written_by_hand(tmp_path: Path, model: Tied) -> None:
    state = model.state_dict()
    keys = [k for k in state if k != "head.weight"]
    first, second = keys[:4], keys[4:]
    save_file({k: state[k] for k in first}, tmp_path / "a.safetensors")
    torch.save({k: state[k] for k in second}, tmp_path / "b.bin")
    weight_map = {**dict.fromkeys(first, "a.safetensors"), **dict.fromkeys(second, "b.bin")}
    index = tmp_path / "x.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sig = read_checkpoint(index).signature
    assert set(sig.tensors) == set(keys)
    index.write_text(json.dumps({"weight_map": {**weight_map, "ghost": "a.safetensors"}}))
    with pytest.raises(CheckpointError, match="`ghost`"):
        read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"w": "../etc/passwd"}}))
    with pytest.raises(CheckpointError, match="not a file name"):
        read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"w": "x.index.json"}}))
    with pytest.raises(CheckpointError, match="shard"):
        read_checkpoint(index)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_distributed_checkpoint(tmp_path: Path, model: Tied) -> None:
    import torch.distributed.checkpoint as dcp

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    state = {k: v for k, v in model.state_dict().items() if k != "head.weight"}
    dcp.save({"model": state, "optim": opt.state_dict(), "epoch": 2},
             storage_writer=dcp.FileSystemWriter(str(tmp_path / "dcp")))
    read = read_checkpoint(tmp_path / "dcp")
    assert read.format == "torch-dcp" and read.note == "using the `model` entry"
    want = expected(model)
    assert dict(read.signature.tensors) == {k: v for k, v in want.tensors.items()
                                            if k != "head.weight"}
    assert read.signature.has_metadata is False
    assert read_checkpoint(tmp_path / "dcp" / ".metadata").signature == read.signature
    flat = tmp_path / "flat"
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(flat)))
    assert dict(read_checkpoint(flat).signature.tensors) == dict(read.signature.tensors)


def test_signature_file_is_accepted(tmp_path: Path, model: Tied) -> None:
    from ckptlint.core import sigfile

    sig = replace(signature_of(model), model="tied")
    path = tmp_path / "tied.toml"
    path.write_text(sigfile.dumps(sig))
    read = read_checkpoint(path)
    assert read.format == "signature" and read.signature.tensors == sig.tensors
    path.write_text("[signature]\nformat = 99\n[tensors]\n")
    with pytest.raises(CheckpointError, match="newer ckptlint"):
        read_checkpoint(path)


def test_folder_with_one_checkpoint(tmp_path: Path, model: Tied) -> None:
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    read = read_checkpoint(tmp_path)
    assert "weights.pth" in read.note
    same(read.signature, expected(model))


def test_storage_record_of_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(4, 4)}, path)
    with zipfile.ZipFile(path) as src:
        members = [(i, src.read(i)) for i in src.infolist()]
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(short, "w") as out:
        for info, data in members:
            out.writestr(info, data[:8] if info.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match="lies about its data"):
        read_checkpoint(short)


def test_safetensors_cut_after_header_is_refused(tmp_path: Path) -> None:
    """A header whose byte ranges run past the end of the file lies about the data: refused."""
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(8, 8)}, path)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    path.write_bytes(data[:8 + length])
    with pytest.raises(CheckpointError, match="lies about the data"):
        read_checkpoint(path)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"hello world, not a checkpoint", "not a checkpoint"),
    ((2**60).to_bytes(8, "little") + b"{}", "header"),
    ((200 * 2**20).to_bytes(8, "little") + b"{" + b" " * 100, "header"),
    ((10).to_bytes(8, "little") + b"{\"a\": 1}  ", "malformed"),
    ((4).to_bytes(8, "little") + b"{}}}", "not valid JSON"),
    (b"PK\x03\x04garbage", "too short to be a zip archive"),
    (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "header"),
    (b"GGUF\x03\x00\x00\x00", "GGUF"),
])
def test_bad_files_give_one_sentence(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_lying_safetensors_shape(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}})
    raw = header.encode()
    path = tmp_path / "lie.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 64)
    with pytest.raises(CheckpointError, match="lies about the data"):
        read_checkpoint(path)


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        read_checkpoint(tmp_path)


def test_cost_does_not_grow_with_file_size(tmp_path: Path) -> None:
    """A 4 GiB safetensors file (sparse on disk) is read from its header alone."""
    import time

    numel = 2**30
    header = json.dumps({"big": {"dtype": "F32", "shape": [numel],
                                 "data_offsets": [0, 4 * numel]}}).encode()
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        handle.truncate(8 + len(header) + 4 * numel)
    start = time.monotonic()
    sig = read_checkpoint(path).signature
    assert sig.tensors["big"].shape == (numel,)
    assert time.monotonic() - start < 0.5
