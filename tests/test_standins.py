"""The meta build's stand-ins for sympy and torch's symbolic-shapes module: same results, no
import. Run in a fresh interpreter, since the real modules may already be loaded here."""

from __future__ import annotations

import json
import subprocess
import sys

OPS = ["torch.tril(x)", "(torch.arange(8)[:, None] < 3)", "torch.outer(torch.arange(4.), "
       "torch.arange(4.))", "x.masked_fill(x == 0, 1.0)", "x + 1", "x.cos()", "torch.cat([x, x])",
       "torch.polar(x, x)", "torch.einsum('i,j->ij', x[0], x[1])",
       "torch.triu(torch.full((4, 4), float('-inf')), 1)", "torch.linspace(0, 1, 5)",
       "x.view(64).reshape(4, 16).repeat(2, 1)", "torch.stack([x, x])", "x.bool() & (x > 0)",
       "1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))", "torch.where(x > 0, x, -x)",
       "x.softmax(-1)", "torch.nn.functional.pad(x, (1, 1))", "x[None].expand(3, 8, 8)",
       "x.unsqueeze(0).transpose(1, 2)", "x.sum(0).mean()", "x.masked_fill(torch.tril(x) == 0, "
       "float('-inf'))", "torch.stack([x, x[:4].repeat(2, 1)])"]

SCRIPT = """
import json, sys, torch
from ckptlint.build.builder import on_meta
ops = json.loads(sys.argv[1])
stand_ins = sys.argv[2] == "on"
results = []
with on_meta(stand_ins):
    x = torch.ones(8, 8)
    for op in ops:
        try:
            out = eval(op)
            results.append([list(out.shape), str(out.dtype)])
        except Exception as exc:
            results.append(type(exc).__name__)
print(json.dumps({"results": results, "sympy": "sympy" in sys.modules,
                  "shapes": "torch.fx.experimental.symbolic_shapes" in sys.modules}))
"""


def _run(stand_ins: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(OPS), stand_ins],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.splitlines()[-1])


def test_stand_ins_give_the_same_shapes_and_errors_without_importing_sympy():
    fast, real = _run("on"), _run("off")
    assert fast["results"] == real["results"]
    assert (fast["sympy"], fast["shapes"]) == (False, False)
    assert real["sympy"]  # the premise: without them, these ops import sympy


def test_symbolic_values_reach_the_real_module():
    from ckptlint.build.standins import _SymbolicShapesStandIn

    standin = _SymbolicShapesStandIn()
    # not a plain bool: answered by the real module, which raises for a str as torch does
    import pytest
    from torch.fx.experimental import symbolic_shapes

    with pytest.raises(AssertionError):
        symbolic_shapes.guard_or_false("x")
    with pytest.raises(AssertionError):
        standin.guard_or_false("x")
    assert standin.sym_eq((1, 2), (1, 2)) is True and standin.guard_or_true(False) is False
