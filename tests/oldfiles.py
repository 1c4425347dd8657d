"""Real checkpoint files of an old model, saved the ways training code saves them.

`OLD` is the model before a refactor, `NEW` after it (`fc` renamed `head`, each block wrapped
in nn.Sequential). Each entry of `SAVES` writes a real file of OLD's weights: plain,
through DataParallel, torch.compile, a Lightning Trainer, torch's own EMA wrapper.
"""

from __future__ import annotations

import importlib.util
import re
import sys

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


def module(source: str) -> dict:
    namespace: dict = {}
    exec(compile(source, "models.py", "exec"), namespace)
    return namespace


def load_module(path, name: str = "applied_models"):
    """The edited module, imported afresh from its file."""
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # the dataclass and pickling machinery look modules up
    try:
        spec.loader.exec_module(loaded)
    finally:
        del sys.modules[name]
    return loaded


def renamed(key: str) -> str:
    """Where an old key of OLD's Net lives in NEW's."""
    key = re.sub(r"^blocks\.(\d+)\.", r"blocks.\1.0.", key)
    return re.sub(r"^fc\.", "head.", key)


class _Lit:
    """A LightningModule around the old Net, trained one step and saved by a real Trainer."""

    @staticmethod
    def save(model, path) -> None:
        import lightning as L

        class Lit(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.model = model

            def training_step(self, batch, _index):
                return sum(p.sum() for p in self.model.parameters()) * batch[0].sum()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu", devices=1)
        data = torch.utils.data.TensorDataset(torch.ones(2, 1))
        trainer.fit(Lit(), torch.utils.data.DataLoader(data, batch_size=2))
        trainer.save_checkpoint(path)


def averaged(model):
    """torch's own EMA wrapper, updated twice, as its state_dict() saves it."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ema.update_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    return ema


# how each file was saved, and how its keys name the old Net's (None: the tensor is dropped)
SAVES = {
    "plain": (lambda m, path: torch.save(m.state_dict(), path), lambda k: k),
    "data-parallel": (lambda m, path: torch.save(torch.nn.DataParallel(m).state_dict(), path),
                      lambda k: k.removeprefix("module.")),
    "torch-compile": (lambda m, path: torch.save(torch.compile(m).state_dict(), path),
                      lambda k: k.removeprefix("_orig_mod.")),
    "lightning": (_Lit.save, lambda k: k.removeprefix("model.")),
    "ema": (lambda m, path: torch.save(averaged(m).state_dict(), path),
            lambda k: None if k == "n_averaged" else k.removeprefix("module.")),
}


def saved(project, how: str, name: str = "ckpt.pt") -> dict:
    """A real file of the old code saved the `how` way; its state dict as torch loads it."""
    torch.manual_seed(0)
    model = module(OLD)["Net"]()
    model.bn.running_mean.uniform_()
    SAVES[how][0](model, project.root / name)
    loaded = torch.load(project.root / name, weights_only=True)
    return loaded.get("state_dict", loaded)




def expected(state: dict, how: str) -> dict:
    """The state dict NEW's Net holds after loading `state` (saved the `how` way)."""
    unwrap = SAVES[how][1]
    return {renamed(unwrap(k)): v for k, v in state.items() if unwrap(k) is not None}
