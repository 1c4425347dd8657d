"""`torch.distributed.checkpoint` folders: only the `.metadata` pickle is read.

It pickles a `Metadata` dataclass: `state_dict_metadata` maps each flattened key to a
`TensorStorageMetadata` (dtype in `properties`, `size`) or a `BytesStorageMetadata`, and
`planner_data` keeps each key's path in the nested dict that was saved. The dataclasses come
back as inert placeholders from the restricted unpickler; the `.distcp` shards are never opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record
from ckptlint.readers import formats, statedict, unpickler
from ckptlint.readers.base import (MAX_PICKLE_BYTES, CheckpointRead, UnsafeCheckpointError,
                                   read_small)
from ckptlint.readers.files import is_folder
from ckptlint.readers.pickled import DType, Opaque, TensorRecord

FORMAT = formats.DCP
METADATA = formats.DCP_METADATA
_MODULE = "torch.distributed.checkpoint.metadata."


sniff = formats.dcp


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    return parse(path, state_dict_key).read


@record
class Parsed:
    """The folder read as `read` reads it, with what `readers.data` needs for the bytes: the
    `Metadata` fields, and the flattened key of each located tensor (by the record's id)."""

    read: CheckpointRead
    state: Mapping[str, Any]
    fields: Mapping[str, Any]
    fqns: Mapping[int, str]


def parse(path: Path, state_dict_key: str | None = None) -> Parsed:
    file = path / METADATA if is_folder(path) else path
    where = str(file)
    data = read_small(file, MAX_PICKLE_BYTES, "a .metadata pickle")
    try:
        root = unpickler.loads(data, ids="none").value
    except unpickler.PickleRefused as exc:
        raise UnsafeCheckpointError(where, exc.name, METADATA) from None
    except unpickler.PickleInvalid as exc:
        raise CheckpointError(where, f"{exc}") from None
    fields = _fields(root, "Metadata", where)
    records = _records(fields.get("state_dict_metadata"), where)
    tree = _tree(records, fields.get("planner_data"))
    state, note = statedict.locate(tree, where, state_dict_key)
    fqns = {id(r): fqn for fqn, r in records.items() if r is not None}
    return Parsed(CheckpointRead(statedict.signature(state, where), FORMAT, note), state,
                  fields, fqns)


def _fields(node: Any, cls: str, where: str) -> dict:
    if not (isinstance(node, Opaque) and node.global_name == _MODULE + cls
            and isinstance(node.state, dict)):
        raise CheckpointError(where, f"is not a torch.distributed.checkpoint {cls} pickle")
    return node.state


def _records(table: Any, where: str) -> dict[str, Any]:
    """Flattened key -> TensorRecord (tensors) or None (pickled bytes such as `epoch`)."""
    if not isinstance(table, dict):
        raise CheckpointError(where, "has no state_dict_metadata table")
    records: dict[str, Any] = {}
    for key, meta in table.items():
        if not isinstance(key, str):
            continue
        if isinstance(meta, Opaque) and meta.global_name == _MODULE + "TensorStorageMetadata":
            records[key] = _tensor(key, meta, where)
        else:
            records[key] = None
    return records


def _tensor(key: str, meta: Opaque, where: str) -> TensorRecord:
    fields = meta.state if isinstance(meta.state, dict) else {}
    props = fields.get("properties")
    state = props.state if isinstance(props, Opaque) else None
    # TensorProperties pickles its fields as a tuple through __setstate__, dtype first
    dtype = state[0] if isinstance(state, tuple) and state else (
        state.get("dtype") if isinstance(state, dict) else None)
    size = fields.get("size")
    if not isinstance(dtype, DType) or not isinstance(size, tuple) or not all(
            type(d) is int and d >= 0 for d in size):
        raise CheckpointError(where, f"has malformed metadata for tensor `{key}`")
    return TensorRecord(dtype.name, size)


def _tree(records: Mapping[str, Any], planner_data: Any) -> dict[str, Any]:
    """The nested dict that was saved, rebuilt from each key's planner path when known."""
    tree: dict[str, Any] = {}
    paths = planner_data if isinstance(planner_data, dict) else {}
    for key, record in records.items():
        path = paths.get(key)
        parts = [str(p) for p in path] if isinstance(path, tuple) and path else [key]
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if record is not None:
            node[parts[-1]] = record
    return tree
