"""Find the state dict inside whatever a checkpoint holds, and turn it into a `Signature`.

A checkpoint is a tree of plain containers, `Opaque` placeholders and `TensorRecord`s. The
state dict is the tree itself when it maps keys to tensors, else a well-known entry
(`state_dict`, `model`, `module`, an EMA copy, ...) or the one named by `state_dict_key`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ckptlint.core.dtypes import shape_problem
from ckptlint.core.errors import CheckpointError
from ckptlint.core.keys import MAX_KEYS, natural_sorted
from ckptlint.core.records import Signature, TensorSpec
from ckptlint.readers.pickled import Opaque, PickledDict, TensorRecord

# entries that hold the model's weights, most preferred first; EMA copies only when alone
PRIMARY = ("state_dict", "model_state_dict", "model", "module", "net", "network")
EMA = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model", "module_ema")
# entries whose tensors are never the model's (optimizer moments, scaler state)
NOT_MODELS = ("optimizer", "optimizer_states", "optimizer_state_dict", "optim", "optimizers",
              "lr_scheduler", "lr_schedulers", "scheduler", "scaler", "callbacks", "loops")
_MAX_DEPTH = 4  # how deep an unnamed state dict is looked for
_MAX_MODULE_DEPTH = 64  # nesting of a pickled whole nn.Module


def entries(node: Any) -> Mapping[Any, Any] | None:
    """The key -> value view of a mapping-like node, or None if it is not one."""
    if isinstance(node, dict):
        return node
    if isinstance(node, Opaque):
        if isinstance(node.state, dict) and "_modules" in node.state:
            return module_state_dict(node)
        if node.items:
            return node.items
        if isinstance(node.state, dict):
            return node.state
    return None


def module_state_dict(module: Opaque) -> dict[str, Any]:
    """The state dict of a whole pickled `nn.Module`, from its `_parameters`/`_buffers`."""
    state: dict[str, Any] = {}
    stack: list[tuple[str, Any, int]] = [("", module, 0)]
    seen: set[int] = set()
    while stack:
        prefix, node, depth = stack.pop()
        attrs = node.state if isinstance(node, Opaque) else None
        if not isinstance(attrs, dict) or id(node) in seen or depth > _MAX_MODULE_DEPTH:
            continue
        seen.add(id(node))
        skip = attrs.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, (set, frozenset)) else set()
        for table in ("_parameters", "_buffers"):
            for name, value in _dict_items(attrs.get(table)):
                if isinstance(value, TensorRecord) and name not in skip:
                    state[prefix + name] = value
        children = list(_dict_items(attrs.get("_modules")))
        stack.extend((f"{prefix}{name}.", child, depth + 1) for name, child in reversed(children))
    return state


def _dict_items(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield from ((k, v) for k, v in value.items() if isinstance(k, str))


class _Walk:
    """One search for the state dict: what each node holds is worked out once.

    Pickles share objects through their memo, so one subtree may hang below thousands of
    entries; remembering per node keeps the search linear in the tree's size.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, Mapping[Any, Any] | None]] = {}
        self._holds: dict[tuple[int, int], bool] = {}

    def entries(self, node: Any) -> Mapping[Any, Any] | None:
        known = self._entries.get(id(node))
        if known is None or known[0] is not node:
            known = self._entries[id(node)] = (node, entries(node))
        return known[1]

    def has_tensors(self, node: Any) -> bool:
        found = self.entries(node)
        return found is not None and any(isinstance(v, TensorRecord) for v in found.values())

    def holds_tensors(self, node: Any, depth: int = _MAX_DEPTH) -> bool:
        """Whether tensors sit within `depth` levels below `node`."""
        key = (id(node), depth)
        if key not in self._holds:
            self._holds[key] = False  # a cycle back to this node adds nothing
            values = list((self.entries(node) or {}).values())
            self._holds[key] = any(isinstance(v, TensorRecord) for v in values) or (
                depth > 1 and any(self.holds_tensors(v, depth - 1) for v in values))
        return self._holds[key]


def locate(root: Any, path: str, state_dict_key: str | None) -> tuple[Mapping[str, Any], str]:
    """The state dict and a note saying which entry it is (empty for a plain state dict)."""
    walk = _Walk()
    if state_dict_key:
        node = follow(root, state_dict_key, path)
        if not walk.has_tensors(node):
            raise CheckpointError(path, f"entry `{state_dict_key}` holds no tensors, so it is "
                                        "not a state dict")
        return _mapping(node), f"using the `{state_dict_key}` entry (as asked)"
    return _choose(walk, root, path, "", 0)


def _mapping(node: Any) -> Mapping[str, Any]:
    found = entries(node)
    assert found is not None  # callers checked has_tensors
    return found


def _choose(walk: _Walk, node: Any, path: str, where: str,
            depth: int) -> tuple[Mapping[str, Any], str]:
    found = walk.entries(node)
    if found is None:
        raise CheckpointError(path, f"holds a {_kind(node)}, not a state dict")
    named = [k for k in (*PRIMARY, *EMA) if k in found and walk.holds_tensors(found[k])]
    if named and depth < _MAX_DEPTH:
        chosen = named[0]
        inner, note = _choose(walk, found[chosen], path, f"{where}{chosen}.", depth + 1)
        note = note or f"using the `{where}{chosen}` entry"
        others = ", ".join(f"`{where}{k}`" for k in named[1:])
        return inner, note + (f" (also present: {others}; choose with state_dict_key)"
                              if others else "")
    if walk.has_tensors(node):
        if isinstance(node, Opaque) and "_modules" in (node.state or {}):
            return found, f"the file pickles a whole `{node.global_name}`; read its parameters"
        return found, ""
    return _search(walk, found, path, where)


def _search(walk: _Walk, found: Mapping[Any, Any], path: str,
            where: str) -> tuple[Mapping[str, Any], str]:
    """An unnamed entry holding tensors, when exactly one (optimizer state aside) does."""
    candidates = [k for k, v in found.items()
                  if isinstance(k, str) and k not in NOT_MODELS and walk.holds_tensors(v)]
    if len(candidates) == 1:
        key = candidates[0]
        inner, note = _choose(walk, found[key], path, f"{where}{key}.", _MAX_DEPTH)
        return inner, note or f"using the `{where}{key}` entry"
    if not candidates:
        keys = ", ".join(f"`{k}`" for k in list(found)[:8] if isinstance(k, str))
        raise CheckpointError(path, "holds no state dict (no entry maps keys to tensors"
                                    + (f"; its entries are {keys})" if keys else ")"))
    names = ", ".join(f"`{where}{k}`" for k in candidates[:8])
    raise CheckpointError(path, f"holds several tensor dicts ({names}); choose one with "
                                "state_dict_key")


def follow(root: Any, dotted: str, path: str) -> Any:
    """The entry at a dotted path; a key may itself contain dots (`a.b` as one key)."""
    node, rest = root, dotted
    while rest:
        found = entries(node)
        if found is None:
            raise CheckpointError(path, f"has no entry `{dotted}`: `{dotted[:-len(rest)]}` "
                                        f"is a {_kind(node)}")
        parts = rest.split(".")
        for n in range(len(parts), 0, -1):
            head = ".".join(parts[:n])
            if head in found:
                node, rest = found[head], ".".join(parts[n:])
                break
        else:
            keys = ", ".join(f"`{k}`" for k in list(found)[:12] if isinstance(k, str))
            raise CheckpointError(path, f"has no entry `{dotted}` (entries there: {keys})")
    return node


def _kind(node: Any) -> str:
    if isinstance(node, Opaque):
        return f"`{node.global_name}` object"
    return type(node).__name__


def signature(state: Mapping[str, Any], path: str, metadata: Any = None,
              ties_recorded: bool = False) -> Signature:
    """The signature of a state dict of `TensorRecord`s; non-tensors are skipped."""
    if len(state) > MAX_KEYS:
        raise CheckpointError(path, f"holds {len(state):,} entries, more than the {MAX_KEYS:,} "
                                    "ckptlint reads")
    tensors: dict[str, TensorSpec] = {}
    views: dict[tuple, list[str]] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, TensorRecord):
            problem = shape_problem(value.dtype, value.shape)
            if problem:
                raise CheckpointError(path, f"tensor `{key}` {problem}")
            if not value.fits():
                raise CheckpointError(path, f"tensor `{key}` {list(value.shape)} runs past the "
                                            "end of its storage: the file lies about its data")
            tensors[key] = TensorSpec(value.dtype, value.shape)
            if value.storage is not None:
                views.setdefault(value.view, []).append(key)
        elif key.endswith("_extra_state"):
            tensors[key] = TensorSpec("object", ())
    if metadata is None and isinstance(state, PickledDict):
        metadata = state.metadata
    return Signature(tensors=tensors, versions=versions(metadata), aliases=aliases(views),
                     has_metadata=isinstance(metadata, Mapping), source="checkpoint",
                     ties_recorded=ties_recorded)


def versions(metadata: Any) -> dict[str, int]:
    """Module prefix -> `_version`, for the versions that differ from 1 (as the build records)."""
    if not isinstance(metadata, Mapping):
        return {}
    found: dict[str, int] = {}
    for prefix, meta in metadata.items():
        version = meta.get("version") if isinstance(meta, Mapping) else None
        if isinstance(prefix, str) and type(version) is int and version != 1:
            found[prefix] = version
    return found


def aliases(views: Mapping[tuple, list[str]]) -> dict[str, str]:
    """Each tied key -> the naturally first key viewing the same storage bytes the same way."""
    tied: dict[str, str] = {}
    for keys in views.values():
        first, *rest = natural_sorted(keys)
        tied.update(dict.fromkeys(rest, first))
    return tied


def under(tensors: Mapping[str, Any], prefix: str, path: str) -> dict[str, Any]:
    """The entries of a flat key space below `prefix.`, with that prefix stripped."""
    head = prefix.rstrip(".") + "."
    found = {key[len(head):]: value for key, value in tensors.items() if key.startswith(head)}
    if not found:
        raise CheckpointError(path, f"has no keys under `{head}` (state_dict_key `{prefix}`)")
    return found


def under_tied(tied: Mapping[str, str], prefix: str) -> dict[str, str]:
    head = prefix.rstrip(".") + "."
    return {k[len(head):]: v[len(head):] for k, v in tied.items()
            if k.startswith(head) and v.startswith(head)}
