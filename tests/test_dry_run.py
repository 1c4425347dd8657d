"""The dry run's shortcut: skipping torch's loader gives exactly its verdict, or it runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from ckptlint.build.builder import on_meta
from ckptlint.build.dryrun import dry_run_load, signature_of


class WithPreHook(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self._register_load_state_dict_pre_hook(self._rename)

    def _rename(self, state_dict, prefix, *args):
        if prefix + "old.weight" in state_dict:
            state_dict[prefix + "fc.weight"] = state_dict.pop(prefix + "old.weight")


class WithExtraState(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def get_extra_state(self):
        return {"step": 1}

    def set_extra_state(self, state):
        raise RuntimeError("extra state seen")


def _models() -> dict[str, nn.Module]:
    with on_meta():
        return {
            "plain": nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)),
            "batchnorm": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)),
            "weight_norm": nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)),
            "pre-hook": WithPreHook(),
            "extra-state": WithExtraState(),
        }


@pytest.mark.parametrize("name", sorted(_models()))
@pytest.mark.parametrize("variant", ["same", "batchnorm v1", "renamed key", "wrong shape"])
def test_the_shortcut_gives_torch_s_own_verdict(name, variant):
    model = _models()[name]
    current = signature_of(model)
    old = current
    if variant == "batchnorm v1":  # an old checkpoint without num_batches_tracked
        old = replace(current, versions={}, tensors={
            k: v for k, v in current.tensors.items() if not k.endswith("num_batches_tracked")})
    elif variant == "renamed key":
        key = next(iter(current.tensors))
        old = replace(current, tensors={("old." + key.rpartition(".")[2] if k == key else k): v
                                        for k, v in current.tensors.items()})
    elif variant == "wrong shape":
        key = next(iter(current.tensors))
        spec = current.tensors[key]
        old = replace(current, tensors={**current.tensors,
                                        key: replace(spec, shape=(spec.numel + 1,))})
    fast = dry_run_load(_models()[name], old, current)
    full = dry_run_load(_models()[name], old)
    assert fast == full


def test_the_shortcut_is_taken_only_where_nothing_can_intervene(monkeypatch):
    calls = []
    real = nn.Module.load_state_dict
    monkeypatch.setattr(nn.Module, "load_state_dict",
                        lambda self, *a, **k: calls.append(type(self).__name__) or real(self, *a, **k))
    models = _models()
    for name, model in models.items():
        dry_run_load(model, signature_of(model), signature_of(model))
    # plain modules skip torch's loader; BatchNorm's override, weight_norm's and the user's
    # hooks and extra state all run it
    assert sorted(calls) == sorted(type(m).__name__ for n, m in models.items() if n != "plain")
