"""The dry run's shortcut: skipping torch's loader gives exactly its verdict, or it runs."""

from __future__ import annotations

import subprocess
import sys
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


# -- the linear loader: torch's loop, each child's share found by grouping once ----------------

SEEN: list = []


class Recorded(nn.Module):
    """Every hook torch's loop can call, each noting what it saw, in order."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.slot = None
        self.inner = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
        self.register_module("empty", None)
        self.register_load_state_dict_pre_hook(self._pre)
        self.inner.register_load_state_dict_post_hook(self._post)

    def _pre(self, module, state_dict, prefix, *args):
        SEEN.append(("pre", prefix, sorted(state_dict)))
        if prefix + "legacy.weight" in state_dict:
            state_dict[prefix + "fc.weight"] = state_dict.pop(prefix + "legacy.weight")

    def _post(self, module, incompatible):
        SEEN.append(("post", list(incompatible.missing_keys), list(incompatible.unexpected_keys)))
        if "inner.1.num_batches_tracked" in incompatible.missing_keys:
            incompatible.missing_keys.remove("inner.1.num_batches_tracked")


class OwnLoad(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        SEEN.append(("own", prefix, sorted(state_dict)))
        state_dict.pop(prefix + "gone", None)
        super()._load_from_state_dict(state_dict, prefix, *args)


class Dotted(nn.Module):
    """Child names torch's setattr allows but that are not one key segment."""

    def __init__(self):
        super().__init__()
        setattr(self, "enc.proj", nn.Linear(2, 2))
        self.enc = nn.Linear(2, 2)
        self.register_module("empty", None)


def _cases() -> dict[str, nn.Module]:
    models = _models()
    with on_meta():
        models.update(recorded=Recorded(), own=nn.Sequential(OwnLoad(), OwnLoad()),
                      blocks=nn.ModuleList([nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
                                            for _ in range(4)]),
                      dotted=Dotted(),
                      norms=nn.Sequential(nn.BatchNorm1d(2), nn.ModuleDict(
                          {"a": nn.LayerNorm(2), "none": None})))
    return models


# the cases in which only torch's own code holds a share of the state dict: the linear loop
# stands in for torch's there, and must give exactly its answer
LINEAR = {"plain", "batchnorm", "weight_norm", "blocks", "dotted", "norms", "extra-state"}


def _variants(current) -> dict[str, object]:
    keys = list(current.tensors)
    spec = next(v for v in current.tensors.values() if v.dtype != "object")
    return {
        "same": current,
        "renamed": replace(current, tensors={("legacy.weight" if k == "fc.weight" else
                                              k.replace("0.", "zero.", 1)): v
                                             for k, v in current.tensors.items()}),
        "unexpected": replace(current, tensors={**current.tensors, "slot.w": spec,
                                                "empty.x.y": spec, "nowhere.z": spec,
                                                f"{keys[-1]}.deeper": spec, "0.gone": spec}),
        "missing and wrong": replace(current, versions={}, tensors={
            k: (replace(v, shape=(v.numel + 1,)) if i % 2 else v)
            for i, (k, v) in enumerate(current.tensors.items()) if i % 3}),
    }


def test_the_linear_loop_is_taken_only_where_no_user_code_holds_the_state_dict(monkeypatch):
    from ckptlint.build import dryrun

    monkeypatch.setattr(dryrun, "_QUADRATIC", 0)
    taken = {name for name, model in _cases().items()
             if dryrun.linearly_exact(model, len(signature_of(model).tensors))}
    assert taken == LINEAR


def test_a_hook_keeping_a_parent_s_dict_gets_torch_s_own_loop(monkeypatch):
    """A pre-hook keeps the root's share; a post-hook of an earlier child removes a key from
    it: torch then misses the later child's key. Grouping the shares once would not."""
    from ckptlint.build import dryrun

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))
            self.head = nn.Linear(2, 2)
            self.kept = {}
            self.register_load_state_dict_pre_hook(lambda m, sd, *a: self.kept.update(sd=sd))
            self.encoder.register_load_state_dict_post_hook(self._take)

        def _take(self, module, incompatible):
            self.kept["sd"].pop("head.weight", None)

    monkeypatch.setattr(dryrun, "_QUADRATIC", 0)
    with on_meta():
        model = Net()
    report = dry_run_load(model, signature_of(model))
    assert report.missing == ("head.weight",)


def test_a_load_state_dict_of_the_instance_or_patched_into_torch_is_honoured(monkeypatch):
    from ckptlint.build import dryrun

    monkeypatch.setattr(dryrun, "_QUADRATIC", 0)
    with on_meta():
        model = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert dryrun.linearly_exact(model, 6)
    model.load_state_dict = lambda *a, **k: None
    assert not dryrun.linearly_exact(model, 6)
    del model.load_state_dict
    real = nn.Module.load_state_dict
    monkeypatch.setattr(nn.Module, "load_state_dict",
                        lambda self, *a, **k: real(self, *a, **k))
    assert not dryrun.linearly_exact(model, 6)


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_the_linear_loader_gives_torch_s_verdict_and_calls_the_same_hooks(name, monkeypatch):
    from ckptlint.build import dryrun

    current = signature_of(_cases()[name])
    reports = {}
    for variant, old in _variants(current).items():
        runs = []
        for limit in (10 ** 12, 0):  # torch's own method, then the linear loop
            monkeypatch.setattr(dryrun, "_QUADRATIC", limit)
            model = _cases()[name]
            assert dryrun.linearly_exact(model, len(old.tensors)) == (limit == 0)
            SEEN.clear()
            report = dry_run_load(model, old)
            runs.append((report, list(SEEN)))
        assert runs[0] == runs[1], (name, variant)
        reports[variant] = runs[0][0]
    assert reports["same"] not in (reports["missing and wrong"], reports["unexpected"])


def test_the_linear_loader_is_used_only_for_big_models_that_keep_torch_s_method(monkeypatch):
    from ckptlint.build import dryrun

    used = []
    monkeypatch.setattr(dryrun, "_load_linearly", lambda model, state: used.append(model))

    class OwnMethod(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(1, 1) for _ in range(40)])

        def load_state_dict(self, state, *args, **kwargs):
            return super().load_state_dict(state, *args, **kwargs)

    with on_meta():
        small = nn.Linear(2, 2)
        big = nn.ModuleList([nn.Linear(1, 1) for _ in range(40)])
        own = OwnMethod()
    monkeypatch.setattr(dryrun, "_QUADRATIC", 1000)  # 80 keys x 41 modules is past it
    for model in (small, big, own):
        dryrun.load_state_dict(model, dryrun.meta_state_dict(signature_of(model)))
    assert used == [big]


def test_a_version_that_is_not_an_integer_is_refused_in_one_sentence(project):
    project.write("m.py", "from torch import nn\n\n\nclass Odd(nn.Linear):\n    _version = 3.0\n\n\n"
                          "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                          "        self.b = Odd(2, 2)\n")
    project.configure('name = "m"\ntarget = "m:M"')
    run = project.run("update")
    assert run.code == 2 and "Traceback" not in run.err
    assert "module `b` has `_version = 3.0`; a signature records only integer versions" in run.out
    assert not (project.root / "signatures" / "m.toml").exists()


def test_a_dotted_child_name_is_left_to_torch_s_loader(project):
    """`enc.proj` next to `enc`: torch's loader hands `enc.proj.*` to `enc` too, so even the
    model's own state dict does not load strictly. The keys match the signature; only the
    dry run can tell, so the shortcut must not skip it."""
    project.write("m.py", "from torch import nn\n\n\nclass M(nn.Module):\n"
                          "    def __init__(self):\n        super().__init__()\n"
                          "        self.enc = nn.Linear(2, 2)\n"
                          "        setattr(self, 'enc.proj', nn.Linear(2, 2))\n")
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    run = project.run("check", "--no-cache")
    assert run.code == 1, run.out + run.err
    assert "enc.proj" in run.out


_EXTRA = """\
import torch
from torch import nn


class Quantized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
{methods}

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = Quantized()
"""
_GET_SET = """
    def get_extra_state(self):
        return {"scale": 0.5}

    def set_extra_state(self, state):
        if not isinstance(state, dict):  # as real modules do: it must be what get wrote
            raise TypeError(f"extra state must be a dict, not {type(state).__name__}")
        self.scale = state["scale"]
"""


def test_a_module_s_extra_state_is_present_in_its_signature_s_dry_run(project):
    """A signature records `q._extra_state` as an object, without its value: the dry run
    hands torch a stand-in for it (not skipping the key, which said 'missing' for a model
    that just wrote its signature) and does not call the module's `set_extra_state` on it."""
    project.write("m.py", _EXTRA.format(methods=_GET_SET))
    project.configure('name = "m"\ntarget = "m:M"')
    assert project.run("update").code == 0
    assert '"q._extra_state" = "object[]"' in (project.root / "signatures/m.toml").read_text()
    run = project.run("check", "--no-cache")
    assert run.code == 0, run.out + run.err

    # a checkpoint torch wrote loads; one saved without the entry does not load strictly
    subprocess.run([sys.executable, "-c", "import torch, m; model = m.M(); "
                    "torch.save(model.state_dict(), 'with.pt'); state = model.state_dict(); "
                    "del state['q._extra_state']; torch.save(state, 'without.pt')"],
                   cwd=project.root, check=True)
    assert project.run("check", "--against", "with.pt", "m").code == 0
    run = project.run("check", "--against", "without.pt", "m")
    assert run.code == 1 and "CKL101" in run.out and "`q._extra_state`" in run.out

    # code that stopped loading extra state: the committed entry is now unexpected
    project.write("m.py", _EXTRA.format(methods=""))
    run = project.run("check", "--no-cache")
    assert run.code == 1 and "`q._extra_state`" in run.out, run.out


def test_the_extra_state_stand_in_never_reaches_the_module_and_is_taken_back():
    from ckptlint.build.dryrun import meta_state_dict

    namespace: dict = {}
    exec(_EXTRA.format(methods=_GET_SET), namespace)
    model = namespace["M"]()
    report = dry_run_load(model, signature_of(model))
    assert report == type(report)(), report
    assert "set_extra_state" not in vars(model.q) and not hasattr(model.q, "scale")
    state = meta_state_dict(signature_of(model))
    with pytest.raises(TypeError, match="extra state must be a dict"):  # torch's loader calls it
        model.load_state_dict(state, assign=True)
