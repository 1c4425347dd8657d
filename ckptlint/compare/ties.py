"""Ties: weights that share one tensor in the code or the checkpoint, and findings when the
sharing changed or a tie-aware saver left a tied key out."""

from __future__ import annotations

from typing import Iterator, Mapping

from ckptlint.core.keys import natural_key, natural_sorted
from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Signature


def tie_absent(model: str, key: str, new: Signature) -> Finding:
    partner = new.aliases.get(key) or next((k for k, v in new.aliases.items() if v == key), "")
    return Finding(
        Kind.TIED_KEY_ABSENT, model,
        f"`{key}` is not in the checkpoint, which holds the tensor it is tied to (`{partner}`): "
        "plain load_state_dict(strict=True) fails with \"Missing key(s)\"; strict=False and "
        "tie-aware loaders (safetensors.torch.load_model, transformers' from_pretrained) fill "
        "it from the tie", key=key, keys=(key,), new=new.tensors.get(key),
        help="load it with a tie-aware loader or strict=False, or save the checkpoint with "
             "every key (e.g. `torch.save(model.state_dict())`)")


def tie_findings(model: str, old: Signature, new: Signature) -> Iterator[Finding]:
    """Tied groups that differ, among keys both sides have. A file that keeps no record of
    sharing (safetensors, DCP) says nothing about its ties: only one that does (the code's
    signature, a torch.save pickle) shows that tensors the code now ties were separate."""
    if not (old.aliases or old.source == "code" or old.ties_recorded):
        return
    both = set(old.tensors) & set(new.tensors)
    before, after = _groups(old.aliases, both), _groups(new.aliases, both)
    for group in sorted(before - after, key=_group_order):
        keys = tuple(natural_sorted(group))
        yield Finding(Kind.TIE_CHANGED, model,
                      f"{quoted_keys(keys)} share one tensor in the checkpoint but the code no longer "
                      "ties them: they load as separate copies and drift apart in training",
                      key=keys[0], keys=keys, help="tie them again (e.g. "
                      f"`self.{keys[-1].rpartition('.')[0] or 'x'}.weight = "
                      f"self.{keys[0].rpartition('.')[0] or 'y'}.weight`), or accept the change")
    for group in sorted(after - before, key=_group_order):
        keys = tuple(natural_sorted(group))
        yield Finding(Kind.TIE_CHANGED, model,
                      f"{quoted_keys(keys)} share one tensor in the code but are separate in the "
                      "checkpoint: loading copies each into the same tensor, the last one wins",
                      key=keys[0], keys=keys, help="check which of the checkpoint's copies "
                                                   "should survive, or untie them")


def _groups(aliases: Mapping[str, str], keys: set[str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for key, first in aliases.items():
        groups.setdefault(first, {first}).add(key)
    return {frozenset(g & keys) for g in groups.values() if len(g & keys) > 1}


def _group_order(group: frozenset[str]) -> tuple:
    return natural_key(natural_sorted(group)[0])


def quoted_keys(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{k}`" for k in keys)
