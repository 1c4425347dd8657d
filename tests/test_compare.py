"""The pure layer, table by table: old signature, new signature, what the diff must say.

No torch and no model: hand-made signatures in, findings out (as griffe tests its breakages),
so the comparison's rules are pinned here apart from how models are built.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ckptlint.compare import diff, prefix
from ckptlint.compare.verdict import verdict
from ckptlint.core.kinds import Verdict
from ckptlint.core.records import Signature, TensorSpec

W = TensorSpec("float32", (4, 4), "parameter")
B = TensorSpec("float32", (4,), "parameter")
WIDE = TensorSpec("float32", (8, 4), "parameter")
HALF = TensorSpec("float16", (4, 4), "parameter")
BUF = TensorSpec("float32", (4,), "buffer")


def sig(**tensors: TensorSpec) -> Signature:
    """`sig(fc__weight=W)` is a signature with the key `fc.weight`."""
    return Signature({k.replace("__", "."): v for k, v in tensors.items()})


BASE = sig(fc__weight=W, fc__bias=B, head__weight=W)

# (case, old, new, the (slug, key) of every finding after folding, the verdict)
CASES = [
    ("same", BASE, BASE, set(), Verdict.LOADS),
    ("added layer", BASE, sig(fc__weight=W, fc__bias=B, head__weight=W, norm__weight=B),
     {("missing-key", "norm.weight")}, Verdict.LOADS_NON_STRICT),
    ("removed layer", BASE, sig(fc__weight=W, fc__bias=B),
     {("unexpected-key", "head.weight")}, Verdict.LOADS_NON_STRICT),
    ("wider", BASE, sig(fc__weight=WIDE, fc__bias=B, head__weight=W),
     {("shape-mismatch", "fc.weight")}, Verdict.DOES_NOT_LOAD),
    ("half precision", BASE, sig(fc__weight=HALF, fc__bias=B, head__weight=W),
     {("dtype-mismatch", "fc.weight")}, Verdict.LOADS),
    ("parameter became a buffer", BASE, sig(fc__weight=W, fc__bias=BUF, head__weight=W),
     {("role-changed", "fc.bias")}, Verdict.LOADS),
    ("renamed module", BASE, sig(proj__weight=W, proj__bias=B, head__weight=W),
     {("renamed-key", "fc.*")}, Verdict.LOADS_NON_STRICT),
    ("every layer in three blocks", sig(**{f"blocks__{i}__w": W for i in range(3)}),
     sig(**{f"blocks__{i}__w": WIDE for i in range(3)}),
     {("shape-mismatch", "blocks.{0..2}.w")}, Verdict.DOES_NOT_LOAD),
]


@pytest.mark.parametrize("old, new, expected, loads", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_the_diff_says_what_changed(old: Signature, new: Signature, expected: set,
                                    loads: Verdict) -> None:
    found = diff.compare("m", old, new)
    assert {(f.kind.slug, f.key) for f in found} == expected
    assert verdict(found)[0] is loads


def test_a_finding_is_about_the_model_it_names() -> None:
    [finding] = diff.compare("net", BASE, sig(fc__weight=W, fc__bias=B))
    assert finding.model == "net" and finding.keys == ("head.weight",)


def test_a_removed_subtree_is_one_finding_with_its_size() -> None:
    old = sig(enc__a__weight=W, enc__b__weight=W, head__weight=W)
    [finding] = diff.compare("m", old, sig(head__weight=W))
    assert (finding.kind.slug, finding.key, len(finding.keys)) == ("unexpected-key", "enc.*", 2)
    assert "2 tensors, 32 values" in finding.message


def test_the_order_of_keys_never_changes_the_findings() -> None:
    forward = diff.compare("m", BASE, sig(fc__weight=WIDE, fc__bias=B, norm__weight=B))
    backward = diff.compare("m", Signature(dict(reversed(list(BASE.tensors.items())))),
                            sig(norm__weight=B, fc__bias=B, fc__weight=WIDE))
    assert forward == backward


# (case, old keys, new keys, the prefix found and which side carries it, or None)
PREFIXES = [
    ("DataParallel", ["module.fc.weight", "module.fc.bias"], ["fc.weight", "fc.bias"],
     ("module.", "checkpoint")),
    ("torch.compile", ["_orig_mod.fc.weight"], ["fc.weight"], ("_orig_mod.", "checkpoint")),
    ("Lightning", ["model.fc.weight", "model.fc.bias"], ["fc.weight", "fc.bias"],
     ("model.", "checkpoint")),
    ("the code wraps", ["fc.weight", "fc.bias"], ["model.fc.weight", "model.fc.bias"],
     ("model.", "code")),
    ("nothing shared", ["fc.weight"], ["fc.weight"], None),
    ("only some keys carry it", ["module.fc.weight", "fc.bias"], ["fc.weight", "fc.bias"], None),
]


@pytest.mark.parametrize("old, new, expected", [p[1:] for p in PREFIXES],
                         ids=[p[0] for p in PREFIXES])
def test_a_wrapper_prefix_is_found_only_when_every_key_carries_it(old: list, new: list,
                                                                   expected) -> None:
    found = prefix.detect(Signature({k: W for k in old}), Signature({k: W for k in new}))
    assert (None if found is None else (found.prefix, found.side)) == expected


def test_the_pure_layer_needs_no_torch() -> None:
    code = ("import sys; from ckptlint.compare import diff, prefix, renames, verdict; "
            "print('torch' in sys.modules, 'libcst' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
