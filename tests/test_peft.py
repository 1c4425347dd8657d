"""PEFT LoRA adapters, saved by peft itself, checked merged into the code's base model."""

from __future__ import annotations

import importlib.util
import json

import pytest

MODEL = '''
from torch import nn
from transformers.pytorch_utils import Conv1D


class Net(nn.Module):
    def __init__(self, d=8, layers=3, classes=3):
        super().__init__()
        self.embed = nn.Embedding(10, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for _ in range(layers))
        self.conv = nn.Conv2d(3, d, 3)
        self.norm = nn.BatchNorm1d(d)
        self.c_attn = Conv1D(3 * d, d)  # GPT-2's layer: weight is (in, out)
        self.cls = nn.Linear(d, classes)
'''
NET = 'name = "net"\ntarget = "models:Net"'
TARGETS = r".*(blocks\.\d+\.0|embed|conv)$"


def _base(project, **kwargs):
    spec = importlib.util.spec_from_file_location("peft_models", project.root / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net(**kwargs)


def _adapter(project, folder: str = "adapter", **save) -> str:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_base(project), LoraConfig(
        r=4, lora_alpha=8, target_modules=TARGETS, modules_to_save=["cls"]))
    model.save_pretrained(str(project.root / folder), **save)
    return folder


def _gpt2_adapter(project) -> str:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_base(project), LoraConfig(r=2, target_modules=["c_attn"],
                                                      fan_in_fan_out=True))
    model.save_pretrained(str(project.root / "gpt2_adapter"))
    return "gpt2_adapter"


@pytest.fixture
def net(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    assert project.run("update").code == 0
    return project


def _json(run) -> dict:
    return json.loads(run.out)


@pytest.mark.parametrize("save", [{}, {"safe_serialization": False}], ids=["safetensors", "bin"])
def test_an_adapter_of_the_base_model_checks_clean_and_says_what_it_is(net, save):
    folder = _adapter(net, **save)
    run = net.run("check", "net", "--against", folder, "--format", "json")
    doc = _json(run)
    assert (run.code, doc["findings"]) == (0, []), run.out
    [note] = doc["models"][0]["notes"]
    assert "a PEFT LoRA adapter (r=4" in note and "for 5 modules" in note


def test_inspect_says_it_is_an_adapter_and_which_model_takes_it(net):
    folder = _adapter(net)
    run = net.run("inspect", folder)
    assert run.out.startswith(f"{folder}: peft-adapter, 7 tensors")
    assert "note: read adapter_model.safetensors in the folder; a PEFT LoRA adapter" in run.out
    # the keys it changes once merged, with the shapes lora_B @ lora_A has
    assert "  embed.weight  " in run.out and "f32[10, 8]" in run.out
    assert "conv.weight" in run.out and "f32[8, 3, 3, 3]" in run.out
    assert "net: loads strictly" in run.out and "No registered model" not in run.out
    doc = _json(net.run("inspect", f"{folder}/adapter_model.safetensors", "--format", "json"))
    assert doc["format"] == "peft-adapter" and set(doc["tensors"]) == {
        "blocks.0.0.weight", "blocks.1.0.weight", "blocks.2.0.weight", "embed.weight",
        "conv.weight", "cls.weight", "cls.bias"}


def test_a_listed_adapter_is_checked_on_every_run(net):
    _adapter(net)
    net.configure(NET + '\ncheckpoints = ["adapter"]')
    assert net.run("check").code == 0
    net.write("models.py", MODEL.replace("nn.Conv2d(3, d, 3)", "nn.Conv2d(3, d, 5)"))
    run = net.run("check", "--format", "json")
    assert run.code == 1
    assert [(f["code"], f["key"], f["against"]) for f in _json(run)["findings"]] == [
        ("CKL103", "conv.weight", None), ("CKL103", "conv.weight", "adapter")]


def test_an_adapter_whose_targets_changed_is_one_finding_per_cause(net):
    _adapter(net)
    net.write("models.py", MODEL.replace("nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))",
                                         "nn.Sequential(nn.Linear(d, 2 * d), nn.LayerNorm(2 * d))")
              .replace("self.embed = nn.Embedding(10, d)", "self.tokens = nn.Embedding(10, d)"))
    run = net.run("check", "net", "--against", "adapter", "--format", "json")
    found = [(f["code"], f["key"]) for f in _json(run)["findings"]]
    # a widened target in every block, a removed target: two causes, two findings (no
    # flood of missing base keys: the base model's checkpoint holds those)
    assert run.code == 1 and found == [("CKL103", "blocks.{0..2}.0.weight"),
                                       ("CKL102", "embed.weight")], found


def test_fan_in_fan_out_factors_imply_the_transposed_weight(net):
    folder = _gpt2_adapter(net)
    run = net.run("check", "net", "--against", folder, "--format", "json")
    assert (run.code, _json(run)["findings"]) == (0, []), run.out
    net.write("models.py", MODEL.replace("Conv1D(3 * d, d)", "Conv1D(2 * d, d)"))
    run = net.run("check", "net", "--against", folder, "--format", "json")
    [finding] = _json(run)["findings"]
    assert finding["key"] == "c_attn.weight" and finding["old"]["shape"] == [8, 24]


def test_update_from_an_adapter_is_refused_in_one_sentence(net):
    folder = _adapter(net)
    run = net.run("update", "net", "--from", folder)
    assert run.code == 2 and "is a PEFT adapter" in run.err
    assert len(run.err.strip().splitlines()) == 1


def test_a_non_lora_adapter_is_refused_in_one_sentence(net):
    folder = _adapter(net)
    config = net.root / folder / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "IA3"}))
    run = net.run("inspect", folder)
    assert run.code == 2 and "is a PEFT IA3 adapter; ckptlint checks LoRA adapters only" in \
        run.err
