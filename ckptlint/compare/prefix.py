"""Wrapper prefixes: `module.` (DataParallel/DDP, and `torch.optim.swa_utils.AveragedModel`,
which adds its `n_averaged` counter beside them), `_orig_mod.` (torch.compile), `model.`
(Lightning), `base_model.model.` (PEFT), `_checkpoint_wrapped_module.` (activation checkpointing,
at any depth). Pure: finds the one wrapper that explains a whole key set and re-keys a signature.
"""

from __future__ import annotations

from typing import Mapping

from ckptlint.core.record import record, replace
from ckptlint.core.records import Signature

# most specific first: `base_model.model.` must win over `model.`
WRAPPERS = ("base_model.model.", "module.", "_orig_mod.", "model.")
CHECKPOINT_WRAPPER = "_checkpoint_wrapped_module."
_MAX_NESTING = 4  # DDP around torch.compile around a Lightning model is already three
# keys a wrapper stores beside the wrapped model's own, by the wrapper's prefix:
# AveragedModel (EMA/SWA) keeps `module.<key>` for each key and one `n_averaged` step counter
EXTRAS = {"module.": ("n_averaged",)}
AVERAGED_MODEL = "torch.optim.swa_utils.AveragedModel"


@record
class Wrapper:
    """How the checkpoint's keys differ from the code's by a wrapper.

    `prefix` is what to strip from (side "checkpoint") or add to (side "code") the checkpoint's
    keys; `mapping` re-keys every checkpoint key that changes; `dropped` names the keys the
    wrapper itself added (AveragedModel's `n_averaged`), which the bare model never loads.
    """

    prefix: str
    side: str
    mapping: Mapping[str, str]
    dropped: tuple[str, ...] = ()

    def apply(self, sig: Signature) -> Signature:
        """`sig` as the bare model would receive it: re-keyed, the wrapper's own keys gone."""
        return rekey(without(sig, self.dropped), self.mapping)

    @property
    def help(self) -> str:
        p = self.prefix
        if self.side == "checkpoint" and self.dropped:
            kept = " and ".join(f"k != '{k}'" for k in self.dropped)
            return (f"load the averaged weights into the bare model (save `ema.module.state_dict()`"
                    f", or `{{k.removeprefix('{p}'): v for k, v in sd.items() if {kept}}}`), or "
                    f"set `strip_prefix = \"{p}\"` in the model's entry")
        if self.side == "checkpoint" and p == CHECKPOINT_WRAPPER:
            return (f"remove the segment: `{{k.replace('{p}', ''): v for k, v in sd.items()}}` "
                    f"or set `strip_prefix = \"{p}\"` in the model's entry")
        if self.side == "checkpoint":
            return (f"strip the prefix: `{{k.removeprefix('{p}'): v for k, v in sd.items()}}` "
                    f"or set `strip_prefix = \"{p}\"` in the model's entry")
        return (f"the checkpoint was saved from the unwrapped model: load it into the inner "
                f"module, or add the prefix: `{{'{p}' + k: v for k, v in sd.items()}}`")


def strip(sig: Signature, prefix: str) -> Signature:
    """`sig` with `prefix` removed from its keys (a `_checkpoint_wrapped_module.` at any depth).

    A wrapper's own keys go too when every other key carries the prefix (`strip_prefix =
    "module."` on an AveragedModel file drops `n_averaged`): the bare model has no such key.
    """
    if not prefix:
        return sig
    extras = _extras(list(sig.tensors), prefix, set())
    sig = without(sig, extras)
    return rekey(sig, {k: _stripped(k, prefix) for k in sig.tensors if _stripped(k, prefix) != k})


def without(sig: Signature, keys: tuple[str, ...]) -> Signature:
    """`sig` without `keys` (and any tie naming them)."""
    if not keys:
        return sig
    gone = set(keys)
    return replace(sig, tensors={k: v for k, v in sig.tensors.items() if k not in gone},
                   aliases={k: v for k, v in sig.aliases.items()
                            if k not in gone and v not in gone})


def _extras(keys: list[str], chain: str, others: set[str]) -> tuple[str, ...]:
    """The keys of `keys` a wrapper added beside the model's, when every other key sits under
    `chain` and `chain` starts with that wrapper (AveragedModel's `module.` outermost)."""
    for outer, extras in EXTRAS.items():
        found = tuple(k for k in extras if k in keys and k not in others)
        rest = [k for k in keys if k not in found]
        if found and chain.startswith(outer) and rest and all(k.startswith(chain) for k in rest):
            return found
    return ()


def _stripped(key: str, prefix: str) -> str:
    if prefix == CHECKPOINT_WRAPPER:
        return key.replace(CHECKPOINT_WRAPPER, "")
    return key.removeprefix(prefix)


def rekey(sig: Signature, mapping: Mapping[str, str]) -> Signature:
    """`sig` with keys renamed by `mapping` (module prefixes of `versions` and `aliases` too)."""
    if not mapping:
        return sig

    def key(k: str) -> str:
        return mapping.get(k, k)

    def module(prefix: str) -> str:
        # a module prefix moves with the keys below it: find one key that shows how
        for old, new in mapping.items():
            if prefix == "" or not old.startswith(prefix + "."):
                continue
            tail = old[len(prefix):]
            if new.endswith(tail):
                return new[:len(new) - len(tail)]
        return prefix

    return replace(sig, tensors={key(k): v for k, v in sig.tensors.items()},
                   versions={module(p): v for p, v in sig.versions.items()},
                   aliases={key(k): key(v) for k, v in sig.aliases.items()})


def detect(old: Signature, new: Signature) -> Wrapper | None:
    """The wrapper that every checkpoint key (or every code key) carries and the other side's
    keys do not, when taking it off makes more keys match; None otherwise."""
    old_keys, new_keys = list(old.tensors), set(new.tensors)
    for side, wrapper in (("checkpoint", _stripping(old_keys, new_keys)),
                          ("code", _adding(old_keys, new_keys))):
        if wrapper is None:
            continue
        before = len(new_keys.intersection(old_keys))
        after = len(new_keys.intersection(wrapper.mapping.get(k, k) for k in old_keys
                                          if k not in wrapper.dropped))
        # every key carries it and taking it off matches more keys, or it is a name no layer
        # takes (a refactor may have renamed everything else too)
        if after > before or (after == before == 0 and _unmistakable(wrapper.prefix)):
            return wrapper
    return None


def _unmistakable(chain: str) -> bool:
    return chain != "model." and not chain.startswith("model.")


def _chain(keys: list[str], others: set[str]) -> str:
    """The wrappers every key starts with and no other key does, outermost first."""
    chain = ""
    for _ in range(_MAX_NESTING):
        p = next((p for p in WRAPPERS if keys and all(k.startswith(chain + p) for k in keys)
                  and not any(k.startswith(p) for k in others)), None)
        if p is None:
            break
        chain += p
    return chain


def _has_inner(keys) -> bool:
    return any(CHECKPOINT_WRAPPER in f".{k}" for k in keys)


def _stripping(old_keys: list[str], new_keys: set[str]) -> Wrapper | None:
    candidates = {k for extras in EXTRAS.values() for k in extras}
    extras = _extras(old_keys, _chain([k for k in old_keys if k not in candidates], new_keys),
                     new_keys)
    keys = [k for k in old_keys if k not in extras]
    chain = _chain(keys, new_keys)
    inner = _has_inner(keys) and not _has_inner(new_keys)
    if not (chain or inner):
        return None

    def apply(k: str) -> str:
        k = k.removeprefix(chain)
        return _stripped(k, CHECKPOINT_WRAPPER) if inner else k

    return Wrapper(chain or CHECKPOINT_WRAPPER, "checkpoint",
                   {k: apply(k) for k in keys if apply(k) != k}, dropped=extras)


def _adding(old_keys: list[str], new_keys: set[str]) -> Wrapper | None:
    chain = _chain(sorted(new_keys), set(old_keys))
    inner = _has_inner(new_keys) and not _has_inner(old_keys)
    if not (chain or inner):
        return None
    wrapped = {_stripped(k.removeprefix(chain), CHECKPOINT_WRAPPER) if inner
               else k.removeprefix(chain): k for k in new_keys}
    return Wrapper(chain or CHECKPOINT_WRAPPER, "code",
                   {k: wrapped[k] for k in old_keys if k in wrapped})
