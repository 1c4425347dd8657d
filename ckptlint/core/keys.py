"""State-dict key arithmetic: natural order, folding runs of repeated layers into `{a..b}`, and
how an untrusted key (or any text from a file) is shown to a person."""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache
from typing import Any, Hashable, Iterable, Iterator, Mapping, TypeVar

V = TypeVar("V", bound=Hashable)

# ASCII digits only: `\d` also matches other scripts' digits, which int() reads as numbers
_DIGITS = re.compile(r"([0-9]+)")
_RANGE = re.compile(r"^\{([0-9]+)\.\.([0-9]+)\}$")
_MAX_INDEX_DIGITS = 18  # a layer index beyond 10**18 is a name (and int() stays cheap)
_MAX_SORT_DIGITS = 1000
_DOT = re.compile(r"\.(?=[^{}]*(?:\{|$))")  # a dot outside any `{a..b}` range
_LEAF: Any = object()  # a trie slot for a value stored at the node itself (a key of its own:
# "" is a real segment, the root module's `_version` key)
# Keys a folded pattern (or a whole signature) may stand for. A 7B model has ~300 keys and the
# largest released checkpoints ~100k; a hand-written `{0..100000000}` must not exhaust memory.
MAX_KEYS = 1_000_000
# the key of a finding about every key of a model (a whole-model dtype change); fnmatch's `*`
# matches all of them, so an `ignore` pattern "*" covers it as it covers each key
EVERY_KEY = "*"


class TooManyKeys(ValueError):
    """A folded pattern stands for more keys than `MAX_KEYS` (or the room left for them)."""

    def __init__(self, pattern: str, limit: int):
        self.pattern, self.limit = pattern, limit
        super().__init__(f"`{printable(pattern)}` stands for more than {limit:,} keys")


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped as `repr` would escape it.

    Keys, member names and messages come from untrusted files: raw, an ESC sequence repaints
    the terminal and a newline starts a line that CI runners read as a command (`::error`).
    Escaped, they stay visible and inert; lone surrogates become `\\udXXX`, so writing the text
    never fails. Printable text (the usual case) is returned as it is.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def natural_key(key: str) -> tuple:
    """Sort key that puts `layers.2` before `layers.10` (digit runs compare as numbers)."""
    return tuple(map(_segment_key, key.split(".")))


@lru_cache(maxsize=1 << 16)
def _segment_key(segment: str) -> tuple:
    # a state dict repeats a few segment names (`layers`, `weight`, `0`..`99`) across all its
    # keys: each is split once, not once per key and sort
    return tuple(_number(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(segment)))


def _number(digits: str) -> float:
    # int() refuses more than 4,300 digits (and is slow long before): an untrusted key may
    # hold 10,000; such runs all sort last, after every number a real key can hold
    return int(digits) if len(digits) <= _MAX_SORT_DIGITS else math.inf


def natural_sorted(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=natural_key)


def _is_index(segment: str) -> bool:
    return (segment.isascii() and segment.isdigit() and len(segment) <= _MAX_INDEX_DIGITS
            and (segment == "0" or not segment.startswith("0")))


def _trie(entries: Mapping[str, V]) -> dict:
    root: dict = {}
    for key, value in entries.items():
        node = root
        for segment in key.split("."):
            node = node.setdefault(segment, {})
        node[_LEAF] = value
    return root


def _fold_node(node: dict) -> tuple[tuple[str, V], ...]:
    """Folded (relative pattern, value) lines of one trie node."""
    lines: list[tuple[str, V]] = []
    if _LEAF in node:
        lines.append(("", node[_LEAF]))
    children = {seg: _fold_node(child) for seg, child in node.items() if seg != _LEAF}
    indices = sorted((int(seg) for seg in children if _is_index(seg)))
    for label, sub in _runs(indices, children):
        lines.extend((f"{label}.{rel}" if rel else label, value) for rel, value in sub)
    for seg, sub in children.items():
        if not _is_index(seg):
            lines.extend((f"{seg}.{rel}" if rel else seg, value) for rel, value in sub)
    return tuple(lines)


def _runs(indices: list[int], children: dict) -> Iterator[tuple[str, tuple]]:
    """Group consecutive indices whose folded subtrees are identical into `{a..b}` labels."""
    start = 0
    while start < len(indices):
        end = start
        first = children[str(indices[start])]
        while (end + 1 < len(indices) and indices[end + 1] == indices[end] + 1
               and children[str(indices[end + 1])] == first):
            end += 1
        a, b = indices[start], indices[end]
        yield (f"{{{a}..{b}}}" if b > a else str(a)), first
        start = end + 1


def fold(entries: Mapping[str, V]) -> list[tuple[str, V]]:
    """Fold keys whose repeated layers carry identical values, in natural order.

    `{"h.0.w": x, "h.1.w": x, "h.2.w": y}` -> `[("h.{0..1}.w", x), ("h.2.w", y)]`.
    """
    lines = _fold_node(_trie(entries))
    return sorted(lines, key=lambda line: natural_key(first_key(line[0])))


def segments(pattern: str) -> list[str]:
    """Split a key or folded pattern at its dots, keeping `{a..b}` whole."""
    return _DOT.split(pattern)


def first_key(pattern: str) -> str:
    """The first key a folded pattern stands for."""
    return ".".join(_RANGE.sub(r"\1", seg) for seg in segments(pattern))


def count(pattern: str) -> int:
    """How many keys a folded pattern stands for, without listing them."""
    total = 1
    for segment in segments(pattern):
        match = _RANGE.match(segment)
        if match:
            a, b = match.groups()
            if max(len(a), len(b)) > _MAX_INDEX_DIGITS:
                return MAX_KEYS + 1  # past any limit, and int() of 5,000 digits would raise
            total *= max(int(b) - int(a) + 1, 0)
    return total


def expand(pattern: str, limit: int = MAX_KEYS) -> list[str]:
    """Every key a folded pattern stands for, in natural order; `TooManyKeys` beyond `limit`."""
    if count(pattern) > limit:
        raise TooManyKeys(pattern, limit)
    choices = []
    for segment in segments(pattern):
        match = _RANGE.match(segment)
        if match:
            a, b = int(match.group(1)), int(match.group(2))
            choices.append([str(i) for i in range(a, b + 1)])
        else:
            choices.append([segment])
    return [".".join(combo) for combo in itertools.product(*choices)]


def is_pattern(key: str) -> bool:
    return any(_RANGE.match(segment) for segment in segments(key))


def parent(key: str) -> str:
    """`a.b.c` -> `a.b`; the root module's prefix is the empty string."""
    return key.rpartition(".")[0]


def ancestors(key: str) -> list[str]:
    """Every module prefix that owns `key`, innermost first, ending with the root ""."""
    found = []
    while "." in key:
        key = key.rpartition(".")[0]
        found.append(key)
    found.append("")
    return found
