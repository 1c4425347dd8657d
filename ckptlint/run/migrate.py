"""Migrating a checkpoint: the old file's tensors under the code's keys, streamed to safetensors.

Which old key fills each key of the code is the proven remap (`ckptlint.run.hook`); a key the code
ties to another and the file stored once is filled from its partner, as its own copy
(safetensors refuses shared storage). The header is written first, from the dtypes and shapes
the reader knows, then each tensor's bytes in turn: one tensor is in memory at a time. The file
is staged (`atomic.staged`) and kept only when `verify` says it loads strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

from ckptlint.core.atomic import staged
from ckptlint.core.constants import VERSION as __version__
from ckptlint.core.dtypes import ITEMSIZE, OBJECT, SAFETENSORS_DTYPES
from ckptlint.core.errors import CheckpointError, CkptlintError
from ckptlint.core.keys import natural_key, natural_sorted
from ckptlint.core.record import record
from ckptlint.core.records import Signature
from ckptlint.readers.data import TensorData
from ckptlint.run.hook import Remap

SAFETENSORS_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}
_ALIGN = 8  # safetensors pads its header so that the data region starts 8-byte aligned
META = "ckptlint."  # the prefix of the metadata entries ckptlint writes


class NotProvenError(CkptlintError):
    """The written file does not load strictly; nothing was kept. `reason` says what fails."""

    def __init__(self, out: str, reason: str):
        self.reason = reason
        super().__init__(f"{out}: not written: {reason}")


@record
class Converted:
    """What `convert` wrote: the file, its tensors and bytes, and how the keys were found."""

    out: str
    tensors: int
    nbytes: int
    mapping: Mapping[str, str]  # old key -> new key, for renamed keys
    tied: Mapping[str, str]     # new key -> the key whose tensor it copies
    dropped: tuple[str, ...]


def sources(remap: Remap, current: Signature) -> tuple[dict[str, str], dict[str, str]]:
    """New key -> the old key whose tensor it gets, for each key of the code that has one; and
    the keys filled from their tie (new key -> its partner)."""
    found = {new: old for new, old in remap.moved.items() if new in current.tensors}
    groups: dict[str, list[str]] = {}
    for key, first in current.aliases.items():
        groups.setdefault(first, [first]).append(key)
    tied = {}
    for members in groups.values():
        partner = next((k for k in natural_sorted(members) if k in found), None)
        for key in members:
            if key not in found and partner is not None:
                tied[key] = partner
    return {**found, **{k: found[p] for k, p in tied.items()}}, tied


def convert(data: TensorData, remap: Remap, out: Path, verify: Callable[[Path], str | None],
            model: str, scratch: Path | None = None) -> Converted:
    """Write `out` from `data` under the remap's keys; keep it only if `verify(temp)` returns
    None (else raise `NotProvenError` with its reason, leaving nothing behind)."""
    chosen, tied = sources(remap, remap.current)
    specs = data.checkpoint.signature.tensors
    order = sorted(chosen, key=lambda k: (-ITEMSIZE.get(specs[chosen[k]].dtype, 1), natural_key(k)))
    meta = metadata(data, remap, tied, model)
    head = header(order, chosen, specs, meta, str(data.path))
    with staged(out, scratch) as stage:
        nbytes = _write(stage.handle, head, order, chosen, data)
        stage.finish()
        if not data.unchanged():
            raise CheckpointError(str(data.path), "changed while it was being converted")
        problem = verify(stage.temp)
        if problem is not None:
            raise NotProvenError(str(out), problem)
        stage.commit()
    return Converted(str(out), len(order), nbytes, remap.mapping, tied, tuple(remap.dropped))


def metadata(data: TensorData, remap: Remap, tied: Mapping[str, str],
             model: str) -> dict[str, str]:
    """What the file records: where it came from (path and sha256 of every file read) and how
    its keys were found. `format = pt` is what transformers' loaders look for."""
    digests = data.digests()
    mapping = remap.mapping
    meta = {"format": "pt", f"{META}version": __version__, f"{META}model": model,
            f"{META}source": str(data.path),
            f"{META}source_sha256": next(iter(digests.values())) if len(digests) == 1
            else json.dumps(digests, sort_keys=True),
            f"{META}mapping": json.dumps({k: mapping[k] for k in natural_sorted(mapping)})}
    if tied:
        meta[f"{META}tied"] = json.dumps({k: tied[k] for k in natural_sorted(tied)})
    if remap.dropped:
        meta[f"{META}dropped"] = json.dumps(remap.dropped)
    return meta


def header(order: list[str], chosen: Mapping[str, str], specs: Mapping, meta: dict[str, str],
           where: str) -> bytes:
    """The 8-byte length and the JSON header, padded with spaces to the alignment."""
    doc: dict[str, object] = {"__metadata__": meta}
    offset = 0
    for key in order:
        spec = specs[chosen[key]]
        if spec.dtype == OBJECT:
            raise CkptlintError(f"{where}: `{chosen[key]}` holds a pickled object (a module's "
                                "extra state), which a safetensors file cannot hold")
        code = SAFETENSORS_CODES.get(spec.dtype)
        if code is None:
            raise CkptlintError(f"{where}: tensor `{chosen[key]}` is {spec.dtype}, which "
                                "safetensors has no dtype for")
        size = spec.numel * ITEMSIZE[spec.dtype]
        doc[key] = {"dtype": code, "shape": list(spec.shape),
                    "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    return len(raw).to_bytes(8, "little") + raw


def _write(handle: BinaryIO, head: bytes, order: list[str], chosen: Mapping[str, str],
           data: TensorData) -> int:
    handle.write(head)
    total = 0
    specs = data.checkpoint.signature.tensors
    for key in order:
        chunk = data.read(chosen[key])
        spec = specs[chosen[key]]
        if len(chunk) != spec.numel * ITEMSIZE[spec.dtype]:  # the readers promised this
            raise CheckpointError(str(data.path), f"tensor `{chosen[key]}` read as "
                                                  f"{len(chunk)} bytes, not its size")
        handle.write(chunk)
        total += len(chunk)
        del chunk  # before the next one is read: one tensor in memory at a time
    return total
