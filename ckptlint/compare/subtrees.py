"""Keys one side has and the other lacks: a whole new (or removed) submodule is one finding,
and identical ones of repeated layers fold into one. Pure."""

from __future__ import annotations

from typing import Iterator, Mapping

from ckptlint.compare.messages import key_finding
from ckptlint.core.keys import ancestors, expand, fold, natural_sorted
from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, TensorSpec


def added_or_removed(kind: Kind, model: str, keys: set[str], own: Mapping[str, TensorSpec],
                      other: Mapping[str, TensorSpec]) -> Iterator[Finding]:
    """Missing (or unexpected) keys, a whole new (or removed) submodule as one finding."""
    grouped = whole_subtrees(keys, own, other)
    # identical subtrees of repeated layers fold too: `blocks.{0..2}.extra.*`
    shapes = {f"{p}.*": tuple((k[len(p):], own[k]) for k in members)
              for p, members in grouped.items()}
    for pattern, _ in fold(shapes):
        members = [k for star in expand(pattern) for k in grouped[star[:-2]]]
        yield _subtree_finding(kind, model, pattern[:-2], members, own)
    loose = keys - {k for members in grouped.values() for k in members}
    for key in natural_sorted(loose):
        spec = own.get(key)
        yield key_finding(kind, model, key, *((None, spec) if kind is Kind.MISSING_KEY
                                           else (spec, None)))


def whole_subtrees(keys: set[str], own: Mapping[str, TensorSpec],
                   other: Mapping[str, TensorSpec]) -> dict[str, list[str]]:
    """Module prefixes every key of which (of at least two) is in `keys` and that the other
    side has nothing under: the outermost such prefix for each key."""
    if not keys:
        return {}
    def prefixes(key: str) -> list[str]:  # outermost first
        return ancestors(key)[-2::-1]

    total: dict[str, int] = {}
    of_key = {key: prefixes(key) for key in own}
    for found in of_key.values():
        for p in found:
            total[p] = total.get(p, 0) + 1
    hit: dict[str, int] = {}
    of_key.update((key, prefixes(key)) for key in keys if key not in of_key)
    for key in keys:
        for p in of_key[key]:
            hit[p] = hit.get(p, 0) + 1
    elsewhere = {p for key in other for p in prefixes(key)}
    grouped: dict[str, list[str]] = {}
    for key in keys:
        outer = next((p for p in of_key[key]
                      if p not in elsewhere and hit[p] == total.get(p) and hit[p] >= 2), None)
        if outer is not None:
            grouped.setdefault(outer, []).append(key)
    return {p: natural_sorted(members) for p, members in grouped.items()}


def _subtree_finding(kind: Kind, model: str, module: str, members: list[str],
                     own: Mapping[str, TensorSpec]) -> Finding:
    size = sum(own[k].numel for k in members if k in own)
    what = f"{len(members)} tensors, {size:,} values"
    message = kind.spec.message.format(key=f"{module}.*", old=what, new=what)
    return Finding(kind, model, message, key=f"{module}.*", keys=tuple(members))
