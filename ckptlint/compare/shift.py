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
    """The one top-level segment of one side, absent from the other, below which some of the
    other side's top-level names reappear, and whose removal makes no key of its side collide
    with another; None when no segment or more than one fits."""
    keys = {"old": list(old_keys), "new": list(new_keys)}
    tops = {side: {k.partition(".")[0] for k in found} for side, found in keys.items()}
    fits = []
    for side, other in (("new", "old"), ("old", "new")):
        for segment in tops[side] - tops[other]:
            names = {k[len(segment) + 1:].partition(".")[0] for k in keys[side]
                     if k.startswith(segment + ".")}
            if names & tops[other] and not names & (tops[side] - {segment}) and "" not in names:
                fits.append(Shift(side, segment, frozenset(names)))
    return fits[0] if len(fits) == 1 else None
