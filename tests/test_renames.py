"""Rename pairing, pure: structure first, then stated evidence for same-shaped siblings, and
never a claim the evidence does not make unique (a q/k swap would load and be wrong)."""

from __future__ import annotations

import pytest

from ckptlint.compare import diff

from ckptlint.compare import names, renames
from ckptlint.core.records import Signature, TensorSpec
from ckptlint.compare.renames import Evidence

SQ = TensorSpec("float32", (8, 8), "parameter")
UP = TensorSpec("float32", (16, 8), "parameter")
DOWN = TensorSpec("float32", (8, 16), "parameter")


def sig(layers: int, names: dict[str, TensorSpec], parent: str = "attn") -> Signature:
    return Signature({f"layers.{i}.{parent}.{name}.weight": spec
                      for i in range(layers) for name, spec in names.items()})


def pairs_of(old: Signature, new: Signature, evidence: Evidence | None = None) -> dict:
    removed = {k: v for k, v in old.tensors.items() if k not in new.tensors}
    added = {k: v for k, v in new.tensors.items() if k not in old.tensors}
    found = renames.pair(removed, added, old.tensors, new.tensors, evidence)
    return {old: (new, found.reasons.get(old, "")) for old, new in found.pairs.items()}


def test_name_tokens_pair_to_q_with_q_proj_and_say_so():
    old = sig(2, {"to_q": SQ, "to_k": SQ, "to_v": SQ})
    new = sig(2, {"q_proj": SQ, "k_proj": SQ, "v_proj": SQ})
    found = pairs_of(old, new)
    for i in range(2):
        for a in "qkv":
            new_prefix, reason = found[f"layers.{i}.attn.to_{a}."]
            assert new_prefix == f"layers.{i}.attn.{a}_proj."
            assert reason == f"paired by name: `to_{a}` ~ `{a}_proj`"


@pytest.mark.parametrize(("old_names", "new_names"), [
    (("query", "key", "value"), ("q", "k", "v")),     # one-letter abbreviations
    (("attnQuery", "attnKey"), ("q_lin", "k_lin")),  # camel case against snake case
])
def test_abbreviated_names_pair(old_names, new_names):
    old = sig(1, dict.fromkeys(old_names, SQ))
    new = sig(1, dict.fromkeys(new_names, SQ))
    found = pairs_of(old, new)
    assert {o: n for o, (n, _) in found.items()} == {
        f"layers.0.attn.{a}.": f"layers.0.attn.{b}." for a, b in zip(old_names, new_names)}


def test_same_shapes_without_evidence_are_not_paired():
    old = sig(3, {"gate_proj": UP, "up_proj": UP, "down_proj": DOWN}, "mlp")
    new = sig(3, {"w1": UP, "w2": DOWN, "w3": UP}, "mlp")
    found = pairs_of(old, new)
    # the one shape that is unique within its parent pairs; the two alike do not
    assert {o: n for o, (n, _) in found.items()} == {
        f"layers.{i}.mlp.down_proj.": f"layers.{i}.mlp.w2." for i in range(3)}


def llama_evidence(layers: int, order_new: tuple[str, ...]) -> Evidence:
    """What git says about an in-place rename: one hunk replaced gate/up/down with w1/w2/w3."""
    old_lines = {"gate_proj": 10, "up_proj": 11, "down_proj": 12}
    new_lines = {name: 10 + i for i, name in enumerate(order_new)}
    text = {"gate_proj": "self.<name> = nn.Linear(d, h)", "up_proj": "self.<name> = nn.Linear(d, h)",
            "down_proj": "self.<name> = nn.Linear(h, d)"}
    new_text = {"w1": text["gate_proj"], "w3": text["up_proj"], "w2": text["down_proj"]}
    paths = [f"layers.{i}.mlp" for i in range(layers)]
    return Evidence(
        old_texts={f"{p}.{n}": t for p in paths for n, t in text.items()},
        new_texts={f"{p}.{n}": t for p in paths for n, t in new_text.items()},
        old_places={f"{p}.{n}": ("m.py:0", line) for p in paths for n, line in old_lines.items()},
        new_places={f"{p}.{n}": ("m.py:0", line) for p in paths for n, line in new_lines.items()})


def test_creation_order_in_the_renaming_edit_pairs_gate_and_up():
    old = sig(2, {"gate_proj": UP, "up_proj": UP, "down_proj": DOWN}, "mlp")
    new = sig(2, {"w1": UP, "w2": DOWN, "w3": UP}, "mlp")
    found = pairs_of(old, new, llama_evidence(2, ("w1", "w2", "w3")))
    assert found["layers.1.mlp.gate_proj."] == (
        "layers.1.mlp.w1.", "paired by creation order in the edit that renamed them")
    assert found["layers.1.mlp.up_proj."][0] == "layers.1.mlp.w3."
    assert found["layers.1.mlp.down_proj."][0] == "layers.1.mlp.w2."


def test_order_across_two_edits_is_no_evidence():
    old = sig(1, {"gate_proj": UP, "up_proj": UP}, "mlp")
    new = sig(1, {"w1": UP, "w3": UP}, "mlp")
    evidence = llama_evidence(1, ("w1", "w2", "w3"))
    places = dict(evidence.new_places) | {"layers.0.mlp.w3": ("m.py:1", 40)}  # written elsewhere
    found = pairs_of(old, new, Evidence(evidence.old_texts, evidence.new_texts,
                                        evidence.old_places, places))
    assert found == {}


def test_identical_statement_text_pairs_when_it_is_unique():
    old = sig(1, {"a": SQ, "b": SQ})
    new = sig(1, {"c": SQ, "d": SQ})
    texts_old = {"layers.0.attn.a": "self.<name> = nn.Linear(d, d)",
                 "layers.0.attn.b": "self.<name> = nn.Linear(d_ctx, d)"}
    texts_new = {"layers.0.attn.c": "self.<name> = nn.Linear(d_ctx, d)",
                 "layers.0.attn.d": "self.<name> = nn.Linear(d, d)"}
    found = pairs_of(old, new, Evidence(texts_old, texts_new))
    assert found["layers.0.attn.a."] == (
        "layers.0.attn.d.", "paired by its creating statement, identical apart from the name")
    assert found["layers.0.attn.b."][0] == "layers.0.attn.c."


def test_a_q_k_swap_is_never_claimed():
    """The edit wrote k_proj where to_q was and q_proj where to_k was: names and order
    disagree, so neither pair is claimed (loading would put q's weights into k)."""
    old = sig(1, {"to_q": SQ, "to_k": SQ})
    new = sig(1, {"k_proj": SQ, "q_proj": SQ})
    evidence = Evidence(old_places={"layers.0.attn.to_q": ("m.py:0", 5),
                                    "layers.0.attn.to_k": ("m.py:0", 6)},
                        new_places={"layers.0.attn.k_proj": ("m.py:0", 5),
                                    "layers.0.attn.q_proj": ("m.py:0", 6)})
    assert pairs_of(old, new, evidence) == {}
    assert pairs_of(old, new) == {"layers.0.attn.to_q.": ("layers.0.attn.q_proj.",
                                                          "paired by name: `to_q` ~ `q_proj`"),
                                  "layers.0.attn.to_k.": ("layers.0.attn.k_proj.",
                                                          "paired by name: `to_k` ~ `k_proj`")}


def test_names_that_do_not_single_out_a_partner_claim_nothing():
    old = sig(1, {"proj_a": SQ, "proj_b": SQ})
    new = sig(1, {"a_b_proj": SQ, "b_a_proj": SQ})
    assert pairs_of(old, new) == {}


def test_the_rename_finding_lists_every_pair_and_its_evidence():
    old = sig(3, {"to_q": SQ, "to_k": SQ})
    new = sig(3, {"q_proj": SQ, "k_proj": SQ})
    found = {f.key: f for f in diff.compare("m", old, new)}
    q = found["layers.{0..2}.attn.to_q.*"]
    assert q.new_key == "layers.{0..2}.attn.q_proj.*"
    assert dict(zip(q.keys, q.new_keys)) == {f"layers.{i}.attn.to_q.weight":
                                             f"layers.{i}.attn.q_proj.weight" for i in range(3)}
    assert q.evidence == "paired by name: `to_q` ~ `q_proj`" and q.evidence in q.message


def test_weighed_groups_name_what_the_source_could_settle():
    old = sig(1, {"gate_proj": UP, "up_proj": UP}, "mlp")
    new = sig(1, {"w1": UP, "w3": UP}, "mlp")
    assert diff.weighed_renames(old, new) == (
        (("layers.0.mlp.gate_proj", "layers.0.mlp.up_proj"),
         ("layers.0.mlp.w1", "layers.0.mlp.w3")),)


def test_expand_pairs_maps_every_key_below_a_subtree():
    pairs = {"blocks.0.fc.": "blocks.0.up.", "scale": "scales"}
    keys = ["blocks.0.fc.weight", "blocks.0.fc.bias", "scale", "blocks.0.norm.weight"]
    assert renames.expand_pairs(pairs, keys) == {
        "blocks.0.fc.bias": "blocks.0.up.bias", "blocks.0.fc.weight": "blocks.0.up.weight",
        "scale": "scales"}


KV = TensorSpec("float32", (2, 8), "parameter")  # grouped-query attention: k/v are smaller


@pytest.mark.parametrize(("old_names", "new_names"), [
    (("q_proj", "k_proj", "v_proj", "o_proj"), ("wq", "wk", "wv", "wo")),  # HF -> Meta Llama
    (("wq", "wk", "wv", "wo"), ("q_proj", "k_proj", "v_proj", "o_proj")),  # and back
    (("to_q", "to_k", "to_v", "to_out"), ("wq", "wk", "wv", "wout")),
])
def test_names_equal_once_a_side_s_shared_letters_are_set_aside_pair(old_names, new_names):
    shapes = {"q": SQ, "k": KV, "v": KV, "o": SQ}
    old = sig(2, {name: shapes[name.replace("to_", "").lstrip("w")[0]] for name in old_names})
    new = sig(2, {name: shapes[name.replace("to_", "").lstrip("w")[0]] for name in new_names})
    found = pairs_of(old, new)
    assert {o: n for o, (n, _) in found.items()} == {
        f"layers.{i}.attn.{a}.": f"layers.{i}.attn.{b}."
        for i in range(2) for a, b in zip(old_names, new_names)}
    assert found["layers.0.attn." + old_names[0] + "."][1] == \
        f"paired by name: `{old_names[0]}` ~ `{new_names[0]}`"


@pytest.mark.parametrize(("old_names", "new_names"), [
    (("w", "w2"), ("q", "k")),             # a core would be empty: no evidence
    (("gate_proj", "up_proj"), ("w1", "w3")),   # cores `gate`/`up` and `1`/`3` share nothing
    (("wq", "wk"), ("k_proj", "kq_proj")),  # `q`/`k` against `k`/`kq`: `k` would be claimed twice
])
def test_shared_letters_give_no_pair_the_names_do_not_make_unique(old_names, new_names):
    found = pairs_of(sig(1, dict.fromkeys(old_names, SQ)), sig(1, dict.fromkeys(new_names, SQ)))
    assert found == {}


NORM = TensorSpec("float32", (8,), "parameter")


def _llama_layer(norms: tuple[str, str], attention: str, names: str) -> Signature:
    return Signature({f"layers.{i}.{key}.weight": spec for i in range(2) for key, spec in (
        *((norm, NORM) for norm in norms),
        *((attention + "." + names.format(a), SQ) for a in "qkvo"))})


def test_meta_and_hf_llama_layers_pair_what_the_names_say_and_not_the_norms():
    """Meta's attention_norm is HF's input_layernorm, ffn_norm is post_attention_layernorm:
    the shared `attention` of attention_norm and post_attention_layernorm is a trap."""
    meta = _llama_layer(("attention_norm", "ffn_norm"), "attention", "w{}")
    hf = _llama_layer(("input_layernorm", "post_attention_layernorm"), "self_attn", "{}_proj")
    for old, new in ((meta, hf), (hf, meta)):
        found = {o: n for o, (n, _) in pairs_of(old, new).items()}
        assert not any("norm" in o for o in found), found
        assert len(found) == 8 and all(
            o.rstrip(".").rpartition(".")[2].replace("_proj", "").lstrip("w") ==
            n.rstrip(".").rpartition(".")[2].replace("_proj", "").lstrip("w")
            for o, n in found.items()), found


def _spec(*shape: int) -> TensorSpec:
    return TensorSpec("float32", shape, "parameter")


CONV = _spec(8, 8, 3, 3)


@pytest.mark.parametrize(("old", "new"), [
    # LDM's VAE `mid.block_1`/`block_2` are diffusers' `mid_block.resnets.0`/`1`: the `1`s
    # are not the same layer
    ({"mid.block_1.conv.weight": CONV, "mid.block_2.conv.weight": CONV},
     {"mid.resnets.0.conv.weight": CONV, "mid.resnets.1.conv.weight": CONV}),
    ({f"h.0.ln_{i}.{p}": _spec(8) for i in (1, 2) for p in ("weight", "bias")},
     {f"h.0.norms.{i}.{p}": _spec(8) for i in (0, 1) for p in ("weight", "bias")}),
    # LDM's decoder `up.i` is diffusers' `up_blocks.{n-1-i}`: index 0 is not index 0
    ({"up.0.block.weight": _spec(4, 4, 3, 3), "up.0.upsample.weight": CONV,
      "up.1.block.weight": _spec(2, 2, 3, 3), "up.1.upsample.weight": CONV},
     {"up_blocks.1.resnets.weight": _spec(4, 4, 3, 3), "up_blocks.1.upsamplers.0.weight": CONV,
      "up_blocks.0.resnets.weight": _spec(2, 2, 3, 3), "up_blocks.0.upsamplers.0.weight": CONV}),
    # four layers became three: which one went is not in the numbers
    ({f"transformer.h.{i}.{m}.weight": SQ for i in range(4) for m in ("attn", "mlp")},
     {f"model.layers.{i}.{m}.weight": SQ for i in range(3) for m in ("attn", "mlp")}),
    # post-norm to pre-norm: the norm after attention is not the one before it
    ({f"layers.0.norm_post_{n}.weight": _spec(8) for n in ("attn", "ffn")},
     {f"layers.0.norm_pre_{n}.weight": _spec(8) for n in ("attn", "ffn")}),
])
def test_numbers_that_disagree_and_opposite_words_are_no_evidence(old, new):
    """Each of these used to be claimed (wrongly, with shapes that load): a number in
    common between sides that number differently, or names the same but for pre/post."""
    found = pairs_of(Signature(old), Signature(new))
    wrong = {o: n for o, (n, _) in found.items()
             if not (o.startswith("up.0.block") and n.startswith("up_blocks.1.")
                     or o.startswith("up.1.block") and n.startswith("up_blocks.0."))}
    assert wrong == {}, found


def test_numbers_count_where_both_sides_number_alike():
    old = {f"transformer.h.{i}.{m}.weight": SQ for i in range(3) for m in ("attn", "mlp")}
    new = {f"model.layers.{i}.{m}.weight": SQ for i in range(3) for m in ("attn", "mlp")}
    found = {o: n for o, (n, _) in pairs_of(Signature(old), Signature(new)).items()}
    assert found == {"transformer.h.": "model.layers."}  # the list as a whole, in order
    found = pairs_of(sig(1, {"norm1": SQ, "norm2": SQ}), sig(1, {"ln_1": SQ, "ln_2": SQ}))
    assert {o: n for o, (n, _) in found.items()} == {
        "layers.0.attn.norm1.": "layers.0.attn.ln_1.",
        "layers.0.attn.norm2.": "layers.0.attn.ln_2."}


def test_tensorflow_era_gamma_and_beta_pair_with_weight_and_bias():
    """BERT's old LayerNorm named its tensors gamma/beta; every LayerNorm holds two tensors of
    one shape, so only the names can say which is which."""
    norms = ("embeddings.LayerNorm", "encoder.layer.0.output.LayerNorm",
             "encoder.layer.1.output.LayerNorm")
    old = Signature({f"{n}.{t}": NORM for n in norms for t in ("gamma", "beta")})
    new = Signature({f"{n}.{t}": NORM for n in norms for t in ("weight", "bias")})
    found = pairs_of(old, new)
    assert {o: n for o, (n, _) in found.items()} == {
        f"{n}.{a}": f"{n}.{b}" for n in norms for a, b in (("gamma", "weight"), ("beta", "bias"))}
    assert found["embeddings.LayerNorm.gamma"][1] == "paired by name: `gamma` ~ `weight`"


def test_shortened_words_pair_and_a_place_word_is_no_shortening():
    """`tok_embeddings` is `embed_tokens` (Meta's Llama and HF's); `pos` is not `post`."""
    found = names.by_names(["tok_embeddings.", "output."], ["embed_tokens.", "lm_head."], 0)
    assert found == {"tok_embeddings.": "embed_tokens."}
    found = names.by_names(["a.pos_norm.", "a.tok_norm."], ["a.post_norm.", "a.token_norm."], 1)
    assert found == {"a.tok_norm.": "a.token_norm."}
    found = names.by_names(["m.layer.", "m.block."], ["m.blocks.", "m.layers."], 1)
    assert found == {"m.layer.": "m.layers.", "m.block.": "m.blocks."}


EMBED = _spec(50, 8)


# where each Llama tensor lives in Meta's layout and in HF's (`{}`: the layer, then q/k/v/o)
_LLAMA = {"embed": ("tok_embeddings", "model.embed_tokens"), "norm": ("norm", "model.norm"),
          "head": ("output", "lm_head"),
          "attn": ("layers.{}.attention.w{}", "model.layers.{}.self_attn.{}_proj"),
          "gate": ("layers.{}.feed_forward.w1", "model.layers.{}.mlp.gate_proj"),
          "up": ("layers.{}.feed_forward.w3", "model.layers.{}.mlp.up_proj"),
          "down": ("layers.{}.feed_forward.w2", "model.layers.{}.mlp.down_proj"),
          "attn_norm": ("layers.{}.attention_norm", "model.layers.{}.input_layernorm"),
          "ffn_norm": ("layers.{}.ffn_norm", "model.layers.{}.post_attention_layernorm")}


def _llama(hf: bool) -> dict[str, TensorSpec]:
    name = {part: places[hf] for part, places in _LLAMA.items()}
    keys = {f"{name['embed']}.weight": EMBED, f"{name['norm']}.weight": NORM,
            f"{name['head']}.weight": EMBED}
    for i in range(2):
        keys.update({f"{name['attn'].format(i, a)}.weight": SQ for a in "qkvo"})
        keys.update({f"{name[part].format(i)}.weight": spec for part, spec in (
            ("gate", UP), ("up", UP), ("down", DOWN), ("attn_norm", NORM), ("ffn_norm", NORM))})
    return keys


def test_modules_moved_under_a_new_top_level_module_pair_below_it():
    """HF's LlamaForCausalLM keeps the layers under `model.` and `lm_head` beside it; Meta's
    checkpoint has them at the top. No prefix explains every key, so the pairs are sought
    with `model.` set aside: what names and shapes say pairs, the rest stays unpaired."""
    expected = {"tok_embeddings.": "model.embed_tokens.", "norm.": "model.norm.",
                "output.weight": "lm_head.weight"}
    for i in range(2):
        expected.update({f"layers.{i}.attention.w{a}.": f"model.layers.{i}.self_attn.{a}_proj."
                         for a in "qkvo"})
        expected[f"layers.{i}.feed_forward.w2.weight"] = f"model.layers.{i}.mlp.down_proj.weight"
    meta, hf = Signature(_llama(hf=False)), Signature(_llama(hf=True))
    found = {o: n for o, (n, _) in pairs_of(meta, hf).items()}
    assert found == expected
    back = {o: n for o, (n, _) in pairs_of(hf, meta).items()}
    assert back == {n: o for o, n in expected.items()}
    reason = pairs_of(meta, hf)["layers.0.attention.wq."][1]
    assert reason == "paired by name: `attention.wq` ~ `self_attn.q_proj`"


@pytest.mark.parametrize(("old", "new"), [
    # `layers` would be both a top-level module and one below `encoder`
    (["layers.0.w", "head.w"], ["layers.0.w", "encoder.layers.0.w", "head.w"]),
    # two new top-level modules each hold one old name: which one moved is not known
    (["a.w", "b.w"], ["x.a.w", "y.b.w"]),
    # nothing of the old top level reappears below the new module
    (["a.w", "b.w"], ["x.c.w", "b.w"]),
    # one name reappearing is no evidence: a new attention pool has a norm of its own
    (["blocks.0.w", "norm.w", "head.w"],
     ["blocks.0.w", "fc_norm.w", "attn_pool.norm.w", "attn_pool.q.w", "attn_pool.kv.w",
      "head.w"]),
    # a new draft module of one layer beside the model's four is not the model moved
    ([f"layers.{i}.w" for i in range(4)] + ["norm.w"],
     [f"blocks.{i}.w" for i in range(4)] + ["final_norm.w", "draft.layers.0.w", "draft.norm.w"]),
])
def test_no_shift_when_it_is_not_the_one_explanation(old, new):
    from ckptlint.compare import shift
    assert shift.find(old, new) is None
    assert shift.find(new, old) is None


def test_a_shift_restores_keys_as_its_side_spells_them():
    from ckptlint.compare import shift
    found = shift.find(["layers.0.w", "norm.w", "out.w"], ["model.layers.0.w", "model.norm.w",
                                                           "lm_head.w"])
    assert (found.side, found.segment) == ("new", "model")
    assert found.strip("model.layers.0.w") == "layers.0.w" and found.strip("lm_head.w") == \
        "lm_head.w"
    assert found.restore("layers.0.") == "model.layers.0." and found.restore("lm_head.w") == \
        "lm_head.w"


def test_evidence_about_a_shifted_side_is_read_past_the_segment():
    """The source's evidence names each side's modules as that side spells them: with HF's
    `model.` set aside, creation order still pairs gate/up with w1/w3."""
    hf = sig(2, {"gate_proj": UP, "up_proj": UP, "down_proj": DOWN}, "mlp")
    old = Signature({"model." + k: v for k, v in hf.tensors.items()} |
                    {"model.norm.weight": NORM})
    new = Signature(dict(sig(2, {"w1": UP, "w2": DOWN, "w3": UP}, "mlp").tensors) |
                    {"norm.weight": NORM})
    plain = llama_evidence(2, ("w1", "w2", "w3"))
    evidence = Evidence({"model." + k: v for k, v in plain.old_texts.items()}, plain.new_texts,
                        {"model." + k: v for k, v in plain.old_places.items()}, plain.new_places)
    found = pairs_of(old, new, evidence)
    assert found["model.layers.1.mlp.gate_proj."] == (
        "layers.1.mlp.w1.", "paired by creation order in the edit that renamed them")
    assert found["model.layers.1.mlp.up_proj."][0] == "layers.1.mlp.w3."
    groups = renames.pair({k: v for k, v in old.tensors.items()},
                          {k: v for k, v in new.tensors.items()}, old.tensors, new.tensors).groups
    assert (("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"),
            ("layers.0.mlp.w1", "layers.0.mlp.w3")) in groups


def test_whisper_s_modules_moved_under_model_with_their_parts_renamed_still_shift():
    from ckptlint.compare import shift
    found = shift.find(["encoder.blocks.0.attn.query.weight", "encoder.ln_post.weight",
                        "decoder.blocks.0.attn.query.weight", "decoder.ln.weight"],
                       ["model.encoder.layers.0.self_attn.q_proj.weight",
                        "model.encoder.layer_norm.weight", "model.decoder.layer_norm.weight",
                        "model.decoder.layers.0.self_attn.q_proj.weight", "proj_out.weight"])
    assert (found.side, found.segment) == ("new", "model")


@pytest.mark.parametrize(("old", "new"), [
    # a fresh decoder of the encoder's structure is not the encoder
    ({f"encoder.{m}.weight": SQ for m in ("q", "k", "ff")} | {"head.weight": UP},
     {f"decoder.{m}.weight": SQ for m in ("q", "k", "ff")} | {"head.weight": UP}),
    # the norm after attention is not the one before it, even alone in its layer
    ({f"layers.{i}.{m}": s for i in range(2) for m, s in (("pre_norm.weight", NORM),
                                                         ("fc.weight", SQ))},
     {f"layers.{i}.{m}": s for i in range(2) for m, s in (("post_norm.weight", NORM),
                                                         ("fc.weight", SQ))}),
    # a tensor's own name changed to one that says something else
    ({"mask_token": NORM, "fc.weight": SQ}, {"dist_token": NORM, "fc.weight": SQ}),
    ({"act.alpha": NORM, "act.beta": NORM}, {"act.alpha": NORM, "act.bias": NORM}),
    # `pos` is short for position, not pose
    ({"pos_embed": SQ, "obj_embed": SQ}, {"pose_embed": SQ, "object_embed": SQ}),
])
def test_structure_alone_never_pairs_opposite_places_or_unlike_names(old, new):
    assert pairs_of(Signature(old), Signature(new)) == {}


def test_a_lone_tensor_renamed_in_words_that_say_the_same_still_pairs():
    found = pairs_of(Signature({"pos_embedding": SQ, "norm.g": NORM}),
                     Signature({"pos_embed": SQ, "norm.gamma": NORM}))
    assert {o: n for o, (n, _) in found.items()} == {"pos_embedding": "pos_embed",
                                                     "norm.g": "norm.gamma"}
