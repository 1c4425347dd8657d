"""Probable renames: removed keys paired with added keys that hold the same tensors. Pure.

Precision first, because a wrong "renamed" claim sends a user to remap weights into the wrong
layer: a removed subtree pairs with an added one only when their relative structure (keys,
dtypes, shapes) is identical and the pairing is unambiguous both ways. Ties between identical
subtrees (one per layer) are broken by the longest shared ancestry (`blocks.3.fc` goes with
`blocks.3.up`, not `blocks.4.up`), and must stay unique. A lone tensor also needs a similar name.

Same-shaped siblings (`to_q/to_k/to_v` -> `q_proj/k_proj/v_proj`, `gate_proj/up_proj` ->
`w1/w3`) tie on structure alone; they pair only on evidence that is unique both ways, and each
pair says which: name tokens (`to_q` ~ `q_proj`), identical creating statements apart from the
name, or creation order inside the one edit that replaced them (the last two from the source,
given as `Evidence`). Evidence that contradicts another's pairing drops the pair: a q/k swap
would load on meta and be silently wrong, so it is never claimed.

Every step is linear in the number of keys (times their depth): candidates are found through
indexes by (structure, ancestry), never by comparing every subtree with every other.
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from typing import Iterable, Mapping

from ckptlint.compare import shift
from ckptlint.compare.names import by_names, mutual, opposed, same_words, segments
from ckptlint.core.keys import ancestors, natural_key
from ckptlint.core.record import field, record, replace
from ckptlint.core.records import TensorSpec

Fingerprint = frozenset  # of (relative key, dtype, shape)
_NAME_SIMILARITY = 0.6
# a group of same-shaped siblings larger than this is not resolved (nothing pairs that many
# on names alone, and the pairwise comparison would be quadratic)
MAX_GROUP = 64

BY_NAME = "name"
BY_TEXT = "statement"
BY_ORDER = "order"


@record
class Evidence:
    """What the source says about module paths (keys without a trailing dot) of both sides.

    `*_texts` are creating statements with the attribute's name taken out; `*_places` are
    (edit, line) of the creating statement: which hunk of the change since the signature's
    commit removed (old) or wrote (new) it, and where.
    """

    old_texts: Mapping[str, str] = field(default_factory=dict)
    new_texts: Mapping[str, str] = field(default_factory=dict)
    old_places: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    new_places: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@record
class Pairing:
    """Old prefix -> new prefix (a subtree's prefix ends with `.`), why each same-shaped pair
    was paired (absent: by structure alone), and the same-shaped groups weighed, as (old
    paths, new paths): what source `Evidence` can settle, or contradict (names alone paired a
    group whose creation order says otherwise)."""

    pairs: Mapping[str, str]
    reasons: Mapping[str, str]
    groups: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()


def find(removed: Mapping[str, TensorSpec], added: Mapping[str, TensorSpec],
         old_keys: Iterable[str], new_keys: Iterable[str],
         evidence: Evidence | None = None) -> dict[str, str]:
    """Pairs of subtree prefixes or keys, old -> new (a subtree's prefix ends with `.`).

    `removed` are the checkpoint's keys the code no longer has, `added` the code's keys the
    checkpoint lacks; `old_keys`/`new_keys` are every key of each side, so that a subtree
    counts only when all of it was removed (or added).
    """
    return dict(pair(removed, added, old_keys, new_keys, evidence).pairs)


def pair(removed: Mapping[str, TensorSpec], added: Mapping[str, TensorSpec],
         old_keys: Iterable[str], new_keys: Iterable[str],
         evidence: Evidence | None = None) -> Pairing:
    """`find`, with the reason of each pair and what stayed ambiguous.

    When one side's modules moved under a new top-level module (`shift.find`: HF's
    `model.layers.0` against Meta's `layers.0`), the pairs are sought again with its segment
    set aside, so that ancestry below it counts; the answer that moves more keys is kept.
    """
    old_keys, new_keys = list(old_keys), list(new_keys)
    found = _Pairer(_subtrees(removed, old_keys), _subtrees(added, new_keys), evidence).run()
    moved = shift.find(old_keys, new_keys)
    if moved is None:
        return found
    shifted = _shifted(moved, removed, added, old_keys, new_keys, evidence or Evidence())
    return shifted if len(expand_pairs(shifted.pairs, removed)) > \
        len(expand_pairs(found.pairs, removed)) else found


def _shifted(moved: shift.Shift, removed: Mapping[str, TensorSpec],
             added: Mapping[str, TensorSpec], old_keys: list[str], new_keys: list[str],
             evidence: Evidence) -> Pairing:
    """The pairing with `moved.segment` stripped from its side's keys (and the source's
    evidence about them), its answer spelled as that side spells its keys."""
    if moved.side == "new":
        added, new_keys = moved.stripped(added), [moved.strip(k) for k in new_keys]
        evidence = replace(evidence, new_texts=moved.stripped(evidence.new_texts),
                           new_places=moved.stripped(evidence.new_places))
    else:
        removed, old_keys = moved.stripped(removed), [moved.strip(k) for k in old_keys]
        evidence = replace(evidence, old_texts=moved.stripped(evidence.old_texts),
                           old_places=moved.stripped(evidence.old_places))
    got = _Pairer(_subtrees(removed, old_keys), _subtrees(added, new_keys), evidence).run()
    old_of = moved.restore if moved.side == "old" else str
    new_of = moved.restore if moved.side == "new" else str
    return Pairing({old_of(o): new_of(n) for o, n in got.pairs.items()},
                   {old_of(o): why for o, why in got.reasons.items()},
                   tuple((tuple(map(old_of, olds)), tuple(map(new_of, news)))
                         for olds, news in got.groups))


class _Side:
    """The subtrees of one side, indexed by (fingerprint, leading segments) for each depth,
    so the candidates sharing the most ancestry with a prefix are one lookup per level."""

    def __init__(self, subtrees: Mapping[str, Fingerprint]):
        self.subtrees = subtrees
        self.buckets: dict[tuple, set[str]] = defaultdict(set)
        self._below: dict[str, list[str]] | None = None  # module prefix -> its subtrees
        self.covered: set[str] = set()
        for prefix, fp in subtrees.items():
            segs = segments(prefix)
            for depth in range(len(segs) + 1):
                self.buckets[(fp, tuple(segs[:depth]))].add(prefix)

    @property
    def below(self) -> dict[str, list[str]]:
        """Made on the first pair taken: 25,000 removed keys that pair with nothing need none."""
        if self._below is None:
            self._below = defaultdict(list)
            for prefix in self.subtrees:
                for owner in ancestors(prefix.rstrip("."))[:-1]:
                    self._below[owner + "."].append(prefix)
        return self._below

    def best(self, prefix: str, fp: Fingerprint) -> tuple[int, set[str]]:
        """The deepest ancestry level at which uncovered subtrees shaped `fp` share `prefix`'s
        leading segments, and those subtrees (empty: none anywhere)."""
        segs = segments(prefix)
        for depth in range(len(segs), -1, -1):
            found = self.buckets.get((fp, tuple(segs[:depth])))
            if found:
                return depth, found
        return -1, set()

    def cover(self, prefix: str) -> None:
        """Taken: it and every subtree below it leave the candidates."""
        for item in [prefix, *(self.below.get(prefix, ()) if prefix.endswith(".") else ())]:
            if item in self.covered:
                continue
            self.covered.add(item)
            segs = segments(item)
            for depth in range(len(segs) + 1):
                self.buckets[(self.subtrees[item], tuple(segs[:depth]))].discard(item)


class _Pairer:
    def __init__(self, old: Mapping[str, Fingerprint], new: Mapping[str, Fingerprint],
                 evidence: Evidence | None):
        self.old, self.new = _Side(old), _Side(new)
        self.evidence = evidence or Evidence()
        self.pairs: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.tried: set[tuple] = set()
        # module prefixes already weighed in a group: the keys below them are not weighed
        # again (a pair the module's evidence refused must not come back through its keys)
        self.weighed: set[str] = set()
        self.groups: list[tuple[tuple[str, ...], tuple[str, ...]]] = []

    def run(self) -> Pairing:
        for prefix in sorted(self.old.subtrees, key=lambda p: (_depth(p), natural_key(p))):
            if prefix not in self.old.covered:
                self._one(prefix)
        return Pairing(self.pairs, self.reasons, tuple(self.groups))

    def _one(self, prefix: str) -> None:
        fp = self.old.subtrees[prefix]
        depth, candidates = self.new.best(prefix, fp)
        if len(candidates) > 1:
            if (fp, tuple(segments(prefix)[:depth])) not in self.tried:  # (one look per group)
                self._group(prefix, fp, depth)
            return
        if not candidates:
            return
        match = next(iter(candidates))
        back_depth, rivals = self.old.best(match, fp)
        if rivals != {prefix} or opposed(prefix, match):
            return
        if len(fp) == 1 and not (_similar(prefix, match) and self._same_parents(prefix, match)):
            return
        self._take(prefix, match, "")

    def _take(self, old: str, new: str, reason: str) -> None:
        self.pairs[old] = new
        if reason:
            self.reasons[old] = reason
        self.old.cover(old)
        self.new.cover(new)

    def _group(self, prefix: str, fp: Fingerprint, depth: int) -> None:
        """Same-shaped subtrees sharing the same ancestry on both sides: pair on evidence."""
        base = tuple(segments(prefix)[:depth])
        if (fp, base) in self.tried:
            return
        self.tried.add((fp, base))
        olds = self.old.buckets.get((fp, base), set())
        news = self.new.buckets.get((fp, base), set())
        if all(any(a + "." in self.weighed for a in ancestors(o.rstrip("."))[:-1])
               for o in olds):
            return
        self.weighed.update(o for o in olds if o.endswith("."))
        # each member's best level must be this one, on both sides, or the group is not closed
        if not (2 <= len(olds) <= MAX_GROUP and 2 <= len(news) <= MAX_GROUP) or any(
                self.new.best(o, fp)[0] != depth for o in olds) or any(
                self.old.best(n, fp)[0] != depth for n in news):
            return
        # sorted only now: a group of 25,000 removed keys is refused above, unsorted
        olds, news = sorted(olds, key=natural_key), sorted(news, key=natural_key)
        self.groups.append((tuple(o.rstrip(".") for o in olds),
                            tuple(n.rstrip(".") for n in news)))
        for old, (new, reason) in resolve(olds, news, depth, self.evidence).items():
            if len(fp) > 1 or self._same_parents(old, new):
                self._take(old, new, reason)

    def _same_parents(self, old: str, new: str) -> bool:
        """A lone tensor leaving a module that went with it must go to a module that holds the
        same tensors (names aside: its siblings may be renamed too)."""
        a, b = _parent(old), _parent(new)
        in_old, in_new = a in self.old.subtrees, b in self.new.subtrees
        if in_old != in_new:
            return False
        return not in_old or _shapes(self.old.subtrees[a]) == _shapes(self.new.subtrees[b])


def resolve(olds: list[str], news: list[str], depth: int,
            evidence: Evidence) -> dict[str, tuple[str, str]]:
    """Same-shaped old and new prefixes (sharing their first `depth` segments) paired on
    evidence, old -> (new, reason): name tokens first, then identical creating statements,
    then creation order inside one edit. A pair another kind of evidence contradicts is
    dropped, and so is one whose partner is claimed twice."""
    by_name = by_names(olds, news, depth)
    by_text = mutual(olds, news, lambda o, n: _text(evidence.old_texts, o) is not None
                      and _text(evidence.old_texts, o) == _text(evidence.new_texts, n))
    by_order = _by_order(olds, news, evidence)
    chosen: dict[str, tuple[str, str]] = {}
    for old in olds:
        options = [(kind, found[old]) for kind, found in
                   ((BY_NAME, by_name), (BY_TEXT, by_text), (BY_ORDER, by_order)) if old in found]
        if options and len({new for _, new in options}) == 1:
            kind, new = options[0]
            chosen[old] = (new, _reason(kind, old, new, depth))
    partners = Counter(new for new, _ in chosen.values())
    return {old: got for old, got in chosen.items() if partners[got[0]] == 1}


def _reason(kind: str, old: str, new: str, depth: int) -> str:
    a, b = segments(old)[depth:], segments(new)[depth:]
    while len(a) > 1 and len(b) > 1 and a[-1] == b[-1]:  # `to_q.weight` ~ `q_proj.weight`
        a, b = a[:-1], b[:-1]
    a, b = ".".join(a), ".".join(b)
    if kind == BY_NAME:
        return f"paired by name: `{a}` ~ `{b}`"
    if kind == BY_TEXT:
        return "paired by its creating statement, identical apart from the name"
    return "paired by creation order in the edit that renamed them"


def _text(texts: Mapping[str, str], prefix: str) -> str | None:
    return texts.get(prefix.rstrip("."))


def _by_order(olds: list[str], news: list[str], evidence: Evidence) -> dict[str, str]:
    """i-th old with i-th new, by line, when one edit (one hunk) removed every old statement
    of the group and wrote every new one, each on a line of its own."""
    old = [evidence.old_places.get(o.rstrip(".")) for o in olds]
    new = [evidence.new_places.get(n.rstrip(".")) for n in news]
    if len(olds) != len(news) or None in old or None in new:
        return {}
    hunks = {place[0] for place in old + new}
    lines_old, lines_new = [p[1] for p in old], [p[1] for p in new]
    if len(hunks) != 1 or len(set(lines_old)) < len(old) or len(set(lines_new)) < len(new):
        return {}
    by_old = [o for _, o in sorted(zip(lines_old, olds))]
    by_new = [n for _, n in sorted(zip(lines_new, news))]
    return dict(zip(by_old, by_new))


def _parent(prefix: str) -> str:
    return prefix.rstrip(".").rpartition(".")[0] + "."


def _shapes(fp: Fingerprint) -> list:
    return sorted((rel.count("."), dtype, shape) for rel, dtype, shape in fp)


def _subtrees(keys: Mapping[str, TensorSpec], everything: Iterable[str]) -> dict[str, Fingerprint]:
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
    """Segments of a key (`a.b`) or a module prefix (`a.b.`): 2 each."""
    return prefix.count(".") + (not prefix.endswith("."))


def _similar(old: str, new: str) -> bool:
    """A lone tensor moved: only its module's name changed, or the names are close overall;
    a tensor whose own name changed must be called the same in other words (`same_words`:
    not `mask_token` for `dist_token`, whose shared `_token` makes them close overall)."""
    a, b = old.rstrip(".").split("."), new.rstrip(".").split(".")
    if not old.endswith(".") and a[-1] != b[-1] and not same_words(a[-1], b[-1]):
        return False  # (a module's prefix: its tensor keeps its name, only the module's moved)
    if len(a) == len(b) > 1 and a[-1] == b[-1] and sum(x != y for x, y in zip(a, b)) == 1:
        return True
    return difflib.SequenceMatcher(None, old, new).ratio() >= _NAME_SIMILARITY


def expand_pairs(pairs: Mapping[str, str], old_keys: Iterable[str]) -> dict[str, str]:
    """Every old key a pair moves -> its new key, in natural order."""
    mapping: dict[str, str] = {}
    if not pairs:
        return mapping
    for key in sorted(old_keys, key=natural_key):
        if key in pairs:
            mapping[key] = pairs[key]
            continue
        for owner in ancestors(key)[:-1]:
            if owner + "." in pairs:
                mapping[key] = pairs[owner + "."] + key[len(owner) + 1:]
                break
    return mapping
