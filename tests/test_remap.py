"""`ckptlint remap`: the mapping and the hook it prints load a real old checkpoint, bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

OLD = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)


class Net(nn.Module):
    def __init__(self, d=8, n=4):
        super().__init__()
        self.embed = nn.Embedding(10, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.bn = nn.BatchNorm1d(d)
        self.fc = nn.Linear(d, 5)
'''
# the refactor: `fc` -> `head`, each block wrapped in nn.Sequential
NEW = OLD.replace("self.fc = nn.Linear(d, 5)", "self.head = nn.Linear(d, 5)") \
    .replace("[Block(d) for _ in range(n)]", "[nn.Sequential(Block(d)) for _ in range(n)]")
NET = 'name = "net"\ntarget = "models:Net"'


def _module(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "models.py", "exec"), namespace)
    return namespace


def _checkpoint(project, source: str = OLD, wrap=lambda m: m) -> dict:
    torch.manual_seed(0)
    model = _module(source)["Net"]()
    model.bn.running_mean.uniform_()  # buffers must travel too
    state = wrap(model).state_dict()
    torch.save(state, project.root / "ckpt.pt")
    return state


def _setup(project, new: str = NEW, entry: str = NET):
    project.write("models.py", new)
    project.configure(entry)


def _assert_same(loaded: dict, original: dict, mapping: dict) -> None:
    assert len(loaded) == len(original)
    for old_key, value in original.items():
        assert torch.equal(loaded[mapping.get(old_key, old_key)], value), old_key


def test_mapping_loads_the_real_checkpoint_strictly(project):
    _setup(project)
    old_state = _checkpoint(project)
    run = project.run("remap", "net", "--against", "ckpt.pt", "--format", "json")
    doc = json.loads(run.out)
    assert (run.code, doc["proved"], doc["still_failing"]) == (0, True, []), run.out + run.err
    mapping = doc["mapping"]
    assert mapping["fc.weight"] == "head.weight"
    assert mapping["blocks.3.norm.bias"] == "blocks.3.0.norm.bias"
    assert "embed.weight" not in mapping  # only keys that move
    model = _module(NEW)["Net"]()
    model.load_state_dict({mapping.get(k, k): v for k, v in old_state.items()}, strict=True)
    _assert_same(model.state_dict(), old_state, mapping)
    # one folded rule per moved subtree, not one per layer
    assert len(doc["rules"]) == 2


def test_emitted_hook_loads_old_and_new_checkpoints(project):
    _setup(project)
    old_state = _checkpoint(project)
    run = project.run("remap", "net", "--against", "ckpt.pt")
    assert run.code == 0 and "loads into `net` with strict=True" in run.out
    namespace = _module(NEW + "\n" + run.out)
    hook = next(v for k, v in namespace.items() if k.startswith("_remap_net"))

    class Patched(namespace["Net"]):
        def __init__(self):
            super().__init__()
            self._register_load_state_dict_pre_hook(hook, with_module=True)

    model = Patched()
    model.load_state_dict(torch.load(project.root / "ckpt.pt", weights_only=True), strict=True)
    mapping = json.loads(project.run("remap", "net", "--against", "ckpt.pt", "--format",
                                     "json").out)["mapping"]
    _assert_same(model.state_dict(), old_state, mapping)
    fresh = Patched()  # a checkpoint in the new layout passes through untouched
    fresh.load_state_dict(model.state_dict(), strict=True)
    inner = torch.nn.ModuleDict({"net": Patched()})  # and the hook honours a parent's prefix
    inner.load_state_dict({f"net.{k}": v for k, v in old_state.items()}, strict=True)


def test_prefix_and_renames_together(project):
    _setup(project)
    old_state = _checkpoint(project, wrap=torch.nn.DataParallel)
    run = project.run("remap", "net", "--against", "ckpt.pt", "--format", "json")
    doc = json.loads(run.out)
    assert doc["proved"], run.out
    assert doc["mapping"]["module.fc.bias"] == "head.bias"
    assert doc["mapping"]["module.embed.weight"] == "embed.weight"
    model = _module(NEW)["Net"]()
    model.load_state_dict({doc["mapping"].get(k, k): v for k, v in old_state.items()})
    _assert_same(model.state_dict(), old_state, doc["mapping"])


def test_committed_signature_is_the_default_reference(project):
    _setup(project, OLD)
    project.run("update")
    _setup(project)
    doc = json.loads(project.run("remap", "net", "--format", "json").out)
    assert doc["proved"] and doc["reference"] == "signatures/net.toml"
    assert doc["mapping"]["blocks.0.fc.weight"] == "blocks.0.0.fc.weight"


def test_what_no_rename_explains_is_reported_and_fails(project):
    _setup(project, NEW.replace("self.head = nn.Linear(d, 5)",
                                "self.head = nn.Linear(d, 5)\n        self.extra = nn.Linear(d, d)"))
    _checkpoint(project)
    run = project.run("remap", "net", "--against", "ckpt.pt", "--format", "json")
    doc = json.loads(run.out)
    assert run.code == 1 and not doc["proved"]
    assert doc["still_failing"] == ["missing: `extra.bias`, `extra.weight`"]
    text = project.run("remap", "net", "--against", "ckpt.pt")
    assert text.code == 1 and "does not load" in text.out and "extra.weight" in text.out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_nothing_to_remap(project, fmt):
    _setup(project, OLD)
    _checkpoint(project)
    run = project.run("remap", "net", "--against", "ckpt.pt", "--format", fmt)
    assert run.code == 0
    if fmt == "json":
        assert json.loads(run.out)["mapping"] == {}
    else:
        assert "nothing to remap" in run.out


def test_unknown_model_is_an_error(project):
    _setup(project)
    run = project.run("remap", "nope")
    assert run.code == 2 and "no model named `nope`" in run.err


# -- a hook written from a small registered config loads the deep checkpoint it is for ------

GPT = '''
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Config:
    n_layer: int = 2
    n_embd: int = 8


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(16, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
        ))
'''
# the refactor: the MLP's first projection renamed in every layer
RENAMED = GPT.replace("self.c_fc = ", "self.fc = ")
# ...or only the first layer's block gets an extra wrapper
FIRST_ONLY = GPT.replace("h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),",
                         "h=nn.ModuleList([nn.Sequential(Block(config))] +\n"
                         "                [Block(config) for _ in range(config.n_layer - 1)]),")
ENTRY = ('name = "gpt"\ntarget = "models:GPT"\n'
         'kwargs = { config = { _target_ = "models:Config", n_layer = 2 } }')


def _old_checkpoint(project, n_layer: int) -> tuple[dict, str]:
    """A real checkpoint of the old code at depth `n_layer`, saved by torch."""
    namespace = _module(GPT)
    torch.manual_seed(n_layer)
    state = namespace["GPT"](namespace["Config"](n_layer=n_layer)).state_dict()
    name = f"old-{n_layer}.pt"
    torch.save(state, project.root / name)
    return state, name


def _hooked(source: str, hook_text: str, n_layer: int):
    """The new code at depth `n_layer`, with the emitted hook registered as `remap` says."""
    namespace = _module(source + "\n" + hook_text)
    hook = next(v for k, v in namespace.items() if k.startswith("_remap_gpt"))
    model = namespace["GPT"](namespace["Config"](n_layer=n_layer))
    model._register_load_state_dict_pre_hook(hook, with_module=True)
    return model


def _remap(project, source: str) -> dict:
    project.write("models.py", GPT)
    project.configure(ENTRY)
    assert project.run("update").code == 0  # the 2-layer signature of the old code
    project.write("models.py", source)
    run = project.run("remap", "gpt", "--format", "json")
    doc = json.loads(run.out)
    assert run.code == 0 and doc["proved"], run.out + run.err
    return doc


@pytest.mark.parametrize("n_layer", [2, 4, 7])
def test_a_rename_of_every_layer_survives_another_depth(project, n_layer):
    doc = _remap(project, RENAMED)
    assert doc["rules"] == [[r"^transformer\.h\.(\d+)\.mlp\.c_fc\.",
                             r"transformer.h.\g<1>.mlp.fc."]]
    old_state, name = _old_checkpoint(project, n_layer)
    model = _hooked(RENAMED, doc["snippet"], n_layer)
    model.load_state_dict(torch.load(project.root / name, weights_only=True), strict=True)
    loaded = model.state_dict()
    for key, value in old_state.items():
        assert torch.equal(loaded[key.replace(".c_fc.", ".fc.")], value), key


def test_a_rename_of_some_layers_keeps_their_indices(project):
    doc = _remap(project, FIRST_ONLY)
    assert doc["rules"] == [[r"^transformer\.h\.0\.", "transformer.h.0.0."]]
    old_state, name = _old_checkpoint(project, 4)
    model = _hooked(FIRST_ONLY, doc["snippet"], 4)
    model.load_state_dict(torch.load(project.root / name, weights_only=True), strict=True)
    loaded = model.state_dict()
    for key, value in old_state.items():  # layer 0 moved, layers 1-3 left where they were
        assert torch.equal(loaded[key.replace("h.0.", "h.0.0.")], value), key
