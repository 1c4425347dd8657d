"""The `torch.save` zip format (torch >= 1.6; .pt/.pth/.bin/.ckpt): only `data.pkl` is read.

The archive's central directory says where `<archive>/data.pkl` is; that one member goes through
the restricted unpickler. Storage records (`<archive>/data/N`) are never opened: their sizes in
the directory are compared with what the pickle declares, and a record that is absent is
tolerated, since the signature needs none of its bytes.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from ckptlint.errors import CheckpointError
from ckptlint.readers import statedict, unpickler
from ckptlint.readers.base import MAX_PICKLE_BYTES, CheckpointRead, UnsafeCheckpointError
from ckptlint.readers.unpickler import TensorRecord

FORMAT = "torch-zip"
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError,
               RuntimeError, EOFError, OSError, ValueError, KeyError, OverflowError,
               UnicodeDecodeError)


def sniff(path: Path, head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            member = _data_pkl(archive, where)
            root = _unpickle(archive, member, where)
            sizes = {i.filename: i.file_size for i in archive.infolist()}
    except _ZIP_ERRORS as exc:
        raise CheckpointError(where, f"is not a readable zip archive ({_detail(exc)})") from None
    state, note = statedict.locate(root, where, state_dict_key)
    _check_records(state, sizes, member.rpartition("data.pkl")[0], where)
    return CheckpointRead(statedict.signature(state, where), FORMAT, note)


def _data_pkl(archive: zipfile.ZipFile, where: str) -> str:
    names = archive.namelist()
    if not names:
        raise CheckpointError(where, "is an empty zip archive, not a torch.save file")
    # torch names every record `<archive name>/...` after the first record's folder
    prefix = names[0].partition("/")[0]
    candidates = [f"{prefix}/data.pkl"] + [n for n in names if n.count("/") == 1
                                           and n.endswith("/data.pkl")]
    for name in candidates:
        if name in archive.NameToInfo:
            if f"{name[:-len('data.pkl')]}constants.pkl" in archive.NameToInfo:
                raise CheckpointError(where, "is a TorchScript archive (torch.jit.save); "
                                             "ckptlint reads torch.save files: save the "
                                             "model's state_dict() instead")
            return name
    raise CheckpointError(where, "is a zip archive without a `data.pkl`, so not a torch.save "
                                 "file")


def _unpickle(archive: zipfile.ZipFile, member: str, where: str) -> Any:
    info = archive.getinfo(member)
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(where, f"has a {info.file_size}-byte {member}, more than the "
                                     f"{MAX_PICKLE_BYTES >> 20} MiB ckptlint reads")
    with archive.open(info) as handle:
        data = handle.read(MAX_PICKLE_BYTES + 1)
    try:
        return unpickler.loads(data)
    except unpickler.PickleRefused as exc:
        raise UnsafeCheckpointError(where, exc.name, member) from None
    except unpickler.PickleInvalid as exc:
        raise CheckpointError(where, f"{member} {exc}") from None


def _check_records(state: Any, sizes: dict[str, int], prefix: str, where: str) -> None:
    """A storage record that is there must hold the bytes the pickle declares for it."""
    for key, record in _tensors(state):
        storage = record.storage
        if storage is None:
            continue
        size = sizes.get(f"{prefix}data/{storage.key}")
        if size is not None and size != storage.nbytes:
            raise CheckpointError(where, f"tensor `{key}` needs {storage.nbytes} bytes of storage "
                                         f"`{storage.key}` but the archive holds {size}: the "
                                         "file lies about its data")


def _tensors(state: Any) -> Iterator[tuple[str, TensorRecord]]:
    for key, value in state.items():
        if isinstance(value, TensorRecord):
            yield key, value


def _detail(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
