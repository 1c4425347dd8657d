"""Bounded work on hostile pickles: each is refused with a sentence, long before it costs much.

Every pickle here is assembled opcode by opcode. The cases are the ones an adversarial run
found: nesting that crashes C's recursive hash, keys that collide so a container takes
quadratic time to build in one call, and sharing through the memo that multiplies the work of
a small file. None is refused by a clock: the sentence says which bound ended it.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zipkit import StorageStandIn, archive, tensor_pickle, torch_members, with_data_pkl

from ckptlint.core.errors import CheckpointError
from ckptlint.readers import read_checkpoint, unpickler

P61 = 2**61 - 1  # int hashes are taken modulo this prime: n and n + k*P61 collide


def _long1(n: int) -> bytes:
    body = pickle.encode_long(n)
    return b"\x8a" + bytes([len(body)]) + body


def _colliding(count: int) -> list[bytes]:
    return [_long1(7 + k * P61) for k in range(1, count + 1)]


def _in_zip(tmp_path: Path, data_pkl: bytes, name: str = "hostile.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(archive(with_data_pkl(torch_members({"w": torch.zeros(1)}), data_pkl)))
    return path


DEEP_KEY = b"\x80\x02}" + b"N" + b"\x85" * 2_000_000 + b"Ns."  # {((((None,),),)...): None}


def test_deep_tuple_crashes_a_plain_unpickler(tmp_path: Path) -> None:
    """The hazard is real: hashing the 2,000,000-deep key overflows the C stack."""
    path = tmp_path / "deep.pkl"
    path.write_bytes(DEEP_KEY)
    proc = subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(path)!r}, "
                                                 "'rb').read())"], capture_output=True, timeout=120)
    assert proc.returncode < 0 or proc.returncode >= 128  # killed by a signal (SIGSEGV)


def test_deep_tuple_in_inspect_is_a_sentence(tmp_path: Path) -> None:
    path = _in_zip(tmp_path, DEEP_KEY)
    assert path.stat().st_size > 2_000_000
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "inspect", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"ckptlint: error: {path}: archive/data.pkl nests tuples more than "
                           "1000 deep (a hostile pickle: hashing it would crash the "
                           "interpreter)\n")


def test_deep_tuple_in_check_against_is_a_sentence(project, tmp_path: Path) -> None:
    project.write("m.py", "from torch import nn\nclass M(nn.Linear):\n"
                          "    def __init__(self):\n        super().__init__(1, 1)\n")
    project.configure('name = "m"\ntarget = "m:M"')
    path = _in_zip(project.root, DEEP_KEY)
    run = project.run_subprocess("check", "m", "--against", str(path), "--no-cache")
    assert run.code == 2, run.err
    assert "nests tuples more than 1000 deep" in run.err and "Traceback" not in run.err


def test_shallow_tuples_are_fine() -> None:
    nested = b"\x80\x02}" + b"N" + b"\x85" * 900 + b"Ns."
    (key,) = unpickler.loads(nested).value
    assert isinstance(key, tuple)


@pytest.mark.parametrize("name, data", [
    # FROZENSET of 55,000 colliding integers: 0.6 MB, 27 s before this bound
    ("frozenset", b"\x80\x04(" + b"".join(_colliding(55_000)) + b"\x91."),
    ("dict", b"\x80\x02(" + b"".join(k + b"N" for k in _colliding(30_000)) + b"d."),
    ("setitems", b"\x80\x02}(" + b"".join(k + b"N" for k in _colliding(30_000)) + b"u."),
    ("additems", b"\x80\x04\x8f(" + b"".join(_colliding(55_000)) + b"\x90."),
    ("ordered-dict", b"\x80\x02ccollections\nOrderedDict\n](" +
     b"".join(k + b"N\x86" for k in _colliding(30_000)) + b"e\x85R."),
    ("tuple-keys", b"\x80\x02}(" + b"".join(k + b"\x85N" for k in _colliding(30_000)) + b"u."),
])
def test_colliding_keys_are_refused_before_probing_turns_quadratic(name: str,
                                                                   data: bytes) -> None:
    with pytest.raises(unpickler.PickleInvalid, match="many keys with one hash value"):
        unpickler.loads(data)


def test_colliding_keys_in_a_checkpoint_are_one_sentence(tmp_path: Path) -> None:
    path = _in_zip(tmp_path, b"\x80\x04(" + b"".join(_colliding(55_000)) + b"\x91.")
    with pytest.raises(CheckpointError, match=r"hostile.pt: archive/data.pkl has many keys with "
                                              r"one hash value \(hash flooding"):
        read_checkpoint(path)


def test_a_few_equal_hashes_are_fine() -> None:
    data = b"\x80\x02(" + b"".join(k + b"N" for k in _colliding(10)) + b"d."
    assert len(unpickler.loads(data).value) == 10


def test_shared_tuples_whose_hash_doubles_per_level_are_refused() -> None:
    """t0 = (None,), t(k+1) = (t(k), t(k)) through the memo: 400 bytes, a hash of 2**100 steps."""
    dag = b"N\x85q\x000" + b"".join(
        b"h" + bytes([k]) + b"h" + bytes([k]) + b"\x86q" + bytes([k + 1]) + b"0"
        for k in range(100))
    data = b"\x80\x02}" + dag + b"h" + bytes([100]) + b"Ns."
    assert len(data) < 1000
    with pytest.raises(unpickler.PickleInvalid, match="does far more work than a pickle of its "
                                                      "size can need"):
        unpickler.loads(data)


def test_one_list_copied_over_and_over_is_refused() -> None:
    """OrderedDict(big_list) called 20,000 times on one memoised list."""
    items = b"]q\x00(" + b"".join(b"J" + struct.pack("<i", i) + b"N\x86" for i in range(20_000))
    calls = b"".join(b"h\x01h\x00\x85R0" for _ in range(20_000))
    data = b"\x80\x02" + items + b"e" + b"ccollections\nOrderedDict\nq\x01" + calls + b"N."
    with pytest.raises(unpickler.PickleInvalid, match="does far more work"):
        unpickler.loads(data)


@pytest.mark.parametrize("data, sentence", [
    (b"\x80\x02\x8b" + struct.pack("<i", 10**6) + b"\x01" * 10**6 + b".", "1000000-byte integer"),
    (b"I0x" + b"f" * 100_000 + b"\n.", "integer of more than 4096 bytes"),
    (b"L0x" + b"f" * 100_000 + b"L\n.", "integer of more than 4096 bytes"),
    (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"ab.", "ends inside a byte array"),
    (b"Np2305843009213693952\n.", "memo entry that is not a small non-negative integer"),
    (b"Np-1\n.", "memo entry that is not a small non-negative integer"),
    (b"Ng7\n.", "refers to memo entry 7, which it never stored"),
])
def test_sizes_are_checked_before_anything_is_built(data: bytes, sentence: str) -> None:
    with pytest.raises(unpickler.PickleInvalid, match=sentence):
        unpickler.loads(data)


def test_honest_checkpoints_stay_far_inside_the_budget(tmp_path: Path) -> None:
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(500)])
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(1, 4)).sum().backward()
    opt.step()
    state = {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()],
             "ids": {i: str(i) for i in range(20_000)}, "hparams": {"layers": list(range(50_000))}}
    for proto in (2, 4):
        path = tmp_path / f"big{proto}.pt"
        torch.save(state, path, pickle_protocol=proto)
        assert len(read_checkpoint(path).signature.tensors) == 1000


def test_a_subtree_shared_by_many_entries_is_walked_once(tmp_path: Path) -> None:
    """5,000 entries all pointing at one 50,000-entry dict without tensors: no state dict."""
    wide = b"}q\x00(" + b"".join(b"J" + struct.pack("<i", i) + b"N" for i in range(50_000)) + b"u"
    outer = b"}(" + b"".join(b"X\x04\x00\x00\x00" + f"{i:04}".encode() + b"h\x00"
                             for i in range(5_000)) + b"u"
    path = _in_zip(tmp_path, b"\x80\x02" + wide + b"0" + outer + b".")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_checkpoint(path)


@pytest.mark.parametrize("shape, stride, sentence", [
    ((1,) * 70, (1,) * 70, "70 dimensions"),
    ((2, 2), (1,), r"stride \(1,\) does not match its shape \(2, 2\)"),
])
def test_impossible_tensors_are_refused(tmp_path: Path, shape: tuple, stride: tuple,
                                        sentence: str) -> None:
    from collections import OrderedDict

    class Odd:
        def __reduce__(self) -> tuple:
            return torch._utils._rebuild_tensor_v2, (
                StorageStandIn(torch.FloatStorage, "0", 1), 0, shape, stride, False,
                OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return obj.pid if isinstance(obj, StorageStandIn) else None

    import io
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Odd()})
    with pytest.raises(CheckpointError, match=sentence):
        read_checkpoint(_in_zip(tmp_path, buffer.getvalue()))


def test_huge_dimensions_torch_cannot_hold_are_refused(tmp_path: Path) -> None:
    data = tensor_pickle({"w": (StorageStandIn(torch.FloatStorage, "0", 1), (0, 2**63))})
    with pytest.raises(CheckpointError, match="larger than torch's int64 sizes allow"):
        read_checkpoint(_in_zip(tmp_path, data))
