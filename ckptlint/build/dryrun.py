"""A model's signature, and torch's own `load_state_dict` run on meta tensors built from a
reference signature: the verdict, with the keys torch drops or a hook takes without a word."""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from typing import Any, Iterator

from ckptlint.build.loadtorch import import_torch
from ckptlint.core.dtypes import OBJECT
from ckptlint.core.keys import ancestors, natural_sorted
from ckptlint.core.records import LoadReport, Signature, TensorSpec


_SIZE_MISMATCH = "size mismatch for "
_TORCH_LOAD_ERROR = "Error(s) in loading state_dict"


class _ExtraState:
    """What stands in, in a dry run, for an entry a module saves with `get_extra_state`.

    A signature records that the entry exists, not its value, so torch's loader is given
    this and the module's `set_extra_state` is not called with it (`_extra_state_kept`).
    """

    def __repr__(self) -> str:
        return "<extra state: only its key is known>"


_EXTRA_STATE = _ExtraState()


def signature_of(module: Any, name: str = "", target: str = "") -> Signature:
    """The state-dict signature of a live module: keys, specs, `_version`s and tied keys."""
    torch = import_torch()
    state = module.state_dict(keep_vars=True)
    tensors: dict[str, TensorSpec] = {}
    specs: dict[tuple, TensorSpec] = {}  # one record per distinct spec: layers repeat them
    owners: dict[int, str] = {}  # each tensor's first key
    ties: dict[str, list[str]] = {}  # first key -> every key holding that tensor
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            role = "parameter" if isinstance(value, torch.nn.Parameter) else "buffer"
            seen = (value.dtype, tuple(value.shape), role)
            spec = specs.get(seen)
            if spec is None:
                spec = specs[seen] = TensorSpec(str(seen[0]).removeprefix("torch."), seen[1], role)
            tensors[key] = spec
            first = owners.setdefault(id(value), key)
            if first != key:
                ties.setdefault(first, [first]).append(key)
        else:
            tensors[key] = TensorSpec(OBJECT, ())
    metadata = getattr(state, "_metadata", None) or {}
    versions = {prefix: meta["version"] for prefix, meta in metadata.items()
                if isinstance(meta, dict) and meta.get("version") not in (None, 1)}
    for prefix, version in versions.items():
        if type(version) is not int:  # a signature file records whole numbers, as torch's own
            raise ValueError(f"module `{prefix or '(the model)'}` has `_version = {version!r}`; "
                             "a signature records only integer versions")
    return Signature(tensors=tensors, versions=versions, aliases=_aliases(ties.values()),
                     has_metadata=bool(metadata), model=name, target=target,
                     torch_version=torch.__version__.split("+")[0], source="code")


def _aliases(groups: Any) -> dict[str, str]:
    """Each tied key -> the naturally first key of its group (independent of statement order)."""
    aliases: dict[str, str] = {}
    for group in groups:
        if len(group) < 2:
            continue
        first, *rest = natural_sorted(group)
        aliases.update(dict.fromkeys(rest, first))
    return aliases


def meta_state_dict(sig: Signature) -> Any:
    """Meta tensors shaped like a signature, with `_metadata`, ready for `load_state_dict`."""
    torch = import_torch()
    state: OrderedDict = OrderedDict()
    for key in natural_sorted(sig.tensors):
        spec = sig.tensors[key]
        dtype = getattr(torch, spec.dtype, None)
        if isinstance(dtype, torch.dtype):
            state[key] = torch.empty(spec.shape, dtype=dtype, device="meta")
        elif spec.dtype == OBJECT:  # present, as the checkpoint has it: torch asks only that
            state[key] = _EXTRA_STATE
    for key, first in sig.aliases.items():
        if key in state and first in state:
            state[key] = state[first]
    if sig.has_metadata:
        prefixes = {p for key in sig.tensors for p in ancestors(key)}
        state._metadata = OrderedDict(  # type: ignore[attr-defined]
            (p, {"version": sig.versions.get(p, 1)}) for p in natural_sorted(prefixes))
    return state


def dry_run_load(module: Any, sig: Signature, current: Signature | None = None) -> LoadReport:
    """Run torch's own `load_state_dict` with meta tensors, so the model's load hooks apply.

    torch is the verdict, with one blind spot watched for: keys under a submodule slot that
    holds None (`nn.ModuleList([None])`, `add_module(name, None)`, `self.attn = None`) are
    dropped without an error, because the unexpected-key check asks only whether the first
    name is in `_modules`, and `load()` then skips None children. Each module's
    `_load_from_state_dict` is watched to see which keys it hands on to such a slot, and which
    keys its own pre-hooks removed or added (a rename or a drop on purpose, the only silence).
    """
    if current is not None and _verdict_is_known(module, sig, current):
        return LoadReport()
    seen: dict[str, list[str]] = {}

    def capture(_module: Any, incompatible: Any) -> None:
        seen["missing"] = list(incompatible.missing_keys)
        seen["unexpected"] = list(incompatible.unexpected_keys)

    watch = _LoadWatch()
    handle = module.register_load_state_dict_post_hook(capture)
    errors: list[str] = []
    hook_errors: list[str] = []
    try:
        state = meta_state_dict(sig)
        linear = linearly_exact(module, len(state))  # before the watch wraps every module
        with watch.watching(module), _extra_state_kept(module):
            load_state_dict(module, state, linear)
    except RuntimeError as exc:
        if str(exc).startswith(_TORCH_LOAD_ERROR):
            errors = _torch_errors(str(exc))
        else:  # raised inside a load hook, not by torch's own checks
            hook_errors = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
    except Exception as exc:  # a load hook that needs real values raises on meta
        hook_errors = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
    finally:
        handle.remove()
    mismatched = [e[len(_SIZE_MISMATCH):].partition(":")[0] for e in errors
                  if e.startswith(_SIZE_MISMATCH)]
    return LoadReport(
        missing=tuple(seen.get("missing", ())),
        unexpected=tuple(seen.get("unexpected", ())),
        mismatched=tuple(mismatched),
        errors=tuple(e for e in errors if not e.startswith(_SIZE_MISMATCH)),
        hook_errors=tuple(hook_errors),
        dropped=tuple(natural_sorted(watch.dropped)),
        none_slots=tuple(natural_sorted(set(watch.dropped.values()))),
        consumed=tuple(natural_sorted(watch.removed)),
        added=tuple(natural_sorted(watch.added)),
    )


def _verdict_is_known(module: Any, sig: Signature, current: Signature) -> bool:
    """Whether torch's dry run could only say "loads", so it need not run.

    torch's `load()` filters the whole state dict once per child at every level, which is
    quadratic in practice (50,000 keys: over a minute). Its verdict is decided by the keys and
    shapes alone when no module can intervene: the same keys with the same shapes and real
    dtypes on both sides, and no module with a load hook, an overridden `_load_from_state_dict`
    (BatchNorm's version upgrade) or extra state. Then missing, unexpected and size mismatch
    are all empty, which is exactly what the full dry run would report (tests/test_build.py
    compares the two on the hook cases). Anything else runs torch's loader.
    """
    torch = import_torch()
    ours, theirs = current.tensors, sig.tensors
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        return False
    if not all(isinstance(getattr(torch, theirs[k].dtype, None), torch.dtype) for k in theirs):
        return False
    base = torch.nn.Module
    return not any(
        # torch's filtering hands such a child's keys to its siblings too: only the loader
        # itself can say what happens
        _odd_child_names(sub)
        or type(sub)._load_from_state_dict is not base._load_from_state_dict
        or "_load_from_state_dict" in vars(sub)
        or _loads_extra_state(sub)
        or sub._load_state_dict_pre_hooks or sub._load_state_dict_post_hooks
        for sub in module.modules())


# torch's loader filters a module's whole share of the state dict once per child: for a list
# of 2,000 blocks holding 12,000 keys that is 24 million `startswith` calls (two seconds)
_QUADRATIC = 2_000_000


def load_state_dict(module: Any, state: Any, linear: bool | None = None) -> None:
    """`module.load_state_dict(state, strict=False, assign=True)`, or its loop run linearly.

    torch's `load_state_dict` is a loop around each module's own `_load_from_state_dict`
    (the per-module checks, hooks, errors), `load_state_dict_post_hook`s and a final error.
    `_load_linearly` is that loop, with each module's share of the keys found by grouping its
    parent's share once instead of filtering it once per child, which is the same only while
    no code can change a parent's share between two of its children's turns. So it is used
    only when `linearly_exact` says so (decide before wrapping anything), and otherwise
    torch's own method runs. Assumption, tested in tests/test_dry_run.py on the hook cases
    (BatchNorm v1, weight_norm, torch's own hooks, extra state, None slots, dotted child
    names, renames, size mismatches): both give the same missing and unexpected keys, the
    same errors in the same order, and call the same hooks.
    """
    if linear is None:
        linear = linearly_exact(module, len(state))
    if not linear:
        module.load_state_dict(state, strict=False, assign=True)
        return
    _load_linearly(module, state)


def linearly_exact(module: Any, keys: int) -> bool:
    """Whether the linear loop may stand in for torch's: the model is big enough for the
    filtering to matter, loads through torch's own `load_state_dict` (not one set on the
    class, the instance or patched into `nn.Module`), and only torch's own code ever holds a
    module's share of the state dict: no module has a `_load_from_state_dict` or a load
    pre-hook of its own, the only places user code receives the dict (and could keep it, to
    change a parent's share after a child has loaded). Post-hooks see only the key lists."""
    method = type(module).load_state_dict
    if getattr(method, "__qualname__", "") != "Module.load_state_dict" or \
            not _torch_own(method) or "load_state_dict" in vars(module):
        return False
    modules = list(module.modules())
    if keys * len(modules) <= _QUADRATIC:
        return False
    return not any(
        "_load_from_state_dict" in vars(sub)
        or not _torch_own(type(sub)._load_from_state_dict)
        or not all(_torch_own(h) for h in sub._load_state_dict_pre_hooks.values())
        for sub in modules)


def _odd_child_names(module: Any) -> bool:
    """A child named "" or "a.b" (setattr allows both): not one segment of a key."""
    return any(not name or "." in name for name in module._modules)


def _torch_own(function: Any) -> bool:
    """Defined in torch itself (a hook wrapper, partial or bound method unwrapped)."""
    function = getattr(function, "hook", function)  # torch's _WrappedHook
    while isinstance(function, functools.partial):
        function = function.func
    function = getattr(function, "__func__", function)
    where = getattr(function, "__module__", None) or ""
    return where == "torch" or where.startswith("torch.")


def _load_linearly(model: Any, state_dict: Any) -> None:
    """torch 2.x's `Module.load_state_dict(strict=False, assign=True)`, step for step, but
    for how each child's share of the state dict is found."""
    from torch.nn.modules.module import _IncompatibleKeys

    missing: list[str] = []
    unexpected: list[str] = []
    errors: list[str] = []
    metadata = getattr(state_dict, "_metadata", None)
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata  # type: ignore[attr-defined]

    def load(module: Any, local: Any, prefix: str = "") -> None:
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        local_metadata["assign_to_params_buffers"] = True
        module._load_from_state_dict(local, prefix, local_metadata, True, missing, unexpected,
                                     errors)
        children = module._modules
        if _odd_child_names(module):  # filter as torch does, for this module only
            shares = {name: {k: v for k, v in local.items() if k.startswith(prefix + name + ".")}
                      for name in children}
        else:
            shares = {}
            start = len(prefix)
            for key, value in local.items():  # after the hooks ran, as torch filters it then
                head, dot, _ = key[start:].partition(".") if key.startswith(prefix) \
                    else ("", "", "")
                if dot:
                    shares.setdefault(head, {})[key] = value
        for name, child in children.items():
            if child is not None:
                load(child, shares.get(name, {}), prefix + name + ".")
        incompatible = _IncompatibleKeys(missing, unexpected)
        for hook in module._load_state_dict_post_hooks.values():
            if hook(module, incompatible) is not None:
                raise AssertionError(
                    "Hooks registered with ``register_load_state_dict_post_hook`` are not "
                    "expected to return new values, if incompatible_keys need to be modified, "
                    "it should be done inplace.")

    load(model, state_dict)
    if errors:
        raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
            model.__class__.__name__, "\n\t".join(errors)))


class _LoadWatch:
    """Wraps every module's `_load_from_state_dict` for one dry run (restored afterwards)."""

    def __init__(self) -> None:
        self.dropped: dict[str, str] = {}  # key -> the None slot it fell under
        self.removed: set[str] = set()     # keys a module's own hooks took out of the dict
        self.added: set[str] = set()       # keys they put in (the new name of a rename)

    @contextlib.contextmanager
    def watching(self, model: Any) -> Iterator[None]:
        wrapped = []
        for sub in model.modules():
            had_own = "_load_from_state_dict" in vars(sub)
            sub._load_from_state_dict = self._wrap(sub, sub._load_from_state_dict)
            wrapped.append((sub, had_own))
        try:
            yield
        finally:
            for sub, had_own in wrapped:
                if had_own:
                    sub._load_from_state_dict = sub._load_from_state_dict.__wrapped__
                else:
                    del sub._load_from_state_dict

    def _wrap(self, sub: Any, original: Any) -> Any:
        def watched(state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> Any:
            before = {k for k in state_dict if k.startswith(prefix)}
            result = original(state_dict, prefix, *args, **kwargs)
            after = {k for k in state_dict if k.startswith(prefix)}
            self.removed |= before - after
            self.added |= after - before
            for key in after:  # what torch's load() hands on to the children next
                head, dot, _ = key[len(prefix):].partition(".")
                if dot and head in sub._modules and sub._modules[head] is None:
                    self.dropped[key] = prefix + head
            return result

        watched.__wrapped__ = original  # type: ignore[attr-defined]
        return watched


@contextlib.contextmanager
def _extra_state_kept(model: Any) -> Iterator[None]:
    """Each module that loads extra state takes the stand-in without a call to its own
    `set_extra_state`, which would be handed a value it cannot read (and may raise on it).

    torch decides missing and unexpected on the class (`type(m).set_extra_state` is not
    `Module`'s) and then calls `self.set_extra_state(value)`, so an instance attribute
    shadows the call and leaves the verdict to torch. Restored afterwards.
    """
    shadowed = [sub for sub in model.modules()
                if _loads_extra_state(sub) and "set_extra_state" not in vars(sub)]
    for sub in shadowed:
        object.__setattr__(sub, "set_extra_state", functools.partial(_set_extra_state, sub))
    try:
        yield
    finally:
        for sub in shadowed:
            object.__delattr__(sub, "set_extra_state")


def _loads_extra_state(module: Any) -> bool:
    """torch's own test, on the class: whether loading hands the module its `_extra_state`."""
    base = import_torch().nn.Module.set_extra_state
    return getattr(type(module), "set_extra_state", base) is not base


def _set_extra_state(module: Any, state: Any) -> None:
    if state is not _EXTRA_STATE:  # a real value (a load hook put it there): the module's own
        type(module).set_extra_state(module, state)


def _torch_errors(text: str) -> list[str]:
    head, sep, body = text.partition(":\n\t")
    if not sep:
        return [text.splitlines()[0] if text else "RuntimeError"]
    return [line.strip() for line in body.split("\n\t") if line.strip()]


def nonpersistent_buffers(module: Any) -> tuple[str, ...]:
    """State-dict names of the buffers registered with persistent=False."""
    return tuple(natural_sorted(f"{path}.{name}" if path else name
                                for path, sub in module.named_modules()
                                for name in getattr(sub, "_non_persistent_buffers_set", ())))
