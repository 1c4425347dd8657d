"""A green run must be true: each way `check` once said "All clear" while an old checkpoint
would not load as the code expects, through the real CLI on real torch."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

GOOD = '''
from torch import nn


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
'''
GOOD_ENTRY = 'name = "good"\ntarget = "good:Good"'


def _instance(source: str, name: str) -> nn.Module:
    namespace: dict = {}
    exec(compile(source, "<model>", "exec"), namespace)
    return namespace[name]()


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def _findings(run) -> list[dict]:
    return explained(json.loads(run.out)["findings"])


# -- 1. keys torch's loader drops without a word ---------------------------------------------

NONE_SLOTS = {
    "modulelist": ("self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])",
                   "self.blocks = nn.ModuleList([nn.Linear(4, 4), None])", "blocks.1"),
    "add_module": ("self.add_module('attn', nn.Linear(4, 4))",
                   "self.add_module('attn', None)", "attn"),
    "register_module": ("self.register_module('attn', nn.Linear(4, 4))",
                        "self.register_module('attn', None)", "attn"),
    "set_to_none": ("self.attn = nn.Linear(4, 4)",
                    "self.attn = nn.Linear(4, 4)\n        self.attn = None", "attn"),
}


def _slot_model(line: str) -> str:
    return f'''
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        {line}
'''


@pytest.mark.parametrize("way", sorted(NONE_SLOTS))
def test_keys_under_a_none_slot_are_reported_although_torch_is_silent(project, way):
    before, after, slot = NONE_SLOTS[way]
    project.write("m.py", _slot_model(before))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    old = _instance(_slot_model(before), "M").state_dict()
    project.write("m.py", _slot_model(after))
    # the premise: torch's own strict load raises nothing and drops the weights
    assert _instance(_slot_model(after), "M").load_state_dict(old, strict=True).unexpected_keys == []

    run = project.run("check", "--format", "json")
    assert run.code == 1, run.out + run.err
    found = _findings(run)
    assert [f["code"] for f in found] == ["CKL102"]
    assert sorted(found[0]["keys"]) == sorted([f"{slot}.bias", f"{slot}.weight"])
    assert f"`{slot}` to None" in found[0]["message"]
    assert "without an error" in found[0]["message"]
    assert json.loads(run.out)["models"][0]["verdict"] == "drops-silently"
    text = project.run("check", "--no-cache")
    assert "silently drops weights" in text.out and text.code == 1


def test_a_hook_that_drops_keys_on_purpose_stays_silent(project):
    project.write("m.py", _slot_model("self.attn = nn.Linear(4, 4)"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    project.write("m.py", '''
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.attn = None
        self._register_load_state_dict_pre_hook(self._drop_attention)

    def _drop_attention(self, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix + "attn.")]:
            del state_dict[key]
''')
    run = project.run("check")
    assert (run.code, run.out) == (0, "All clear: 1 model matches its committed signature.\n")


def test_a_hook_renaming_into_a_none_slot_is_still_reported(project):
    project.write("m.py", _slot_model("self.attn = nn.Linear(4, 4)"))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    project.write("m.py", '''
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.attn = nn.Linear(4, 4)
        self.add_module("extra", None)
        self._register_load_state_dict_pre_hook(self._move)

    def _move(self, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix + "attn.")]:
            state_dict[key.replace("attn.", "extra.")] = state_dict[key]
''')
    run = project.run("check", "--format", "json")
    assert run.code == 1
    assert any("`extra` to None" in f["message"] for f in _findings(run))


def test_diffusers_unet_without_attention_is_drift(project):
    pytest.importorskip("diffusers")
    kwargs = ("sample_size = 8, block_out_channels = [32, 32], layers_per_block = 1, "
              "norm_num_groups = 8, down_block_types = ['DownBlock2D', 'DownBlock2D'], "
              "up_block_types = ['UpBlock2D', 'UpBlock2D']")
    entry = 'name = "unet"\ntarget = "diffusers:UNet2DModel"\nkwargs = {{ {}, add_attention = {} }}'
    project.configure(entry.format(kwargs, "true"))
    assert project.run("update").code == 0
    project.configure(entry.format(kwargs, "false"))
    run = project.run("check", "--format", "json")
    assert run.code == 1, run.err
    found = _findings(run)
    assert [f["code"] for f in found] == ["CKL102"]
    assert found[0]["count"] == 10 and "mid_block.attentions.0" in found[0]["message"]
    doc = json.loads(run.out)["models"][0]
    assert doc["parameters"]["old"] > doc["parameters"]["new"]


# -- 3. tied weights: say what plain torch does ------------------------------------------------

TIED = '''
from torch import nn


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(16, 4)
        self.lm_head = nn.Linear(4, 16, bias=False)
        self.lm_head.weight = self.wte.weight
'''


def test_a_checkpoint_missing_a_tied_key_is_not_loads_strictly(project, tmp_path):
    project.write("lm.py", TIED)
    project.configure('name = "lm"\ntarget = "lm:LM"')
    assert project.run("update").code == 0
    model = _instance(TIED, "LM")
    state = model.state_dict()
    del state["wte.weight"]
    torch.save(state, project.root / "old.pt")
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "wte.weight"'):
        _instance(TIED, "LM").load_state_dict(torch.load(project.root / "old.pt"), strict=True)

    run = project.run("check", "lm", "--against", "old.pt", "--format", "json")
    assert run.code == 1
    found = _findings(run)
    assert [(f["code"], f["key"]) for f in found] == [("CKL112", "wte.weight")]
    assert json.loads(run.out)["models"][0]["verdict"] == "loads-non-strict"
    text = project.run("check", "lm", "--against", "old.pt")
    assert "loads strictly" not in text.out and "Missing key(s)" in text.out

    torch.save(model.state_dict(), project.root / "full.pt")
    diff = project.run("diff", "old.pt", "full.pt", "--format", "json")
    assert diff.code == 1
    assert [f["code"] for f in _findings(diff)] == ["CKL112"]


# -- 4. nothing checked is not "All clear" -------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "update"])
def test_zero_models_is_a_configuration_error(project, command):
    project.configure()
    run = project.run(command)
    assert run.code == 2 and run.out == ""
    assert "no model is registered" in run.err and "[[tool.ckptlint.models]]" in run.err
    assert "Traceback" not in run.err


# -- 5. a model that ends the process is not a pass ---------------------------------------------

ENDINGS = {
    "sys.exit at import": ("import sys\nsys.exit(0)\n", "", "sys.exit(0)"),
    "sys.exit in __init__": ("import sys\n", "sys.exit(0)", "sys.exit(0)"),
    "os._exit at import": ("import os\nos._exit(0)\n", "", "os._exit(0)"),
    "os._exit in __init__": ("import os\n", "os._exit(0)", "os._exit(0)"),
    "os._exit in a load hook": (
        "import os\n",
        "self._register_load_state_dict_pre_hook(lambda *a: os._exit(0))", "os._exit(0)"),
    "sys.exit in a load hook": (
        "import sys\n",
        "self._register_load_state_dict_pre_hook(lambda *a: sys.exit(3))", "sys.exit(3)"),
    "a crash": ("import ctypes\n", "ctypes.string_at(0)", "SIGSEGV"),
}


def _ending_model(head: str, body: str) -> str:
    return (f"{head}from torch import nn\n\n\nclass Bad(nn.Module):\n"
            f"    def __init__(self):\n        super().__init__()\n"
            f"        self.fc = nn.Linear(2, 2)\n        {body or 'pass'}\n")


@pytest.mark.parametrize("how", sorted(ENDINGS))
def test_a_model_that_ends_the_process_is_a_build_error(project, how):
    head, body, said = ENDINGS[how]
    project.write("good.py", GOOD)
    project.write("bad.py", _ending_model("", ""))
    project.configure('name = "bad"\ntarget = "bad:Bad"', GOOD_ENTRY)
    assert project.run("update").code == 0
    project.write("bad.py", _ending_model(head, body))
    run = project.run("check", "--format", "json")
    assert run.code == 2, (run.out, run.err)
    found = _findings(run)
    assert [(f["model"], f["code"]) for f in found] == [("bad", "CKL201")]
    assert said in found[0]["message"] and "end" in found[0]["message"]
    assert found[0]["file"] in ("bad.py", "pyproject.toml")
    statuses = {m["name"]: m["status"] for m in json.loads(run.out)["models"]}
    assert statuses == {"bad": "error", "good": "clean"}  # the other model was still checked


def test_a_build_that_never_finishes_is_stopped_at_the_timeout(project):
    project.write("good.py", GOOD)
    project.write("bad.py", _ending_model("", ""))
    project.configure('name = "bad"\ntarget = "bad:Bad"', GOOD_ENTRY)
    assert project.run("update").code == 0
    # long enough for the good model on a loaded machine; the loop never ends anyway
    project.configure('name = "bad"\ntarget = "bad:Bad"', GOOD_ENTRY, extra="build_timeout = 6\n")
    project.write("bad.py", _ending_model("", "while True:\n            pass"))
    run = project.run("check", "--format", "json")
    assert run.code == 2
    found = _findings(run)
    assert [(f["model"], f["code"]) for f in found] == [("bad", "CKL201")]
    assert "did not finish within 6 s" in found[0]["message"]
    assert found[0]["file"] == "bad.py" and found[0]["line"] in (8, 9)  # the loop, from its stack
    assert {m["name"]: m["status"] for m in json.loads(run.out)["models"]}["good"] == "clean"


def test_a_non_daemon_thread_does_not_keep_the_run_alive(project):
    project.write("bad.py", _ending_model(
        "import threading, time\n",
        "threading.Thread(target=time.sleep, args=(3600,)).start()"))
    project.configure('name = "bad"\ntarget = "bad:Bad"')
    assert project.run("update").code == 0
    run = project.run("check")
    assert run.code == 0 and run.out.startswith("All clear")


@pytest.mark.parametrize("value", ["0", "-1", "true", '"10"'])
def test_build_timeout_must_be_a_positive_number(project, value):
    project.write("good.py", GOOD)
    project.configure(GOOD_ENTRY, extra=f"build_timeout = {value}\n")
    run = project.run("check")
    assert run.code == 2 and "build_timeout" in run.err and "Traceback" not in run.err


def test_user_output_never_reaches_stdout(project):
    """print at import, in __init__ and in a state-dict hook; os.write(1); argv is the target's."""
    project.write("noisy.py", '''
import argparse, os, sys
from torch import nn

print("at import")
os.write(1, b"raw fd 1\\n")
ARGS = argparse.ArgumentParser().parse_args()  # sees the target's argv, not ckptlint's


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        print("in __init__", sys.argv)
        self.fc = nn.Linear(2, 2)
        self._register_state_dict_hook(lambda *a: print("in a hook"))
''')
    project.configure('name = "noisy"\ntarget = "noisy:Noisy"')
    assert project.run("update").code == 0
    run = project.run("check", "--format", "json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["exit_code"] == 0
    assert "at import" in run.err and "in a hook" in run.err and "['noisy']" in run.err


@pytest.mark.parametrize("how", ["-j 2", "project interpreter"])
def test_output_of_models_never_breaks_the_worker_protocol(project, tmp_path_factory, how,
                                                           monkeypatch):
    project.write("noisy.py", '''
import os, subprocess, sys
from torch import nn

os.write(1, b"{not json at import\\n")
subprocess.run([sys.executable, "-c", "print('a subprocess on fd 1')"])


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        os.write(1, b"raw fd 1 in __init__\\n")
        self.fc = nn.Linear(2, 2)
''')
    project.write("good.py", GOOD)
    project.write("quits.py", _ending_model("import sys\n", "sys.exit(0)"))
    project.configure('name = "noisy"\ntarget = "noisy:Noisy"', GOOD_ENTRY)
    assert project.run("update").code == 0
    project.configure('name = "noisy"\ntarget = "noisy:Noisy"', GOOD_ENTRY,
                      'name = "quits"\ntarget = "quits:Bad"')
    argv = ["check", "--format", "json", "--no-cache"]
    if how == "-j 2":
        argv += ["-j", "2"]
    else:
        shim = tmp_path_factory.mktemp("venv") / "python"
        shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
        shim.chmod(0o755)
        monkeypatch.setenv("CKPTLINT_PYTHON", str(shim))
    run = project.run(*argv)
    doc = json.loads(run.out)
    statuses = {m["name"]: m["status"] for m in doc["models"]}
    assert statuses == {"noisy": "clean", "good": "clean", "quits": "error"}
    # quits: its build called sys.exit (CKL201), and it has no signature yet (CKL202)
    assert sorted((f["model"], f["code"]) for f in doc["findings"]) == \
        [("quits", "CKL201"), ("quits", "CKL202")]


def test_a_build_process_that_dies_before_any_build_is_not_respawned_forever(project,
                                                                           monkeypatch):
    from ckptlint.build import isolate

    project.write("good.py", GOOD)
    project.configure(GOOD_ENTRY)
    assert project.run("update").code == 0

    def broken() -> None:
        raise RuntimeError("no threads here")

    monkeypatch.setattr(isolate, "_single_threaded", broken)  # inherited by the forked child
    run = project.run("check", "--format", "json", "--no-cache")
    assert run.code == 2
    found = _findings(run)
    assert [(f["model"], f["code"]) for f in found] == [("good", "CKL201")]
    assert "ended before it started (exited with code 1)" in found[0]["message"]


TWO = '''
from torch import nn


class Two(nn.Module):
    def __init__(self, tie=False):
        super().__init__()
        self.a = nn.Linear(4, 4, bias=False)
        self.b = nn.Linear(4, 4, bias=False)
        if tie:
            self.b.weight = self.a.weight
'''


def test_a_tie_added_in_code_is_reported_against_a_torch_save_file(project):
    """A torch.save pickle records which tensors share storage: two separate copies the code
    now ties both load into one tensor, the last one wins. That is no All clear."""
    project.write("two.py", TWO)
    project.configure('name = "two"\ntarget = "two:Two"')
    sys.path.insert(0, str(project.root))
    try:
        from two import Two  # the fixture's own module, for a real file

        torch.save(Two().state_dict(), project.root / "untied.pt")
    finally:
        sys.path.remove(str(project.root))
        sys.modules.pop("two", None)
    project.write("two.py", TWO.replace("tie=False", "tie=True"))
    run = project.run("check", "two", "--against", "untied.pt", "--format", "json")
    codes = {f["code"] for f in _findings(run)}
    assert run.code == 1 and "CKL110" in codes, run.out
