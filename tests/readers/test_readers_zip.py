"""One reading of a zip: every archive two readers could read differently is refused.

Each hostile archive is assembled byte by byte (`zipkit`) with a benign `data.pkl` where one
reader looks and a payload where another looks. The test asserts that `ckptlint inspect`
refuses it with one sentence and exit 2 and that no payload ran, and records what torch itself
does with the file (`torch.load(weights_only=False)` in one subprocess, in its own folder), so
each refusal is shown to be justified: torch runs the payload, or cannot load the file, or
another common reader sees another file than torch. The valid variants torch writes or loads
(Zip64 end records, deflated re-zips, data descriptors) still read, with the keys torch loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest
import torch
from zipkit import (
    UTF8_FLAG,
    Entry,
    Layout,
    StorageStandIn,
    archive,
    central_record,
    end_record,
    local_record,
    named,
    payload_pickle,
    tensor_pickle,
    torch_members,
    zip64_end_records,
)

from ckptlint.commands.cli import main
from ckptlint.core.errors import CheckpointError
from ckptlint.readers import read_checkpoint

# three tensors: with three copies of data.pkl, torch's binary search lands on the middle one
STATE = {f"t{i}": torch.zeros(i + 1) for i in range(3)}
BASE = torch_members(STATE)
PKL = named(BASE, b"/data.pkl")
REST = [e for e in BASE if e is not PKL]
N = len(BASE)


def marker(case: str) -> str:
    return f"pwned-{case}"  # relative: each reader runs in a folder of its own


def evil(case: str, pad: int = 0) -> bytes:
    return payload_pickle(marker(case)) + b"\0" * pad  # the unpickler stops at STOP


def _ends(body: bytes, count: int, cd: bytes) -> bytes:
    return zip64_end_records(len(body) + len(cd), count, len(cd), len(body)) + \
        end_record(count, len(cd), len(body))


def _decoy_directory() -> bytes:
    """The end record points at a decoy directory (payload); zipfile's offset fix-up finds
    the real one just before the end record (benign)."""
    lay = Layout([replace(PKL, data=evil("decoy-directory", pad=2048)), PKL, *REST])
    body = lay.members()
    decoy = lay.directory([lay.entries[0], *REST], [lay.offsets[0], *lay.offsets[2:]])
    shift = len(decoy)  # zipfile adds (end - size - offset) to every offset it reads
    real = lay.directory(lay.entries[1:], lay.offsets[1:], shift=shift)
    return body + decoy + real + end_record(N, len(real), len(body))


def _two_end_records() -> bytes:
    """Directory 1 (benign) has an end record whose comment is a second end record, pointing
    at directory 2 (payload)."""
    lay = Layout([PKL, *REST, replace(PKL, data=evil("two-end-records"))])
    body = lay.members()
    first = lay.directory(lay.entries[:-1], lay.offsets[:-1])
    second = lay.directory([lay.entries[-1], *REST], [lay.offsets[-1], *lay.offsets[1:-1]])
    inner = end_record(N, len(second), len(body) + len(first))
    return body + first + second + end_record(N, len(first), len(body), comment=inner)


def _zip64_locator_elsewhere() -> bytes:
    """The Zip64 locator points at a decoy Zip64 record (and directory, payload); zipfile
    reads the record just before the locator (benign)."""
    lay = Layout([PKL, *REST, replace(PKL, data=evil("zip64-locator"))])
    body = lay.members()
    decoy = lay.directory([lay.entries[-1], *REST], [lay.offsets[-1], *lay.offsets[1:-1]])
    real = lay.directory(lay.entries[:-1], lay.offsets[:-1])
    decoy_record_at = len(body) + len(decoy)
    decoy_record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, N, N,
                               len(decoy), len(body))
    real_at = decoy_record_at + len(decoy_record)
    ends = zip64_end_records(real_at + len(real), N, len(real), real_at,
                             locator_points_at=decoy_record_at)
    return body + decoy + decoy_record + real + ends + end_record(N, len(real), real_at)


def _zip64_disagrees() -> bytes:
    """The Zip64 end record names a decoy directory (payload), the classic one the real one."""
    lay = Layout([PKL, *REST, replace(PKL, data=evil("zip64-disagrees"))])
    body = lay.members()
    decoy = lay.directory([lay.entries[-1], *REST], [lay.offsets[-1], *lay.offsets[1:-1]])
    real = lay.directory(lay.entries[:-1], lay.offsets[:-1])
    at = len(body) + len(decoy) + len(real)
    return body + decoy + real + zip64_end_records(at, N, len(decoy), len(body)) + \
        end_record(N, len(real), len(body) + len(decoy))


def _hidden_between() -> bytes:
    """A local entry for data.pkl (payload) between two members, in no directory entry."""
    lay = Layout([PKL, *REST])
    body = lay.members()
    hidden = local_record(replace(PKL, data=evil("hidden-between")))
    cut = lay.offsets[1]
    body = body[:cut] + hidden + body[cut:]
    offsets = [o if o < cut else o + len(hidden) for o in lay.offsets]
    cd = lay.directory(None, offsets)
    return body + cd + _ends(body, N, cd)


def _member_inside_member() -> bytes:
    """A member whose local header sits inside another member's data."""
    inner = Entry(b"archive/extra", evil("member-inside-member"))
    carrier = replace(PKL, data=PKL.data + local_record(inner))
    lay = Layout([carrier, *REST])
    body = lay.members()
    inner_at = lay.offsets[0] + 30 + len(PKL.name) + len(PKL.data)
    entries = [carrier, *REST, inner]
    cd = lay.directory(entries, [*lay.offsets, inner_at])
    return body + cd + _ends(body, len(entries), cd)


def _prefixed() -> bytes:
    """A benign archive behind 64 bytes of prefix, offsets not adjusted (zipfile fixes them
    up, torch reads at the offsets written)."""
    return b"PK\x03\x04" + b"\0" * 60 + archive([PKL, *REST], zip64_end=False)


def _outside_folder() -> bytes:
    """The first member's folder has no data.pkl; another folder has one."""
    moved = [replace(e, name=b"a/" + e.name.partition(b"/")[2]) for e in REST]
    return archive([moved[0], replace(PKL, name=b"b/data.pkl"), *moved[1:]])


def _short_record() -> bytes:
    storage = named(BASE, b"/data/0")
    return archive([replace(e, data=e.data[:2]) if e is storage else e for e in BASE])


# case -> (the archive, what torch.load(weights_only=False) does with it, ckptlint's sentence)
HOSTILE: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "three-copies": (lambda: archive([PKL, replace(PKL, data=evil("three-copies")), PKL, *REST]),
                     "ran", "two members named archive/data.pkl: torch and other readers would "
                            "load different ones"),
    "two-copies": (lambda: archive([replace(PKL, data=evil("two-copies")), PKL, *REST]),
                   "loaded", "two members named archive/data.pkl"),
    "case": (lambda: archive([PKL, replace(PKL, name=b"archive/DATA.PKL",
                                           data=evil("case")), *REST]),
             "ran", "members archive/data.pkl and archive/DATA.PKL, whose names differ only in "
                    "case: torch's lookup ignores case and may read either"),
    "decoy-directory": (_decoy_directory, "ran", "Python's zipfile would shift every offset and "
                                                 "read other bytes than torch"),
    "two-end-records": (_two_end_records, "ran", "has two end-of-central-directory records, one "
                                                 "inside the other's comment"),
    "zip64-locator": (_zip64_locator_elsewhere, "ran", "has a Zip64 locator pointing at byte"),
    "zip64-disagrees": (_zip64_disagrees, "ran", "has end records that disagree on its directory "
                                                 "offset"),
    "local-name": (lambda: archive([replace(PKL, data=evil("local-name"),
                                            local_name=b"archive/other.pkl"), *REST]),
                   "ran", "member archive/data.pkl is called archive/other.pkl in its local "
                          "header: readers that trust local headers see another file"),
    "local-method": (lambda: archive([replace(PKL, data=evil("local-method"),
                                              local_flags=0x0001), *REST]),
                     "ran", "member archive/data.pkl has other flags or another compression "
                            "method in its local header than in the directory"),
    "flag-0x20": (lambda: archive([replace(PKL, data=evil("flag-0x20"), flags=0x20), *REST]),
                  "failed", "member archive/data.pkl has flag bits 0x0020"),
    "encrypted": (lambda: archive([replace(PKL, data=evil("encrypted"), flags=0x01), *REST]),
                  "failed", "member archive/data.pkl has flag bits 0x0001"),
    "strong-encryption": (lambda: archive([replace(PKL, data=evil("strong-encryption"),
                                                   flags=0x40), *REST]),
                          "failed", "member archive/data.pkl has flag bits 0x0040"),
    "bad-crc": (lambda: archive([replace(PKL, data=evil("bad-crc"), crc=1234), *REST]),
                "ran", "member archive/data.pkl fails its CRC check"),
    "data-before-first": (lambda: Layout([PKL, *REST], prefix=local_record(
        replace(PKL, data=evil("data-before-first")))).build(),
        "loaded", "bytes before its first member that belong to no member"),
    "hidden-between": (_hidden_between, "loaded", "bytes between members archive/data.pkl and "
                                                  "archive/.format_version that belong to no "
                                                  "member"),
    "member-inside-member": (_member_inside_member, "loaded", "has members archive/data.pkl and "
                                                              "archive/extra that overlap"),
    "nul-in-name": (lambda: archive([PKL, *REST, replace(PKL, name=b"archive/data.pkl\0x",
                                                         data=evil("nul-in-name"))]),
                    "loaded", "has a NUL byte in its name, where zipfile cuts the name short"),
    "prefix-not-fixed-up": (_prefixed, "failed", "says its central directory starts at byte"),
    "outside-folder": (_outside_folder, "failed", "has member b/data.pkl outside the archive's "
                                                  "folder a/: torch refuses such an archive"),
    "short-storage-record": (_short_record, "failed", "declares 4 bytes for storage `0` but the "
                                                      "archive holds 2"),
    # torch keeps the first declaration of a storage: `b` would load as float32, not int64
    "storage-declared-twice": (lambda: archive(_with(BASE, tensor_pickle({
        "a": (StorageStandIn(torch.FloatStorage, "0", 1), (1,)),
        "b": (StorageStandIn(torch.LongStorage, "0", 1), (1,))}))),
        "loaded", "declares storage `0` twice, differently (float32 x 1, then int64 x 1)"),
}

# valid variants: torch loads them, and ckptlint must report exactly the keys torch loads


def _rezipped(compression: int) -> bytes:
    buffer = io.BytesIO()
    torch.save(STATE, buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(out, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk: bytes) -> int:  # type: ignore[override]
        self.data += chunk
        return len(chunk)


def _streamed(force_zip64: bool) -> bytes:
    """zipfile writing to a pipe: sizes follow each member in a data descriptor."""
    buffer = io.BytesIO()
    torch.save(STATE, buffer)
    sink = _Unseekable()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, \
            zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with dst.open(info.filename, "w", force_zip64=force_zip64) as handle:
                handle.write(src.read(info))
    return bytes(sink.data)


def _torch_save() -> bytes:
    buffer = io.BytesIO()
    torch.save(STATE, buffer)
    return buffer.getvalue()


VALID: dict[str, Callable[[], bytes]] = {
    "torch-save": _torch_save,  # Zip64 end records, data descriptors, aligned data
    "rezip-deflated": lambda: _rezipped(zipfile.ZIP_DEFLATED),
    "rezip-stored": lambda: _rezipped(zipfile.ZIP_STORED),
    "streamed-descriptors": lambda: _streamed(False),
    "streamed-zip64-descriptors": lambda: _streamed(True),
    "hand-stored-classic-end": lambda: archive(BASE, zip64_end=False),
    "hand-deflated-descriptors": lambda: archive(
        [replace(e, method=8, descriptor=True, flags=UTF8_FLAG) for e in BASE]),
    "hand-zip64-extra-fields": lambda: archive([replace(e, zip64=True) for e in BASE]),
    "hand-archive-comment": lambda: archive(BASE, comment=b"written by hand"),
    "folder-entry-first": lambda: archive([Entry(b"archive/", b""), *BASE]),
    "other-folder-name": lambda: archive([replace(e, name=b"my_model/" +
                                                  e.name.partition(b"/")[2]) for e in BASE]),
}

_TORCH_LOAD = """
import json, os, sys, torch
out = {}
for path in sys.argv[1:]:
    try:
        value = torch.load(path, weights_only=False)
        out[path] = sorted(value) if isinstance(value, dict) else repr(value)
    except Exception as exc:
        out[path] = "failed: " + str(exc).splitlines()[0][:200]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zips")
    made = {}
    for case, (build, _, _) in HOSTILE.items():
        made[case] = folder / f"{case}.pt"
        made[case].write_bytes(build())
    for case, build in VALID.items():
        made[case] = folder / f"{case}.pt"
        made[case].write_bytes(build())
    return made


@pytest.fixture(scope="module")
def torch_verdicts(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What torch.load(weights_only=False) does with each file, run where payloads may land."""
    folder = tmp_path_factory.mktemp("torch-runs-here")
    proc = subprocess.run([sys.executable, "-c", _TORCH_LOAD, *map(str, files.values())],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    loaded = json.loads(proc.stdout)
    verdicts = {}
    for case, path in files.items():
        result = loaded[str(path)]
        ran = (folder / marker(case)).exists()
        verdicts[case] = ("ran" if ran else "failed" if str(result).startswith("failed")
                          else "loaded", result)
    return verdicts


def _inspect(path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inspect", str(path)])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", list(HOSTILE))
def test_ambiguous_archive_is_refused(case: str, files: dict[str, Path], torch_verdicts: dict,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, torch_does, sentence = HOSTILE[case]
    code, out, err = _inspect(files[case], tmp_path, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith(f"ckptlint: error: {files[case]}: ") and sentence in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / marker(case)).exists()
    # the refusal is justified by what torch itself does with the file
    assert torch_verdicts[case][0] == torch_does, torch_verdicts[case]


@pytest.mark.parametrize("case, zipfile_reads", [
    ("three-copies", "benign"), ("case", "benign"), ("decoy-directory", "benign"),
    ("zip64-locator", "benign"), ("nul-in-name", "payload")])
def test_python_zipfile_reads_another_pickle_than_torch(case: str, zipfile_reads: str,
                                                        files: dict[str, Path],
                                                        torch_verdicts: dict) -> None:
    """Where ckptlint used to trust zipfile's view, zipfile and torch read different pickles."""
    with zipfile.ZipFile(files[case]) as view:
        seen = view.read("archive/data.pkl")
    assert (seen == PKL.data) == (zipfile_reads == "benign")
    assert (torch_verdicts[case][0] == "ran") == (zipfile_reads == "benign")


@pytest.mark.parametrize("case", list(VALID))
def test_valid_variant_reads_the_keys_torch_loads(case: str, files: dict[str, Path],
                                                  torch_verdicts: dict) -> None:
    read = read_checkpoint(files[case])
    assert read.format == "torch-zip"
    assert {k: v.shape for k, v in read.signature.tensors.items()} == {
        k: tuple(v.shape) for k, v in STATE.items()}
    assert torch_verdicts[case] == ("loaded", sorted(STATE))


def test_torch_save_writes_what_the_strict_reader_expects(files: dict[str, Path]) -> None:
    """The default torch.save file has the Zip64 end records and data descriptors accepted."""
    data = files["torch-save"].read_bytes()
    assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]
    with zipfile.ZipFile(files["torch-save"]) as view:
        assert all(info.flag_bits & 0x08 for info in view.infolist())


def test_storage_bytes_are_never_read(tmp_path: Path) -> None:
    """Scrambling every storage record (same sizes) changes nothing: only data.pkl is read."""
    scrambled = [replace(e, data=bytes(255 - b for b in e.data)) if b"/data/" in e.name else e
                 for e in BASE]
    plain, mixed = tmp_path / "plain.pt", tmp_path / "scrambled.pt"
    plain.write_bytes(archive(BASE))
    mixed.write_bytes(archive(scrambled))
    assert read_checkpoint(mixed).signature == read_checkpoint(plain).signature


def test_missing_storage_record_is_refused_as_torch_fails_on_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.pt"
    path.write_bytes(archive([e for e in BASE if not e.name.endswith(b"/data/1")]))
    with pytest.raises(CheckpointError, match="has no storage record data/1, which its pickle "
                                              "needs: torch.load would fail"):
        read_checkpoint(path)
    proc = subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r})"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "data/1" in proc.stderr


@pytest.mark.parametrize("record, content, sentence", [
    (b"version", b"11\n", "has file format version 11, which torch does not read"),
    (b"version", b"abc", "has file format version None"),
    (b"byteorder", b"LITTLE", "has a `byteorder` record that is neither little nor big"),
    (b".storage_alignment", b"x", "has a `.storage_alignment` record that is not a number"),
])
def test_records_torch_checks_before_unpickling(tmp_path: Path, record: bytes, content: bytes,
                                                sentence: str) -> None:
    entries = [replace(e, data=content) if e.name.endswith(b"/" + record) else e for e in BASE]
    path = tmp_path / "records.pt"
    path.write_bytes(archive(entries))
    with pytest.raises(CheckpointError, match=sentence.replace("(", r"\(")):
        read_checkpoint(path)


def test_version_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    """std::stoull: leading blanks and a sign are fine, trailing text is ignored."""
    for text in (b" 3", b"+3", b"3abc", b"10"):
        path = tmp_path / "v.pt"
        path.write_bytes(archive([replace(e, data=text) if e.name.endswith(b"/version") else e
                                  for e in BASE]))
        assert set(read_checkpoint(path).signature.tensors) == set(STATE)
    path.write_bytes(archive([e for e in BASE if not e.name.endswith(b"/version")]))
    with pytest.raises(CheckpointError, match="has no `version` record"):
        read_checkpoint(path)


@pytest.mark.parametrize("blob, sentence", [
    (lambda: archive(BASE)[:-5], "has no end-of-central-directory record"),
    (lambda: archive(BASE) + b"junk", "comment does not end the file"),
    (lambda: archive(BASE, comment=b"...PK\x05\x06..."), "comment does not end the file"),
    (lambda: archive(BASE)[:200], "has no end-of-central-directory record"),
    (lambda: archive([replace(PKL, method=12), *REST]), "uses compression method 12"),
    (lambda: archive([replace(PKL, zip64=True), *REST]).replace(
        struct.pack("<HHQQQ", 1, 24, len(PKL.data), len(PKL.data), 0),
        struct.pack("<HHQQQ", 1, 24, len(PKL.data), len(PKL.data) + 1, 0)),
     "is stored but says it is"),
])
def test_broken_structure_is_one_sentence(tmp_path: Path, blob: Callable[[], bytes],
                                          sentence: str) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(blob())
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert sentence in str(info.value) and "\n" not in str(info.value)


def test_a_repeated_zip64_extra_field_is_refused(tmp_path: Path) -> None:
    """miniz reads the first Zip64 field of an entry and zipfile the last."""
    lay = Layout([PKL, *REST])
    body = lay.members()
    extra = struct.pack("<HHQ", 1, 8, 0) * 2
    first = struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21,
                        zipfile.crc32(PKL.data), len(PKL.data), 0xFFFFFFFF, len(PKL.name),
                        len(extra), 0, 0, 0, 0, 0) + PKL.name + extra
    cd = first + b"".join(central_record(e, o) for e, o in zip(REST, lay.offsets[1:]))
    path = tmp_path / "extra.pt"
    path.write_bytes(body + cd + _ends(body, N, cd))
    with pytest.raises(CheckpointError, match="malformed or repeated extra field"):
        read_checkpoint(path)


def test_data_descriptor_that_lies_is_refused(tmp_path: Path) -> None:
    data = archive([replace(e, descriptor=True) for e in BASE])
    sizes = struct.pack("<3L", zipfile.crc32(PKL.data), len(PKL.data), len(PKL.data))
    lied = data.replace(b"PK\x07\x08" + sizes, b"PK\x07\x08" + sizes[:4] + b"\0" * 8, 1)
    path = tmp_path / "descriptor.pt"
    path.write_bytes(lied)
    with pytest.raises(CheckpointError, match="data descriptor that disagrees"):
        read_checkpoint(path)


def test_the_whole_module_pickle_and_legacy_persistent_ids(tmp_path: Path) -> None:
    """A zip pickle naming a whole module (legacy persistent id) is refused: torch.load's zip
    reader only knows storages."""
    pid = b"(X\x06\x00\x00\x00moduleq\x00X\x01\x00\x00\x00mX\x00\x00\x00\x00X\x00\x00\x00\x00tQ."
    path = tmp_path / "module-pid.pt"
    path.write_bytes(archive(list(_with(BASE, b"\x80\x02" + pid))))
    with pytest.raises(CheckpointError, match="persistent id of unknown kind 'module'"):
        read_checkpoint(path)


def _with(entries: list[Entry], pickle_bytes: bytes) -> list[Entry]:
    return [replace(e, data=pickle_bytes) if e.name.endswith(b"/data.pkl") else e
            for e in entries]


def test_open_file_count_is_one(tmp_path: Path) -> None:
    """Reading opens the file once and closes it (no descriptor left behind)."""
    path = tmp_path / "plain.pt"
    path.write_bytes(archive(BASE))
    before = len(os.listdir("/proc/self/fd"))
    read_checkpoint(path)
    assert len(os.listdir("/proc/self/fd")) == before
