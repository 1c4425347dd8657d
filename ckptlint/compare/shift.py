"""A model moved under (or out of) one new top-level module: HF's `model.layers.0` against
Meta's `layers.0`. Pure: finds the one segment that explains it and re-keys one side, so that
renames are paired by the ancestry the two sides share below it.

A wrapper around the whole model is `prefix.detect`'s; this is the partial case, where other
top-level modules stay beside the new one (`lm_head` beside `model`) and names below it may
have changed too, so no prefix explains the whole key set.
"""

from __future__ import annotations

from typing import Iterable, Mapping, TypeVar

from ckptlint.core.record import record

V = TypeVar("V")


@record
class Shift:
    """Keys of `side` ("old" or "new") under `segment.` are compared without it; `names` are
    the top-level names they then take (which no other key of that side has)."""

    side: str
    segment: str
    names: frozenset[str]

    def strip(self, key: str) -> str:
        return key[len(self.segment) + 1:] if key.startswith(self.segment + ".") else key

    def restore(self, key: str) -> str:
        """A stripped key (or module prefix) of the shifted side, as that side spells it."""
        return f"{self.segment}.{key}" if key.partition(".")[0] in self.names else key

    def stripped(self, mapping: Mapping[str, V]) -> dict[str, V]:
        return {self.strip(k): v for k, v in mapping.items()}


def find(old_keys: Iterable[str], new_keys: Iterable[str]) -> Shift | None:
    """The one top-level segment of one side, absent from the other, below which at least two
    of the other side's top-level modules reappear (a list of layers with mostly the same
    indices, `_alike`), and whose removal makes no key of its side collide with another;
    None when no segment or more than one fits.

    One reappearing name is no evidence: a new `attn_pool` holding a `norm` beside five other
    modules is a new module whose parts are named like the model's own; nor is a new
    `draft.layers` of one layer a model's thirty-two (`tests/test_renames.py`).
    """
    # each side's keys by top-level name, the rest of each key below it (one pass per side)
    rests = {"old": _by_top(old_keys), "new": _by_top(new_keys)}
    tops = {side: set(found) for side, found in rests.items()}
    fits = []
    for side, other in (("new", "old"), ("old", "new")):
        for segment in tops[side] - tops[other]:
            if "" in rests[side][segment]:
                continue  # a tensor named like the segment itself would be stripped to nothing
            below = _by_top(rests[side][segment])
            names = set(below)
            again = names & tops[other]
            if len(again) < 2 or names & (tops[side] - {segment}) or "" in names:
                continue
            if all(_alike(_firsts(below[n]), _firsts(rests[other][n])) for n in again):
                fits.append(Shift(side, segment, frozenset(names)))
    return fits[0] if len(fits) == 1 else None


def _by_top(keys: Iterable[str]) -> dict[str, list[str]]:
    """Each top-level name -> the rest of each key below it (its own tensor: "")."""
    found: dict[str, list[str]] = {}
    for key in keys:
        top, _, rest = key.partition(".")
        found.setdefault(top, []).append(rest)
    return found


def _firsts(rests: Iterable[str]) -> set[str]:
    """The names directly below a module, from the rest of each of its keys."""
    return {rest.partition(".")[0] for rest in rests}


def _alike(here: set[str], there: set[str]) -> bool:
    """A list of layers (numbered children) holds mostly the same indices on both sides (a
    layer pruned or added is fine; one layer is not thirty-two); named children may all be
    renamed (Whisper's `encoder.blocks` is HF's `model.encoder.layers`)."""
    if not all(name.isdigit() for name in here | there):
        return True
    return 2 * len(here & there) >= max(len(here), len(there))
