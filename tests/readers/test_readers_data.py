"""Tensor bytes read one at a time (`readers.data`), exactly as torch.load reads them; and
every hostile file the reader tests build is refused by `convert` exactly as `inspect`
refuses it, with nothing written."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_readers_bounded import DEEP_KEY, _colliding
from test_readers_malicious import RAW, _zip_with_pickle, payloads
from test_readers_safetensors_strict import HOSTILE as SAFETENSORS_HOSTILE
from test_readers_safetensors_strict import _file
from test_readers_zip import HOSTILE as ZIP_HOSTILE
from zipkit import archive, torch_members, with_data_pkl

from ckptlint.core.errors import CheckpointError
from ckptlint.readers import zipdir
from ckptlint.readers.data import open_data


def _bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(6, 5)
    return {"w": torch.randn(3, 4), "transposed": base.t(), "rows": base[1:3],
            "every_other": base[:, ::2], "expanded": torch.randn(3, 1).expand(3, 4),
            "ids": torch.arange(5), "half": torch.randn(4).half(),
            "bf16": torch.randn(2, 2).bfloat16(), "mask": torch.tensor([True, False]),
            "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5),
            "complex": torch.randn(3, dtype=torch.complex64), "base": base}


def _same(path: Path, want: dict[str, torch.Tensor], key: str | None = None) -> None:
    with open_data(path, key) as data:
        for name, tensor in want.items():
            assert bytes(data.read(name)) == _bytes(tensor), name


@pytest.mark.parametrize("how", ["zip", "legacy", "nested"])
def test_torch_save_bytes_are_what_torch_load_reads(tmp_path: Path, how: str) -> None:
    state, path = _state(), tmp_path / "m.pt"
    if how == "nested":
        torch.save({"epoch": 1, "state_dict": state}, path)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=how == "zip")
    loaded = torch.load(path, weights_only=True)
    _same(path, loaded.get("state_dict", loaded))


def test_safetensors_and_sharded_bytes(tmp_path: Path) -> None:
    import json

    state = {k: v.contiguous().clone() for k, v in _state().items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    _same(tmp_path / "m.safetensors", state)
    keys = list(state)
    for name, part in (("a.safetensors", keys[:6]), ("b.safetensors", keys[6:])):
        save_file({k: state[k] for k in part}, str(tmp_path / name))
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {
        **dict.fromkeys(keys[:6], "a.safetensors"), **dict.fromkeys(keys[6:], "b.safetensors")}}))
    with open_data(tmp_path / "m.safetensors.index.json") as data:
        assert set(data.digests()) == {str(tmp_path / n) for n in (
            "m.safetensors.index.json", "a.safetensors", "b.safetensors")}
    _same(tmp_path / "m.safetensors.index.json", state)


def test_a_prefix_asked_for_is_taken_off(tmp_path: Path) -> None:
    state = {k: v.contiguous().clone() for k, v in _state().items()}
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    _same(tmp_path / "m.safetensors", state, key="model")


def _rewritten(source: Path, out: Path, change) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(out, "w") as b:
        for info in a.infolist():
            b.writestr(info, change(info.filename, a.read(info)))


def test_big_endian_storages_are_swapped_as_torch_load_swaps_them(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "m.pt")
    _rewritten(tmp_path / "m.pt", tmp_path / "big.pt",
               lambda name, data: b"big" if name.endswith("/byteorder") else data)
    loaded = torch.load(tmp_path / "big.pt", weights_only=True)
    assert not torch.equal(loaded["w"], _state()["w"])  # torch really swapped the words
    _same(tmp_path / "big.pt", loaded)


def test_deflated_storages_are_inflated(tmp_path: Path) -> None:
    torch.save(_state(), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as a, zipfile.ZipFile(
            tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info))
    _same(tmp_path / "deflated.pt", torch.load(tmp_path / "deflated.pt", weights_only=True))


def test_a_corrupt_storage_passes_the_structure_read_but_not_the_data_read(tmp_path: Path):
    torch.save({"w": torch.randn(64)}, tmp_path / "m.pt")
    raw = bytearray((tmp_path / "m.pt").read_bytes())
    with open(tmp_path / "m.pt", "rb") as handle:
        member = zipdir.read_directory(handle, "m.pt").find("data/0")
    raw[member.data_offset + 10] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(raw)
    with open_data(tmp_path / "bad.pt") as data, pytest.raises(
            CheckpointError, match="member m/data/0 fails its CRC check"):
        data.read("w")


def test_a_view_into_part_of_a_storage_still_checks_the_whole_member(tmp_path: Path):
    base = torch.randn(1000)
    torch.save({"w": base[:10]}, tmp_path / "m.pt")  # torch.save keeps the whole storage
    raw = bytearray((tmp_path / "m.pt").read_bytes())
    with open(tmp_path / "m.pt", "rb") as handle:
        member = zipdir.read_directory(handle, "m.pt").find("data/0")
    assert member.size == 4000
    raw[member.data_offset + 3000] ^= 0xFF  # outside the 40 bytes the view reads
    (tmp_path / "bad.pt").write_bytes(raw)
    _same(tmp_path / "m.pt", {"w": base[:10]})
    with open_data(tmp_path / "bad.pt") as data, pytest.raises(CheckpointError, match="CRC"):
        data.read("w")


def test_legacy_storage_views_are_refused(tmp_path: Path) -> None:
    """Pre-1.0 torch wrote views into a storage; convert would need their offsets."""
    torch.save({"w": torch.randn(4)}, tmp_path / "m.pt", _use_new_zipfile_serialization=False)
    raw = (tmp_path / "m.pt").read_bytes()
    # the object pickle's persistent id ends with `None` (no view): make it a view of itself
    marker = b"X\x03\x00\x00\x00cpuq"
    at = raw.index(marker)
    assert b"N\x86" in raw[at:at + 40] or b"Nt" in raw[at:at + 40]
    patched = _with_view(raw)
    (tmp_path / "view.pt").write_bytes(patched)
    with pytest.raises(CheckpointError, match="lives in a storage view"):
        open_data(tmp_path / "view.pt")


def _with_view(raw: bytes) -> bytes:
    """The legacy file with its storage's view metadata `None` replaced by (key, 0, 4)."""
    import pickletools

    parts, pos = [], 0
    for _ in range(5):
        end = next(pos + at + 1 for op, _, at in pickletools.genops(raw[pos:]) if op.name == "STOP")
        parts.append(raw[pos:end])
        pos = end
    key = pickle.loads(parts[4])[0]

    class Storage:
        def __init__(self, pid: tuple) -> None:
            self.pid = pid

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, Storage) else None

    from collections import OrderedDict

    class Tensor:
        def __reduce__(self) -> tuple:
            return torch._utils._rebuild_tensor_v2, (
                Storage(("storage", torch.FloatStorage, key, "cpu", 4, (key, 0, 4))), 0, (4,),
                (1,), False, OrderedDict())

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    return b"".join(parts[:3]) + buffer.getvalue() + parts[4] + raw[pos:]


def test_negative_strides_are_refused_as_torch_refuses_them(tmp_path: Path) -> None:
    from collections import OrderedDict

    from zipkit import StorageStandIn

    class Backwards:
        def __reduce__(self) -> tuple:
            return torch._utils._rebuild_tensor_v2, (StorageStandIn(torch.FloatStorage, "0", 2),
                                                     1, (2,), (-1,), False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, StorageStandIn) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Backwards()})
    path = tmp_path / "neg.pt"
    path.write_bytes(archive(with_data_pkl(torch_members({"w": torch.zeros(2)}),
                                           buffer.getvalue())))
    with pytest.raises(RuntimeError, match="Storage size calculation overflowed"):
        torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="negative stride"):
        open_data(path)


# -- torch.distributed.checkpoint folders: each tensor's chunks put together ---------------------

def test_dcp_tensors_are_what_dcp_load_reads(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    state = {k: v.contiguous().clone() for k, v in _state().items() if v.numel()}
    dcp.save({"model": state, "step": 3}, checkpoint_id=str(tmp_path / "d"))
    _same(tmp_path / "d", state)
    _same(tmp_path / "d" / ".metadata", state)


def _chunked(folder: Path, full: torch.Tensor, pieces: list, storage_of=None,
             saved=lambda piece: piece.clone()) -> None:
    """A DCP folder holding `full` in `pieces` ((offsets, tensor) each), as ranks save it."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata,
                                                       MetadataIndex, TensorProperties,
                                                       TensorStorageMetadata)

    folder.mkdir()
    blob, storage, chunks = b"", {}, []
    for offsets, piece in pieces:
        buffer = io.BytesIO()
        torch.save(saved(piece), buffer)
        name = (storage_of or (lambda _: "__0_0.distcp"))(offsets)
        storage[MetadataIndex("w", torch.Size(offsets))] = _StorageInfo(
            name, len(blob), len(buffer.getvalue()))
        chunks.append(ChunkStorageMetadata(torch.Size(offsets), piece.shape))
        blob += buffer.getvalue()
    (folder / "__0_0.distcp").write_bytes(blob)
    meta = Metadata({"w": TensorStorageMetadata(TensorProperties(dtype=full.dtype), full.shape,
                                                chunks)},
                    planner_data={"w": ("w",)}, storage_data=storage)
    (folder / ".metadata").write_bytes(pickle.dumps(meta))


def test_dcp_chunks_are_put_together_as_dcp_load_does(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    full = torch.randn(4, 6)
    _chunked(tmp_path / "d", full, [((0, 0), full[:2, :3]), ((0, 3), full[:2, 3:]),
                                    ((2, 0), full[2:])])
    loaded = {"w": torch.zeros(4, 6)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "d"))  # torch's own reading of the pieces
    assert torch.equal(loaded["w"], full)
    _same(tmp_path / "d", loaded)


@pytest.mark.parametrize("pieces, storage_of, sentence", [
    (lambda f: [((0, 0), f[:3]), ((2, 0), f[2:])], None, "do not tile its shape"),
    (lambda f: [((0, 0), f[:2])], None, "do not tile its shape"),
    (lambda f: [((0, 0), f[:2]), ((3, 0), f[2:])], None, "outside its shape"),
    (lambda f: [((0, 0), f)], lambda _: "../elsewhere.distcp", "not a file in its folder"),
])
def test_dcp_chunks_that_do_not_add_up_are_refused(tmp_path: Path, pieces, storage_of,
                                                    sentence: str) -> None:
    full = torch.randn(4, 6)
    _chunked(tmp_path / "d", full, pieces(full), storage_of)
    with pytest.raises(CheckpointError, match=sentence):
        open_data(tmp_path / "d")


def test_a_dcp_chunk_that_pickles_code_is_refused_and_never_run(tmp_path: Path) -> None:
    """inspect never opens a .distcp file; reading its data goes through the same refusals."""
    from test_readers_malicious import Payload

    marker = tmp_path / "pwned"
    full = torch.randn(2, 2)
    _chunked(tmp_path / "d", full, [((0, 0), full)],
             saved=lambda piece: {"w": piece, "evil": Payload(os.system, f"touch {marker}")})
    with pytest.raises(CheckpointError, match=r"__0_0.distcp \(bytes 0\.\.\d+\): refuses to "
                                              r"run `posix.system`"):
        open_data(tmp_path / "d")
    assert not marker.exists()


# -- hostile files: convert refuses them exactly as inspect does, and writes nothing --------------

def _hostile_files() -> dict[str, object]:
    """case -> a function writing the hostile file into a folder and returning its name."""
    cases: dict[str, object] = {}
    for case, (build, _, _) in ZIP_HOSTILE.items():
        cases[f"zip-{case}"] = lambda folder, build=build: _write(folder, "m.pt", build())
    for case, (header, data, _) in SAFETENSORS_HOSTILE.items():
        cases[f"safetensors-{case}"] = lambda folder, h=header, d=data: _file(folder, h, d).name
    for case, (data, _) in RAW.items():
        cases[f"pickle-{case}"] = lambda folder, data=data: _zip_with_pickle(folder, data).name
    for name in ("system", "exec", "popen"):
        for zip_format in (True, False):
            cases[f"payload-{name}-{'zip' if zip_format else 'legacy'}"] = (
                lambda folder, name=name, zip_format=zip_format: _payload(folder, name,
                                                                          zip_format))
    cases["deep-tuple"] = lambda folder: _write(folder, "deep.pt", archive(with_data_pkl(
        torch_members({"w": torch.zeros(1)}), DEEP_KEY)))
    cases["colliding-keys"] = lambda folder: _write(folder, "hash.pt", archive(with_data_pkl(
        torch_members({"w": torch.zeros(1)}),
        b"\x80\x02}(" + b"".join(k + b"N" for k in _colliding(40)) + b"u.")))
    cases["dcp-payload"] = _dcp_payload
    return cases


def _write(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


def _payload(folder: Path, name: str, zip_format: bool) -> str:
    state = {"w": torch.zeros(3), "evil": payloads(folder / "pwned")[name]}
    torch.save(state, folder / "evil.pt", _use_new_zipfile_serialization=zip_format)
    return "evil.pt"


def _dcp_payload(folder: Path) -> str:
    from test_readers_malicious import Payload

    (folder / "dcp").mkdir()
    (folder / "dcp" / ".metadata").write_bytes(pickle.dumps(Payload(os.system, "true"),
                                                            protocol=4))
    return "dcp"


HOSTILE = _hostile_files()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_convert_refuses_a_hostile_file_as_inspect_does(project, case: str) -> None:
    project.configure('name = "lin"\ntarget = "torch.nn:Linear"\n'
                      'kwargs = { in_features = 3, out_features = 1 }')
    name = HOSTILE[case](project.root)
    before = _snapshot(project.root)
    inspect = project.run("inspect", name)
    convert = project.run("convert", name, "out.safetensors")
    assert inspect.code == 2 and inspect.err.startswith(f"ckptlint: error: {name}"), inspect
    assert (convert.code, convert.out, convert.err) == (2, "", inspect.err)
    assert _snapshot(project.root) == before  # nothing written, not even a temp file
    assert not (project.root / "pwned").exists()
