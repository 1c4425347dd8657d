"""The meta build's stand-ins for sympy and torch's symbolic-shapes module: same results, no
import. Run in a fresh interpreter, since the real modules may already be loaded here."""

from __future__ import annotations

import json
import re
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


INITS = ["nn.init.kaiming_uniform_(w, a=5 ** 0.5)", "nn.init.kaiming_normal_(w, mode='fan_out')",
         "nn.init.xavier_uniform_(w)", "nn.init.xavier_normal_(w, gain=2.0)",
         "nn.init.orthogonal_(w)", "nn.init.sparse_(w, 0.5)", "nn.init.normal_(w, std=0.02)",
         "nn.init.uniform_(w, -1, 1)", "nn.init.trunc_normal_(w, std=0.02)",
         "w.data.normal_(mean=0.0, std=0.02)", "w.uniform_(-0.1, 0.1)", "w.bernoulli_(0.5)"]
# each raises on the CPU, so it must raise on meta too: the skip does not hide a broken model
BROKEN = ["nn.init.kaiming_uniform_(w, nonlinearity='gelu')",
          "nn.init.kaiming_normal_(w, mode='fan_sideways')", "nn.init.xavier_uniform_(v)",
          "nn.init.kaiming_uniform_(v)", "nn.init.orthogonal_(v)", "nn.init.sparse_(c, 0.1)",
          "w.normal_(0.0, -1.0)", "nn.init.normal_(w, std=-1.0)",
          # not numbers: torch's argument parser refuses them
          "nn.init.normal_(w, std=None)", "nn.init.normal_(w, mean=None)",
          "nn.init.normal_(w, std='0.02')", "nn.init.uniform_(w, 'a', 1)", "w.normal_(0, None)",
          # out of each op's range
          "w.exponential_(-1)", "w.geometric_(2)", "w.log_normal_(0, -1)", "w.cauchy_(0, -1)",
          # calls Python itself refuses, and shapes the shape helpers refuse
          "nn.init.kaiming_uniform_(w, foo=1)", "nn.init.uniform_(w, -1, 1, None, 5)",
          "nn.init.uniform_(w, -1, a=0)", "nn.init.sparse_(w)", "nn.init.normal_(tensor=w, x=1)",
          "nn.init._calculate_fan_in_and_fan_out(v)", "nn.init.ones_(w, 1)",
          "nn.init.kaiming_normal_(c, mode='fan_out', nonlinearity='leaky_relu', a='x')",
          # a skip remembered from the first call must not answer the second
          "[nn.init.kaiming_uniform_(w, a=1), nn.init.kaiming_uniform_(w, a=True)]",
          "[nn.init.normal_(w, std=1), nn.init.normal_(w, std=-1)]",
          "[nn.init.xavier_uniform_(w), nn.init.xavier_uniform_(v)]",
          "[nn.init.normal_(w, 0, 1), nn.init.normal_(w, 0, None)]",
          # numbers a double cannot hold, and a std torch computes and then refuses
          "nn.init.normal_(w, 0, 10 ** 400)", "nn.init.xavier_normal_(w, gain=10 ** 400)",
          "w.exponential_(10 ** 400)", "nn.init.xavier_normal_(w, gain=-1.0)",
          "nn.init.kaiming_normal_(w, a=float('nan'))",
          # an in-place fill of a leaf that requires grad, and of a view of one
          "nn.Parameter(torch.empty(3, 3)).normal_()",
          "nn.Parameter(torch.empty(3, 3))[0].uniform_(-1, 1)",
          "[nn.Parameter(torch.empty(3, 3)).data.normal_(), "
          "nn.Parameter(torch.empty(3, 3)).normal_()]",
          "[w.normal_(), nn.Parameter(torch.empty(6, 4)).normal_()]"]
# filled with constants or only read: the same answer on meta as on the CPU
CONSTANT = ["nn.init.ones_(w)", "nn.init.zeros_(tensor=v)",
            "nn.init._calculate_fan_in_and_fan_out(c)",
            "nn.init.kaiming_uniform_(c, mode='fan_out')", "nn.init.xavier_normal_(c)",
            "nn.init.normal_(w, 0, 1, None)", "nn.init.trunc_normal_(w, 0.0, 1.0, -1, 1)"]
# where torch's own meta kernels already differ from the CPU, a meta build with the skip
# must answer as plain `torch.device("meta")` does
AS_PLAIN_META = ["nn.init.normal_(w.long())", "nn.init.normal_(w, 0, torch.tensor(-1.0))",
                 "w.bernoulli_(1.5)", "w.random_(5, 2)",
                 "nn.init.trunc_normal_(w, std=None)", "w.random_()", "w.bernoulli_(0.3)",
                 # torch's meta kernel does not check from <= to (the CPU refuses it)
                 "[nn.init.uniform_(w, 0, 1), nn.init.uniform_(w, 1, 0)]"]

INIT_SCRIPT = """
import contextlib, json, sys, torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from ckptlint.build.builder import on_meta

class Passing(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))

class Seen(TorchDispatchMode):  # the aten ops that ran: a skipped fill runs none
    def __init__(self):
        super().__init__()
        self.names = set()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

FILLS = {"uniform_", "normal_", "bernoulli_"}
out = []
for code in json.loads(sys.argv[1]):
    row = {}
    for where in ("cpu", "meta", "plain", "through_mode"):
        seen = Seen()
        try:
            with seen, (on_meta() if where in ("meta", "through_mode") else torch.device(
                    "cpu" if where == "cpu" else "meta")):
                # a second mode on top: `nn.init` reaches ckptlint's mode the long way round
                with (Passing() if where == "through_mode" else contextlib.nullcontext()):
                    row["direct"] = hasattr(nn.init._calculate_fan_in_and_fan_out,
                                            "__wrapped__") and hasattr(
                        torch.overrides.handle_torch_function, "__wrapped__")
                    w, v, c = torch.empty(6, 4), torch.empty(4), torch.empty(2, 3, 4)
                    answer = eval(code)
            row[where] = ["ok", [list(w.shape), w.device.type],
                          answer if isinstance(answer, tuple) else None]
        except Exception as exc:
            row[where] = [type(exc).__name__, str(exc)]
        row[where + "_filled"] = bool(seen.names & FILLS)
    out.append(row)
print(json.dumps(out))
"""


def _inits(codes: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", INIT_SCRIPT, json.dumps(codes)],
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(proc.stdout.splitlines()[-1])


def test_meta_init_is_skipped_for_nn_init_functions_and_tensor_methods():
    """`nn.init` functions hand the tensor over as a keyword: the skip must see it there."""
    for code, row in zip(INITS, _inits(INITS)):
        assert row["cpu"][:2] == ["ok", [[6, 4], "cpu"]], code
        assert row["meta"][:2] == ["ok", [[6, 4], "meta"]], code
        assert row["cpu_filled"] and not row["meta_filled"], code


def test_an_init_torch_refuses_raises_on_meta_as_on_the_cpu():
    for code, row in zip(BROKEN, _inits(BROKEN)):
        assert row["cpu"][0] != "ok", code
        # the same error (torch words a float std as "-1.0" or "-0.4472135954999579" on meta
        # and "-1" or "-0.447214" on the CPU)
        assert row["meta"][0] == row["cpu"][0], code
        assert _numbers_rounded(row["meta"][1]) == _numbers_rounded(row["cpu"][1]), code


def _numbers_rounded(message: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?", lambda m: f"{float(m.group()):.4g}", message)


def test_where_meta_kernels_differ_from_the_cpu_the_skip_answers_as_plain_meta():
    for code, row in zip(AS_PLAIN_META, _inits(AS_PLAIN_META)):
        assert row["meta"][0] == row["plain"][0], code


def test_shortcuts_answer_as_the_long_way_round():
    """With ckptlint's mode alone on the stack the fan helper skips the trip through it, an
    init call reaches the skip without torch's `handle_torch_function` and remembered skips
    answer at once: each case must answer exactly as with another mode on top, where every
    call goes the long way."""
    codes = INITS + BROKEN + AS_PLAIN_META + CONSTANT
    for code, row in zip(codes, _inits(codes)):
        assert row["direct"], code
        assert row["meta"] == row["through_mode"], code
        assert row["meta_filled"] == row["through_mode_filled"], code
    for code, row in zip(CONSTANT, _inits(CONSTANT)):
        assert row["meta"][0] == row["cpu"][0] == "ok", code
        assert row["meta"][2] == row["cpu"][2], code


def test_nn_init_is_as_it_was_after_a_build_and_replacements_are_left_alone():
    script = """if True:
        import functools, pickle, torch
        from torch import nn
        from ckptlint.build.builder import on_meta
        real_fan, real_normal = nn.init._calculate_fan_in_and_fan_out, nn.init.normal_
        with on_meta():
            public_untouched = nn.init.normal_ is real_normal
            pickle.dumps(functools.partial(nn.init.trunc_normal_, std=0.02))
            fan_inside = nn.init._calculate_fan_in_and_fan_out
        put_back = nn.init._calculate_fan_in_and_fan_out is real_fan
        real_handle = torch.overrides.handle_torch_function
        with on_meta():
            handle_inside = torch.overrides.handle_torch_function
        put_back = put_back and torch.overrides.handle_torch_function is real_handle and \
            handle_inside is not real_handle
        mine = functools.partial(real_fan)  # replaced before a build: neither wrapped nor lost
        nn.init._calculate_fan_in_and_fan_out = mine
        with on_meta():
            nn.Linear(2, 2)
            kept_before = nn.init._calculate_fan_in_and_fan_out is mine
        nn.init._calculate_fan_in_and_fan_out = real_fan
        with on_meta():
            del nn.init._calculate_fan_in_and_fan_out  # removed by the model: no error
        nn.init._calculate_fan_in_and_fan_out = real_fan
        print(public_untouched, fan_inside is not real_fan, put_back, kept_before,
              nn.init._calculate_fan_in_and_fan_out is real_fan)
        """
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=300)
    assert proc.stdout.split() == ["True"] * 5

