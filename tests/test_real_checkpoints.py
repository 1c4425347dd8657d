"""The checkpoints people have, written by the libraries that write them, through the CLI:
torch's AveragedModel (EMA), Lightning's ModelCheckpoint, a whole model saved in bfloat16."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, d=8, classes=3, layers=3):
        super().__init__()
        self.embed = nn.Embedding(10, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for _ in range(layers))
        self.norm = nn.BatchNorm1d(d)
        self.q_proj = nn.Linear(d, d)
        self.cls = nn.Linear(d, classes)
'''
NET = 'name = "net"\ntarget = "models:Net"'


@pytest.fixture
def net_project(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    assert project.run("update").code == 0
    return project


def _net(project, **kwargs):
    spec = importlib.util.spec_from_file_location("real_ckpt_models", project.root / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net(**kwargs)


def _ema(project) -> torch.nn.Module:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = _net(project)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    ema.update_parameters(model)
    torch.save(ema.state_dict(), project.root / "ema.pt")
    return ema


def _json(run) -> dict:
    return json.loads(run.out)


def test_an_averaged_model_file_is_one_prefix_finding_with_its_fix(net_project):
    _ema(net_project)
    run = net_project.run("check", "net", "--against", "ema.pt", "--format", "json")
    [finding] = _json(run)["findings"]
    assert run.code == 1 and finding["code"] == "CKL106" and finding["key"] == "module."
    assert "n_averaged" in finding["keys"] and len(finding["keys"]) == 23
    assert "AveragedModel" in finding["message"] and "every key matches" in finding["message"]
    assert "n_averaged" in finding["help"] and "ema.module.state_dict()" in finding["help"]
    text = net_project.run("check", "net", "--against", "ema.pt").out
    assert text.startswith("net (ema.pt): 1 finding\n") and "below" not in text


def test_strip_prefix_takes_the_averaged_models_counter_too(net_project):
    _ema(net_project)
    net_project.configure(NET + '\nstrip_prefix = "module."\ncheckpoints = ["ema.pt"]')
    run = net_project.run("check", "--format", "json")
    assert (run.code, _json(run)["findings"]) == (0, []), run.out


def test_remap_of_an_averaged_model_loads_the_real_file_strictly(net_project):
    ema = _ema(net_project)
    run = net_project.run("remap", "net", "--against", "ema.pt", "--format", "json")
    doc = _json(run)
    assert run.code == 0 and doc["proved"] and doc["dropped"] == ["n_averaged"]
    namespace: dict = {}
    exec(doc["snippet"], namespace)  # the very hook a user pastes
    model = _net(net_project)
    model._register_load_state_dict_pre_hook(namespace["_remap_net_checkpoint"],
                                             with_module=True)
    model.load_state_dict(torch.load(net_project.root / "ema.pt"), strict=True)
    assert torch.equal(model.q_proj.weight, ema.module.q_proj.weight)


def test_update_from_an_averaged_model_records_the_bare_keys(net_project):
    _ema(net_project)
    run = net_project.run("update", "net", "--from", "ema.pt")
    assert "sits under `module.` (torch.optim.swa_utils.AveragedModel)" in run.out
    assert "dropped `n_averaged`" in run.out
    assert "module." not in (net_project.root / "signatures" / "net.toml").read_text()
    assert net_project.run("check").code == 0


def _lightning_checkpoint(project) -> str:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Lit(pl.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.model = net

        def training_step(self, batch, _index):
            return self.model.cls(self.model.embed(batch[0])).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(4, dtype=torch.long)), batch_size=2)
    folder = project.root / "lightning_logs"
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(folder),
                         callbacks=[ModelCheckpoint(dirpath=str(folder), save_last=True)])
    trainer.fit(Lit(_net(project)), data)
    return "lightning_logs/last.ckpt"


def test_update_from_a_lightning_checkpoint_strips_model_and_says_so(net_project):
    last = _lightning_checkpoint(net_project)
    run = net_project.run("update", "net", "--from", last)
    assert run.code == 0, run.err
    assert f"note: net: every key of {last} sits under `model.`" in run.out
    assert "recorded its keys with the prefix stripped" in run.out
    assert "the current code loads it strictly" in run.out
    signature = (net_project.root / "signatures" / "net.toml").read_text()
    assert '"q_proj.weight" = "f32[8, 8]"' in signature and '"model.' not in signature
    run = net_project.run("check", "--format", "json")
    assert (run.code, _json(run)["findings"]) == (0, [])


def test_a_whole_model_in_bfloat16_is_one_dtype_warning(net_project):
    torch.save(_net(net_project).to(torch.bfloat16).state_dict(), net_project.root / "bf16.pt")
    run = net_project.run("check", "net", "--against", "bf16.pt", "--format", "json")
    [finding] = _json(run)["findings"]
    assert run.code == 1  # a warning fails the run unless --fail-on error
    assert (finding["code"], finding["severity"], finding["key"]) == ("CKL104", "warning", "*")
    floats = [k for k, v in _net(net_project).state_dict().items() if v.is_floating_point()]
    assert sorted(finding["keys"]) == sorted(floats)  # json keeps every key
    assert "checkpoints" not in finding["help"]
    assert "is bfloat16 in the checkpoint" in finding["message"]
    assert net_project.run("check", "net", "--against", "bf16.pt", "--fail-on",
                           "error").code == 0
    markdown = net_project.run("check", "net", "--against", "bf16.pt", "--format", "markdown")
    assert "every float32 tensor of the code is bfloat16" in markdown.out
    assert "\n- *\n" not in markdown.out and "```diff" not in markdown.out


def test_one_layer_in_another_dtype_stays_per_key(net_project):
    net = _net(net_project)
    net.cls.to(torch.float16)
    torch.save(net.state_dict(), net_project.root / "half_head.pt")
    run = net_project.run("check", "net", "--against", "half_head.pt", "--format", "json")
    findings = _json(run)["findings"]
    # not folded into a whole-model change: the layer's own statement, with its two keys
    assert "*" not in {f["key"] for f in findings}
    assert sorted(k for f in findings for k in f["keys"]) == ["cls.bias", "cls.weight"]


def test_help_of_an_against_finding_never_says_stop_listing_it(net_project):
    torch.save(_net(net_project, classes=4).state_dict(), net_project.root / "wide.pt")
    run = net_project.run("check", "net", "--against", "wide.pt")
    assert run.code == 1 and "CKL103" in run.out
    assert "checkpoints" not in run.out
    net_project.configure(NET + '\ncheckpoints = ["wide.pt"]')
    assert "or stop listing it in `checkpoints`" in net_project.run("check").out
