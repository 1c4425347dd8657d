"""Which reader reads a path: folders, then each format's sniffer, in `READERS` order."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from ckptlint.core.errors import CheckpointError, CkptlintError
from ckptlint.core.urls import RemotePath, location, scrub
from ckptlint.readers import formats, peft
from ckptlint.readers.base import CheckpointRead, Reader, read_head, unreadable
from ckptlint.readers.files import children, file_kind

T = TypeVar("T")


class _Readers(Mapping[str, Reader]):
    """Format name -> its reader module, in the order their sniffers are asked; a module is
    imported when it is first asked for (`formats` sniffs without them)."""

    def __getitem__(self, name: str) -> Reader:
        module, _ = formats.SNIFFERS[name]
        return importlib.import_module(f"ckptlint.readers.{module}")  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(formats.SNIFFERS)

    def __len__(self) -> int:
        return len(formats.SNIFFERS)


READERS: Mapping[str, Reader] = _Readers()
# formats a shard of a sharded checkpoint may have (an index must not name another index)
SHARD_FORMATS = (formats.TORCH_ZIP, formats.TORCH_LEGACY, formats.SAFETENSORS)
# what a checkpoint folder is looked for, most specific first
_FOLDER_FILES = ("model.safetensors.index.json", "model.safetensors",
                 "pytorch_model.bin.index.json", "pytorch_model.bin")
_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".index.json")
_OTHER_FORMATS = {
    b"GGUF": "a GGUF file (llama.cpp)", b"\x89HDF": "an HDF5 file (Keras?)",
    b"\x93NUMPY": "a NumPy .npy file", b"\x1f\x8b": "a gzip file",
}


def read_checkpoint(path: str | os.PathLike[str] | RemotePath,
                    state_dict_key: str | None = None) -> CheckpointRead:
    """The signature of a checkpoint file or folder (or of a ckptlint signature file), local
    or at a URL (`s3://`, `https://`, ...: read in ranges through fsspec, `remote`).

    `state_dict_key` names the entry holding the state dict in a nested checkpoint (a dotted
    path such as "model.ema"); without it the usual entries are tried and the choice is in
    `CheckpointRead.note`. Raises `CheckpointError` and nothing else.
    """
    place = location(path)
    # a PEFT adapter is read in whichever format it was saved, then understood
    return guarded(path, lambda: peft.adapted(place,
                                               _read(place, state_dict_key, tuple(READERS))))


def guarded(path: str | os.PathLike[str] | RemotePath, reading: Callable[[], T]) -> T:
    """`reading()`, with every failure on untrusted bytes turned into one `CheckpointError`
    naming `path` (a URL without its secrets), exactly as `read_checkpoint` says it."""
    place = location(path)
    where = str(place if isinstance(place, RemotePath) else path)
    try:
        return reading()
    except CkptlintError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(where, str(exc)) from None
    except RecursionError:
        raise CheckpointError(where, "nests too deeply to be read") from None
    except MemoryError:
        raise CheckpointError(where, "needs more memory than it can have") from None
    except Exception as exc:  # untrusted bytes: any other failure means "unreadable", said once
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        if isinstance(place, RemotePath) and detail:
            detail = scrub(detail, place.url)
        raise CheckpointError(where, f"cannot be read ({type(exc).__name__}"
                                     f"{': ' + detail if detail else ''})") from None


def read_shard(path: Path) -> CheckpointRead:
    return _read(path, None, SHARD_FORMATS)


def _read(path: Path, state_dict_key: str | None, allowed: tuple[str, ...]) -> CheckpointRead:
    try:
        kind = file_kind(path)  # before anything opens it: a FIFO or device is refused here
    except OSError as exc:
        raise unreadable(path, exc) from None
    if kind == "folder":
        if formats.DCP not in allowed:
            raise CheckpointError(str(path), "is a folder, not a checkpoint file")
        if formats.dcp(path, b""):
            return READERS[formats.DCP].read(path, state_dict_key)
        inner = folder_checkpoint(path)
        result = _read(inner, state_dict_key, allowed)
        note = f"read {inner.name} in the folder" + (f"; {result.note}" if result.note else "")
        return CheckpointRead(result.signature, result.format, note, result.tied)
    head = _head(path)
    for name in allowed:
        if formats.SNIFFERS[name][1](path, head):
            reader: Any = READERS[name]
            if name == formats.SHARDED:
                return reader.read(path, state_dict_key, read_shard=read_shard)
            return reader.read(path, state_dict_key)
    raise CheckpointError(str(path), _unknown(head, allowed))


def _head(path: Path) -> bytes:
    head = read_head(path)
    if not head:
        raise CheckpointError(str(path), "is empty (0 bytes), not a checkpoint")
    return head


def folder_checkpoint(folder: Path) -> Path:
    """The one checkpoint a folder holds; a special file among them is never chosen."""
    for name in _FOLDER_FILES:
        if _is_file(folder / name):
            return folder / name
    try:
        entries = children(folder)
    except OSError as exc:
        raise unreadable(folder, exc) from None
    found = [p for p in entries if p.name.endswith(_SUFFIXES) and _is_file(p)]
    indexes = [p for p in found if p.name.endswith(".index.json")]
    if len(indexes) == 1 or len(found) == 1:
        return (indexes or found)[0]
    names = ", ".join(p.name for p in found[:6])
    raise CheckpointError(str(folder), (f"holds several checkpoints ({names}); name one" if found
                                        else "holds no checkpoint ckptlint recognises (no "
                                        ".metadata, *.safetensors, *.index.json, *.pt, *.bin)"))


def _is_file(path: Path) -> bool:
    try:
        return file_kind(path) == "file"
    except OSError:
        return False


def _unknown(head: bytes, allowed: tuple[str, ...]) -> str:
    for magic, what in _OTHER_FORMATS.items():
        if head.startswith(magic):
            return f"is {what}, not a checkpoint format ckptlint reads"
    if allowed == SHARD_FORMATS:
        return "is not a safetensors or torch.save file, so it cannot be a shard"
    return ("is not a checkpoint ckptlint can read (safetensors, torch.save zip or legacy, "
            "torch.distributed.checkpoint, or a ckptlint signature file); it starts with "
            f"{head[:16]!r}")
