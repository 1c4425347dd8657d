"""Natural order and folding of repeated layers."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from ckptlint.core.keys import expand, first_key, fold, natural_sorted


def test_natural_order():
    keys = ["layers.10.w", "layers.2.w", "layers.1.w", "head.w", "layer10", "layer9"]
    assert natural_sorted(keys) == ["head.w", "layer9", "layer10", "layers.1.w", "layers.2.w",
                                    "layers.10.w"]


def test_identical_layers_fold_and_a_different_one_breaks_the_run():
    entries = {f"h.{i}.w": "a" for i in range(12)} | {"h.5.w": "b", "emb": "c"}
    assert fold(entries) == [("emb", "c"), ("h.{0..4}.w", "a"), ("h.5.w", "b"),
                             ("h.{6..11}.w", "a")]


def test_nested_runs_fold_inside_out():
    entries = {f"blocks.{b}.experts.{e}.w": "x" for b in range(3) for e in range(8)}
    assert fold(entries) == [("blocks.{0..2}.experts.{0..7}.w", "x")]
    assert len(expand("blocks.{0..2}.experts.{0..7}.w")) == 24


def test_a_layer_with_an_extra_tensor_is_not_folded_with_the_others():
    entries = {f"h.{i}.w": "x" for i in range(3)} | {"h.1.b": "y"}
    assert fold(entries) == [("h.0.w", "x"), ("h.1.b", "y"), ("h.1.w", "x"), ("h.2.w", "x")]


def test_leading_zero_segments_are_names_not_indices():
    assert fold({"a.01.w": 1, "a.02.w": 1}) == [("a.01.w", 1), ("a.02.w", 1)]


def test_first_key_of_a_pattern():
    assert first_key("layers.{3..9}.mlp.{0..1}.w") == "layers.3.mlp.0.w"


segment = st.one_of(st.sampled_from(["w", "b", "attn", "mlp", "norm"]),
                    st.integers(0, 12).map(str))


@given(st.dictionaries(st.lists(segment, min_size=1, max_size=4).map(".".join),
                       st.sampled_from(["f32[4]", "f32[8]", "i64[]"]), max_size=40))
def test_fold_then_expand_is_the_identity(entries):
    # a key may also be a prefix of another key: the trie keeps both
    folded = fold(entries)
    assert {k: v for pattern, v in folded for k in expand(pattern)} == entries
    assert sum(len(expand(p)) for p, _ in folded) == len(entries)


def test_expand_is_bounded_before_it_allocates():
    from ckptlint.core.keys import MAX_KEYS, TooManyKeys, count, expand

    assert count("a.{0..100000000}.w") == 100_000_001
    assert count("a.{0..9}.b.{0..9}") == 100
    with pytest.raises(TooManyKeys, match="stands for more than 1,000,000 keys"):
        expand("a.{0..100000000}.w")
    with pytest.raises(TooManyKeys):
        expand("a.{0..9}.b.{0..9}", limit=99)
    assert count("a.{0.." + "9" * 5000 + "}") > MAX_KEYS  # no int() of 5,000 digits
    assert len(expand("a.{0..9}.b.{0..9}")) == 100


def test_untrusted_digit_runs_sort_and_fold_safely():
    long_key = "a." + "1" * 10_000  # int() refuses more than 4,300 digits
    assert natural_sorted([long_key, "a.2", "a.10"]) == ["a.2", "a.10", long_key]
    assert natural_sorted(["a.07", "a.7", "a.10"]) == ["a.07", "a.7", "a.10"]
    arabic = {"h.\u0663.w": 1, "h.3.w": 1}  # Arabic-Indic three is a name, not an index
    assert dict(fold(arabic)) == {"h.3.w": 1, "h.\u0663.w": 1}
    assert fold({long_key: 1}) == [(long_key, 1)]


def test_the_empty_key_folds_as_itself() -> None:
    from ckptlint.core.keys import fold

    assert fold({"": 2, "a.b": 1}) == [("", 2), ("a.b", 1)]
