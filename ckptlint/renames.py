"""Probable renames: removed keys paired with added keys that hold the same tensors. Pure.

Precision first, because a wrong "renamed" claim sends a user to remap weights into the wrong
layer: a removed subtree pairs with an added one only when their relative structure (keys,
dtypes, shapes) is identical and the pairing is unambiguous both ways. Ties between identical
subtrees (one per layer) are broken by the longest shared ancestry (`blocks.3.fc` goes with
`blocks.3.up`, not `blocks.4.up`), and must stay unique. A lone tensor also needs a similar name.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from typing import Iterable, Mapping

from ckptlint.ftypes import TensorSpec
from ckptlint.keys import ancestors, natural_key, natural_sorted

Fingerprint = frozenset  # of (relative key, dtype, shape)
_NAME_SIMILARITY = 0.6


def find(removed: Mapping[str, TensorSpec], added: Mapping[str, TensorSpec],
         old_keys: Iterable[str], new_keys: Iterable[str]) -> dict[str, str]:
    """Pairs of subtree prefixes or keys, old -> new (a subtree's prefix ends with `.`).

    `removed` are the checkpoint's keys the code no longer has, `added` the code's keys the
    checkpoint lacks; `old_keys`/`new_keys` are every key of each side, so that a subtree
    counts only when all of it was removed (or added).
    """
    old_subtrees = _subtrees(removed, set(old_keys))
    new_subtrees = _subtrees(added, set(new_keys))
    by_print: dict[Fingerprint, list[str]] = defaultdict(list)
    for prefix, fp in new_subtrees.items():
        by_print[fp].append(prefix)
    pairs: dict[str, str] = {}
    taken_old: set[str] = set()
    taken_new: set[str] = set()
    for prefix in sorted(old_subtrees, key=lambda p: (_depth(p), natural_key(p))):
        if _covered(prefix, taken_old):
            continue
        fp = old_subtrees[prefix]
        match = _partner(prefix, [q for q in by_print.get(fp, ()) if not _covered(q, taken_new)])
        rivals = [p for p, f in old_subtrees.items() if f == fp and not _covered(p, taken_old)]
        if match is None or _partner(match, rivals) != prefix:
            continue
        if len(fp) == 1 and not (_similar(prefix, match) and
                                 _same_parents(prefix, match, old_subtrees, new_subtrees)):
            continue
        pairs[prefix] = match
        taken_old.add(prefix)
        taken_new.add(match)
    return pairs


def _subtrees(keys: Mapping[str, TensorSpec], everything: set[str]) -> dict[str, Fingerprint]:
    """Every key, and every module prefix all of whose keys are in `keys`, with its structure.

    A module prefix is written with a trailing dot (`fc.`), a single key without.
    """
    below: dict[str, list[str]] = defaultdict(list)
    for key in everything:
        for prefix in ancestors(key)[:-1]:
            below[prefix].append(key)
    found = {key: frozenset({("", spec.dtype, spec.shape)}) for key, spec in keys.items()}
    for prefix, members in below.items():
        if all(k in keys for k in members):
            found[prefix + "."] = frozenset(
                (k[len(prefix) + 1:], keys[k].dtype, keys[k].shape) for k in members)
    return found


def _depth(prefix: str) -> int:
    return len(prefix.rstrip(".").split("."))


def _covered(prefix: str, taken: set[str]) -> bool:
    return any(prefix == t or (t.endswith(".") and prefix.startswith(t)) for t in taken)


def _shared(a: str, b: str) -> int:
    """How many leading segments two keys share."""
    n = 0
    for x, y in zip(a.rstrip(".").split("."), b.rstrip(".").split(".")):
        if x != y:
            break
        n += 1
    return n


def _partner(prefix: str, candidates: list[str]) -> str | None:
    """The one candidate sharing the most ancestry with `prefix`; None on a tie."""
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda c: -_shared(prefix, c))
    if len(ranked) > 1 and _shared(prefix, ranked[0]) == _shared(prefix, ranked[1]):
        return None
    return ranked[0]


def _same_parents(old: str, new: str, old_subtrees: Mapping[str, Fingerprint],
                  new_subtrees: Mapping[str, Fingerprint]) -> bool:
    """A lone tensor leaving a module that went with it must go to a module shaped the same."""
    a, b = old.rstrip(".").rpartition(".")[0] + ".", new.rstrip(".").rpartition(".")[0] + "."
    if (a in old_subtrees) != (b in new_subtrees):
        return False
    return a not in old_subtrees or old_subtrees[a] == new_subtrees[b]


def _similar(old: str, new: str) -> bool:
    """A lone tensor moved: only its module's name changed, or the names are close overall."""
    a, b = old.rstrip(".").split("."), new.rstrip(".").split(".")
    if len(a) == len(b) > 1 and a[-1] == b[-1] and sum(x != y for x, y in zip(a, b)) == 1:
        return True
    return difflib.SequenceMatcher(None, old, new).ratio() >= _NAME_SIMILARITY


def expand_pairs(pairs: Mapping[str, str], old_keys: Iterable[str]) -> dict[str, str]:
    """Every old key a pair moves -> its new key, in natural order."""
    mapping: dict[str, str] = {}
    for key in natural_sorted(old_keys):
        for old, new in pairs.items():
            if key == old:
                mapping[key] = new
            elif old.endswith(".") and key.startswith(old):
                mapping[key] = new + key[len(old):]
    return mapping
