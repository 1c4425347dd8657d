"""Name evidence for renames: whether two names of same-shaped siblings say the same. Pure.

Used by `renames.resolve` for a group of same-shaped old and new prefixes that share their
first `depth` segments; the pairs must be unique both ways (`mutual`).
"""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def by_names(olds: list[str], news: list[str], depth: int) -> dict[str, str]:
    """Pairs whose differing names say the same: their tokens match one for one once the
    tokens every member of a side shares are set aside (`to` of to_q/to_k, `proj` of
    q_proj/k_proj), or the names are equal once the letters every member of a side starts
    or ends with are (`w` of wq/wk/wv: `q_proj` ~ `wq`).

    A token in common is not enough: `attention_norm` (the norm before attention) shares
    `attention` with `post_attention_layernorm` (the one after it), which is Meta's
    `ffn_norm`; a name with a token the other does not explain is no evidence. Nor is a
    number, unless both sides number alike (`block_1`/`block_2` are `resnets.0`/`resnets.1`,
    and `up.0` may be `up_blocks.1`), nor a pair of names of opposite places (`pre`/`post`).
    """
    numbered = _numbered_alike(olds, news, depth)
    old_words = [_tokens(o, depth) for o in olds]
    new_words = [_tokens(n, depth) for n in news]
    old_tokens = _distinct([_tokens(o, depth, numbered) for o in olds])
    new_tokens = _distinct([_tokens(n, depth, numbered) for n in news])
    old_cores, new_cores = _cores(olds, depth, numbered), _cores(news, depth, numbered)

    def fits(old: str, new: str) -> bool:
        i, j = olds.index(old), news.index(new)
        if _opposed(old_words[i], new_words[j]):
            return False
        return _same(old_tokens[i], new_tokens[j]) or \
            (old_cores[i] is not None and old_cores[i] == new_cores[j])

    return mutual(olds, news, fits)


# words naming opposite places: a name with one of them never pairs with one with the other
_OPPOSITES = {frozenset(pair) for pair in (
    ("pre", "post"), ("in", "out"), ("input", "output"), ("encoder", "decoder"),
    ("enc", "dec"), ("self", "cross"), ("up", "down"), ("first", "last"), ("before", "after"),
    ("src", "tgt"), ("source", "target"), ("left", "right"), ("top", "bottom"))}


def _opposed(a: set[str], b: set[str]) -> bool:
    return any(frozenset((x, y)) in _OPPOSITES for x in a - b for y in b - a)


def _numbered_alike(olds: list[str], news: list[str], depth: int) -> bool:
    """Whether the numbers in the names may count: every name on both sides holds as many,
    and the two sides use the same numbers."""
    numbers = [[t for seg in segments(p)[depth:] for t in _TOKEN.findall(seg) if t.isdigit()]
               for p in olds + news]
    return len({len(n) for n in numbers}) == 1 and \
        {tuple(n) for n in numbers[:len(olds)]} == {tuple(n) for n in numbers[len(olds):]}


def _tokens(prefix: str, depth: int, numbers: bool = True) -> set[str]:
    return {t.lower() for seg in segments(prefix)[depth:] for t in _TOKEN.findall(seg)
            if numbers or not t.isdigit()}


def _cores(prefixes: list[str], depth: int, numbers: bool = True) -> list[str | None]:
    """Each name without the characters all of them start and end with: `q` of `wq` among
    wq/wk/wv, `q` of `q_proj` among q_proj/k_proj. None for a lone name, or when a core
    would be empty or not unique (`w` and `w2` leave `` and `2`), or holds a number that
    may not count."""
    names = [".".join(segments(p)[depth:]).lower() for p in prefixes]
    if len(names) < 2:
        return [None for _ in names]
    start = len(_common_start(names))
    end = len(_common_start([n[::-1] for n in names]))
    cores = [n[start:len(n) - end] if start + end < len(n) else "" for n in names]
    cores = [c.strip("._") for c in cores]
    if "" in cores or len(set(cores)) < len(cores) or \
            not numbers and any(ch.isdigit() for c in cores for ch in c):
        return [None for _ in names]
    return cores


def _common_start(names: list[str]) -> str:
    first, last = min(names), max(names)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def _distinct(sets: list[set[str]]) -> list[set[str]]:
    shared = set.intersection(*sets) if sets else set()
    return [s - shared for s in sets]


def _same(a: set[str], b: set[str], synonyms: bool = True) -> bool:
    """Every token of each name matched by one of the other's (`_alike`)."""
    return bool(a and b) and all(any(_alike(x, y, synonyms) for y in b) for x in a) and \
        all(any(_alike(y, x, synonyms) for x in a) for y in b)


# the old names of a tensor that torch's own modules now call otherwise: TensorFlow-era
# LayerNorm's `gamma`/`beta` (what transformers' loader still renames to `weight`/`bias`).
# Only siblings weighed together use them: a lone `beta` (a Snake activation's) is no bias.
_SYNONYMS = {frozenset(pair) for pair in (("gamma", "weight"), ("beta", "bias"))}
# shortenings too short, or too unlike their word, to be told by the rule of four letters
_ABBREVIATIONS = {"tok": "token", "emb": "embed", "pos": "position", "cls": "class",
                  "att": "attention", "attn": "attention", "img": "image", "txt": "text",
                  "ctx": "context", "seq": "sequence", "enc": "encoder", "dec": "decoder"}
_PLACE_WORDS = {word for pair in _OPPOSITES for word in pair}


def _alike(x: str, y: str, synonyms: bool = True) -> bool:
    """The same word: equal, a one-letter abbreviation (`q` ~ `query`, `o` ~ `out`), a
    shortening of four letters or more (`embed` ~ `embeddings`, `layer` ~ `layers`, `temp` ~
    `temporal`), a known abbreviation (`tok` ~ `tokens`, `attn` ~ `attention`; `pos` is
    `position`, not `pose`), or an old name of the same tensor (`gamma` ~ `weight`). A word
    naming a place (`pre`, `post`, `out`, ...) is no shortening of another."""
    if x == y or synonyms and frozenset((x, y)) in _SYNONYMS:
        return True
    short, long = (x, y) if len(x) < len(y) else (y, x)
    if not (short.isalpha() and long.isalpha()):
        return False
    if len(short) == 1:
        return long[0] == short
    if short in _ABBREVIATIONS:
        return long.startswith(_ABBREVIATIONS[short])
    return len(short) >= 4 and long.startswith(short) and \
        short not in _PLACE_WORDS and long not in _PLACE_WORDS


def same_words(old: str, new: str) -> bool:
    """Whether a lone tensor's new name says what its old one did (`pos_embedding` ~
    `pos_embed`, `g` ~ `gamma`), once the words both share are set aside: `mask_token` is not
    `dist_token`, nor a Snake activation's `beta` a `bias`."""
    a = {t.lower() for t in _TOKEN.findall(old)}
    b = {t.lower() for t in _TOKEN.findall(new)}
    a, b = a - b, b - a
    return not _opposed(a, b) and (not a and not b or _same(a, b, synonyms=False))


def opposed(old: str, new: str) -> bool:
    """Whether two paths differ by words naming opposite places (`encoder` and `decoder`,
    `pre_norm` and `post_norm`): such a pair is never the same layer, whatever its shapes."""
    return _opposed(_tokens(old, 0), _tokens(new, 0))


def mutual(olds: list[str], news: list[str], fits) -> dict[str, str]:
    """Pairs where each side fits exactly one of the other."""
    fitting = {o: [n for n in news if fits(o, n)] for o in olds}
    backs = Counter(n for found in fitting.values() for n in found)
    return {o: found[0] for o, found in fitting.items() if len(found) == 1 and backs[found[0]] == 1}


def segments(prefix: str) -> list[str]:
    return prefix.rstrip(".").split(".")
