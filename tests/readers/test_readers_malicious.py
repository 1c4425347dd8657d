"""Hostile pickles are refused by name, and their payload never runs."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from ckptlint.core.errors import CheckpointError
from ckptlint.readers import UnsafeCheckpointError, read_checkpoint


class Payload:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def payloads(marker: Path) -> dict[str, Any]:
    command = f"touch {marker}"
    return {
        "system": Payload(os.system, command),
        "exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "eval": Payload(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def _zip_with_pickle(tmp_path: Path, data: bytes) -> Path:
    """A genuine torch.save archive whose data.pkl is replaced by `data`."""
    src = tmp_path / "genuine.pt"
    torch.save({"w": torch.zeros(2)}, src)
    out = tmp_path / "hostile.pt"
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(out, "w") as b:
        for info in a.infolist():
            b.writestr(info, data if info.filename.endswith("/data.pkl") else a.read(info))
    return out


@pytest.mark.parametrize("name", ["system", "exec", "eval", "popen"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reduce_payload_in_torch_save(tmp_path: Path, name: str, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    state = {"w": torch.zeros(3), "evil": payloads(marker)[name]}
    path = tmp_path / "evil.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refuses to run `")
    expected = {"system": ("posix.system", "os.system"), "exec": ("builtins.exec",),
                "eval": ("builtins.eval",), "popen": ("subprocess.Popen",)}[name]
    assert any(f"`{g}`" in message for g in expected)
    assert not marker.exists()


RAW = {
    "global-reduce": (b"\x80\x02cposix\nsystem\nX\x0c\x00\x00\x00touch /tmp/x\x85R.",
                      "posix.system"),
    "stack-global": (b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93\x8c\x04pass\x85R.",
                     "builtins.exec"),
    "getattr": (b"\x80\x02c__builtin__\ngetattr\n.", "builtins.getattr"),
    "import": (b"\x80\x02cbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R.", "builtins.__import__"),
    "unknown-function": (b"\x80\x02cmypkg.tools\nwipe_disk\n)R.", "mypkg.tools.wipe_disk"),
    "inst": (b"(S'ls'\nios\nsystem\n.", "os.system"),
    "nested": (b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01cshutil\nrmtree\nX\x01\x00\x00\x00/\x85Rs.",
               "shutil.rmtree"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_raw_opcode_pickles_in_zip(tmp_path: Path, case: str) -> None:
    data, name = RAW[case]
    path = _zip_with_pickle(tmp_path, data)
    with pytest.raises(UnsafeCheckpointError, match=f"`{name}`") as info:
        read_checkpoint(path)
    assert info.value.global_name == name


def test_legacy_file_with_raw_payload(tmp_path: Path) -> None:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    path = tmp_path / "legacy.pt"
    path.write_bytes(header + RAW["global-reduce"][0])
    with pytest.raises(UnsafeCheckpointError, match="`posix.system`"):
        read_checkpoint(path)


def test_dcp_metadata_with_payload(tmp_path: Path) -> None:
    folder = tmp_path / "dcp"
    folder.mkdir()
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(os.system, "true"), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_checkpoint(folder)


def test_huge_memo_index_is_harmless(tmp_path: Path) -> None:
    # the C unpickler would preallocate a 32 GB memo for this LONG_BINPUT
    path = _zip_with_pickle(tmp_path, b"\x80\x02}r\xff\xff\xff\x7f.")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_checkpoint(path)


def test_plain_data_classes_are_inert(tmp_path: Path) -> None:
    import argparse
    import collections
    import datetime

    state = {"state_dict": {"w": torch.zeros(1)},
             "hparams": {"ns": argparse.Namespace(a=1), "when": datetime.datetime(2024, 1, 1),
                         "counts": collections.Counter("aab"), "dd": collections.defaultdict(list),
                         "b": b"\x00\xff", "s": {1, 2}, "c": 1 + 2j}}
    path = tmp_path / "hp.pt"
    torch.save(state, path)
    assert set(read_checkpoint(path).signature.tensors) == {"w"}


def _legacy_parts(data: bytes) -> tuple[list[bytes], bytes]:
    """The five pickles of a legacy torch.save file, and the storage bytes after them."""
    import pickletools

    parts, pos = [], 0
    for _ in range(5):
        end = next(pos + at + 1 for op, _, at in pickletools.genops(data[pos:])
                   if op.name == "STOP")
        parts.append(data[pos:end])
        pos = end
    return parts, data[pos:]


def _tar_header(prefix: bytes, name: bytes, size: int) -> bytes:
    """A 512-byte tar header whose first bytes are `prefix` (pickle bytes, left as they are)."""
    import tarfile

    block = bytearray(512)
    block[:len(name)] = name
    block[100:108], block[108:116], block[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    block[124:136], block[136:148], block[156:157] = b"%011o\0" % size, b"00000000000\0", b"0"
    block[:len(prefix)] = prefix
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % tarfile.calc_chksums(bytes(block))[0]
    return bytes(block)


def test_legacy_stream_that_is_also_a_tar_archive(tmp_path: Path) -> None:
    """A legacy pickle stream whose first block is also a tar header: torch.load tries tarfile
    first and, finding a member named `storages`, unpickles that instead of the stream."""
    marker = tmp_path / "pwned"
    genuine = tmp_path / "genuine.pt"
    torch.save({"w": torch.zeros(2)}, genuine, _use_new_zipfile_serialization=False)
    (magic, protocol, _sys_info, obj, keys), storages = _legacy_parts(genuine.read_bytes())
    payload = pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=0)
    head = magic + protocol + b"\x80\x03}q\x00(X\x0d\x00\x00\x00little_endian\x88X\x03\x00\x00" \
        b"\x00padB"
    start = len(head) + 4  # where the padding's bytes begin: the header fields lie past it
    second = _tar_header(b"", b"storages", len(payload))
    body = second + payload + b"\0" * (-len(payload) % 512)
    padding_len = 512 - start + len(body)
    head += struct.pack("<I", padding_len)
    block = _tar_header(head, b"", 0)
    stream = block + body + b"u." + obj + keys + storages
    assert stream.startswith(head) and start < 100
    path = tmp_path / "polyglot.pt"
    path.write_bytes(stream)
    with pytest.raises(CheckpointError, match="is a tar archive, which torch.load reads as a "
                                              "checkpoint in the pre-1.0 tar format"):
        read_checkpoint(path)
    assert not marker.exists()
    proc = subprocess.run([sys.executable, "-c", f"import torch\ntry: torch.load({str(path)!r}, "
                                                 "weights_only=False)\nexcept Exception: pass"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0 and marker.exists()  # torch ran the tar member's pickle


def _tarfile_accepts(block: bytes) -> bool:
    """torch.load's own test: tarfile reads the first block as a header."""
    import tarfile

    if block[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(block[:512], tarfile.ENCODING, "surrogateescape")
    except (tarfile.HeaderError, ValueError, UnicodeError):
        return False
    return True


def _spellings(value: int) -> list[bytes]:
    """Ways to write a checksum that `int(text, 8)` (after tarfile's NUL cut) accepts, or not."""
    digits = b"%o" % value
    spaced = b"_".join(bytes([d]) for d in digits)
    return [b"%06o\0 " % value, b" %o " % value, b"+%o" % value, b"0o%o" % value,
            b"0O%o" % value, b"\t%o\n" % value, b"\x1c" + digits, spaced, b"-" + digits,
            digits + b"\0junk", b"\x80" + value.to_bytes(7, "big", signed=True),
            b"\xff" + (-value).to_bytes(7, "big", signed=True), b"%o8" % value,
            b"0x" + digits, b":" + digits, digits.replace(b"1", b"\xd9\xa1")]


def test_a_block_is_taken_for_tar_exactly_when_tarfile_takes_it():
    """The check that skips importing tarfile must never say "not tar" where tarfile says
    "tar": a polyglot would then be read as the pickle torch does not run."""
    import random
    import tarfile

    from ckptlint.readers import formats

    rng = random.Random(7)
    blocks = []
    for name in (b"storages", b"x" * 99, b""):
        base = _tar_header(b"", name, 5)
        value = tarfile.calc_chksums(base)[0]
        for field in _spellings(value) + _spellings(tarfile.calc_chksums(base)[1]):
            blocks.append(base[:148] + (field + b"\0" * 8)[:8] + base[156:])
    for i in range(3000):  # random names on a valid header, then random blocks
        block = bytearray(_tar_header(rng.randbytes(100), b"", 0) if i % 2 else
                          rng.randbytes(512))
        block[257:262] = b"xxxxx"
        value = tarfile.calc_chksums(bytes(block))[rng.randrange(2)]
        field = rng.choice(_spellings(value) + [rng.randbytes(8)])
        block[148:156] = (field + b"\0" * 8)[:8]
        blocks.append(bytes(block))
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        info = tarfile.TarInfo("storages")
        info.size = 3
        blocks.append(info.tobuf(fmt, tarfile.ENCODING, "surrogateescape")[:512])
    blocks += [b[:n] for b in blocks[:40] for n in (0, 100, 262, 511)]  # short files
    accepted = [b for b in blocks if _tarfile_accepts(b)]
    assert len(accepted) > 100 and len(accepted) < len(blocks)  # both answers are tried
    assert [formats.is_tar(b) for b in blocks] == [_tarfile_accepts(b) for b in blocks]
    # and a safetensors header never needs tarfile at all
    header = json.dumps({f"layers.{i}.weight": {"dtype": "F32", "shape": [2, 2],
                                                "data_offsets": [16 * i, 16 * i + 16]}
                         for i in range(4)})
    head = len(header).to_bytes(8, "little") + header.encode() + bytes(256)
    assert len(head) >= 512 and not formats._checksum_may_parse(head[148:156])


@pytest.mark.parametrize("global_name", [
    "logging.FileHandler", "socketserver.TCPServer", "zipfile.ZipFile", "timeit.Timer",
    "torch.utils.data.DataLoader", "torch.jit.ScriptModule", "numpy.testing.Tester",
])
def test_classes_that_act_when_built_are_refused(tmp_path: Path, global_name: str) -> None:
    """A capitalised class is otherwise kept as an inert placeholder; these do something when
    torch.load(weights_only=False) builds them (open a file, a socket, compile code)."""
    module, _, name = global_name.rpartition(".")
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R."
    with pytest.raises(UnsafeCheckpointError, match=f"`{global_name}`"):
        read_checkpoint(_zip_with_pickle(tmp_path, data))


def test_a_class_gadget_really_acts_under_torch_load(tmp_path: Path) -> None:
    """logging.FileHandler(path) creates the file: torch.load(weights_only=False) does it."""
    marker = tmp_path / "created-by-the-pickle"
    data = (b"\x80\x02clogging\nFileHandler\nX" + struct.pack("<I", len(str(marker)))
            + str(marker).encode() + b"\x85R.")
    path = _zip_with_pickle(tmp_path, data)
    with pytest.raises(UnsafeCheckpointError, match="`logging.FileHandler`"):
        read_checkpoint(path)
    assert not marker.exists()
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, "
                                          "weights_only=False)"], capture_output=True, timeout=120)
    assert marker.exists()
