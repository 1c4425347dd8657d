"""Sharded checkpoints: a `*.index.json` whose `weight_map` names the shard of every key.

Hugging Face writes these for safetensors and for torch `.bin` shards alike. Each shard is read
by the reader its content calls for, and the index must agree with what the shards hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import replace
from ckptlint.core.records import Signature, TensorSpec
from ckptlint.core.urls import RemotePath
from ckptlint.readers import formats, statedict
from ckptlint.readers.base import MAX_TEXT_BYTES, CheckpointRead, read_small
from ckptlint.readers.files import lexists

FORMAT = formats.SHARDED
ShardReader = Callable[[Path], CheckpointRead]


sniff = formats.sharded


def read(path: Path, state_dict_key: str | None = None, *,
         read_shard: ShardReader) -> CheckpointRead:
    """The shards' signatures merged as the index maps them; `read_shard` is the dispatcher's
    (it picks each shard's reader), handed in so this module never imports it back."""
    where = str(path)
    weight_map = _weight_map(path)
    names = sorted(set(weight_map.values()))
    reads = _read_shards(path, names, read_shard)
    for key, name in weight_map.items():
        if key not in reads[name].signature.tensors:
            raise CheckpointError(where, f"maps `{key}` to shard {name}, which does not hold it")
    sig, tied = _merge(reads, where)
    note = f"{len(reads)} shards ({', '.join(sorted({r.format for r in reads.values()}))})"
    if state_dict_key:
        sig = replace(sig, tensors=statedict.under(sig.tensors, state_dict_key, where),
                      aliases=statedict.under_tied(sig.aliases, state_dict_key))
        tied = statedict.under_tied(tied, state_dict_key)
        note += f"; using the keys under `{state_dict_key}.` (as asked)"
    return CheckpointRead(sig, FORMAT, note, tied=tied)


def _read_shards(index: Path, names: list[str],
                 shard_reader: ShardReader) -> dict[str, CheckpointRead]:
    """Each shard's signature: a remote folder's concurrently (each shard costs a round trip
    or two), a local one's in turn. Either way the first shard by name that fails is the error."""
    def one(name: str) -> CheckpointRead:
        return shard_reader(_shard_path(index, name))

    if isinstance(index, RemotePath):
        from ckptlint.readers.remote import gather

        return dict(zip(names, gather(one, names)))
    return {name: one(name) for name in names}


def _weight_map(path: Path) -> dict[str, str]:
    try:
        index = json.loads(read_small(path, MAX_TEXT_BYTES, "an index file").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(str(path), f"is not valid JSON ({type(exc).__name__})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise CheckpointError(str(path), "has no `weight_map` of key -> shard file names")
    return weight_map


def _shard_path(index: Path, name: str) -> Path:
    # shard names come from the file: a path out of the folder is refused, not followed
    if not name or "/" in name or "\\" in name or name in (".", "..") or ":" in name:
        raise CheckpointError(str(index), f"names shard {name!r}, which is not a file name in "
                                          "its folder")
    shard = index.parent / name
    if not lexists(shard):
        raise CheckpointError(str(index), f"names shard {name}, which does not exist")
    return shard  # its reader refuses a folder, FIFO or device there with its own sentence


def _merge(reads: dict[str, CheckpointRead], where: str) -> tuple[Signature, dict[str, str]]:
    tensors: dict[str, TensorSpec] = {}
    versions: dict[str, int] = {}
    aliases: dict[str, str] = {}
    tied: dict[str, str] = {}
    for name, shard in reads.items():
        for key, spec in shard.signature.tensors.items():
            if key in tensors:
                raise CheckpointError(where, f"has tensor `{key}` in more than one shard "
                                             f"(again in {name})")
            tensors[key] = spec
        versions.update(shard.signature.versions)
        aliases.update(shard.signature.aliases)
        tied.update(shard.tied)
    has_metadata = any(r.signature.has_metadata for r in reads.values())
    sig = Signature(tensors=tensors, versions=versions, aliases=aliases,
                    has_metadata=has_metadata, source="checkpoint")
    return sig, {k: v for k, v in tied.items() if k not in tensors and v in tensors}
