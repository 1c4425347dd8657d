"""`ckptlint convert`: real old files become safetensors files the new code loads strictly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from oldfiles import NET, NEW, OLD, SAVES, expected, load_module, module, saved
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model

import ckptlint
from ckptlint.core.keys import natural_sorted


def _setup(project, source: str = NEW, entry: str = NET) -> None:
    project.write("models.py", source)
    project.configure(entry)


def _files(root: Path) -> list[str]:
    """Every file under `root`; the scratch folder's own .gitignore (made once, like the
    cache's) aside: a temp file left in it would show."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.relative_to(root).as_posix() != ".ckptlint_cache/tmp/.gitignore")


def _loads_strictly(project, out: Path, want: dict, cls: str = "Net", **kwargs) -> None:
    """`load_state_dict(load_file(OUT), strict=True)` on CPU, every tensor equal."""
    model = getattr(load_module(project.root / "models.py"), cls)(**kwargs)
    model.load_state_dict(load_file(out), strict=True)
    loaded = model.state_dict()
    assert set(loaded) == set(want)
    for key, value in want.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("how", list(SAVES))
def test_each_wrapped_file_converts_and_loads_strictly(project, how):
    _setup(project)
    state = saved(project, how)
    run = project.run("convert", "ckpt.pt", "out.safetensors")
    assert run.code == 0, run.out + run.err
    assert run.out.startswith("wrote out.safetensors: 32 tensors, ")
    assert "`ckptlint check net --against` it: loads strictly" in run.out
    _loads_strictly(project, project.root / "out.safetensors", expected(state, how))
    check = project.run("check", "net", "--against", "out.safetensors", "--format", "json")
    assert (check.code, json.loads(check.out)["findings"]) == (0, [])


def test_metadata_records_source_digest_and_mapping(project):
    _setup(project)
    saved(project, "data-parallel")
    assert project.run("convert", "ckpt.pt", "out.safetensors").code == 0
    with safe_open(str(project.root / "out.safetensors"), "pt") as f:
        meta = f.metadata()
    digest = hashlib.sha256((project.root / "ckpt.pt").read_bytes()).hexdigest()
    assert (meta["ckptlint.source"], meta["ckptlint.source_sha256"]) == ("ckpt.pt", digest)
    assert meta["format"] == "pt" and meta["ckptlint.model"] == "net"
    mapping = json.loads(meta["ckptlint.mapping"])
    assert mapping["module.fc.weight"] == "head.weight"
    assert mapping["module.blocks.3.norm.bias"] == "blocks.3.0.norm.bias"
    assert list(mapping) == natural_sorted(mapping)


def test_the_ema_counter_is_dropped_and_said(project):
    _setup(project)
    saved(project, "ema")
    run = project.run("convert", "ckpt.pt", "out.safetensors")
    assert run.code == 0 and "1 dropped (n_averaged)" in run.out, run.out + run.err
    with safe_open(str(project.root / "out.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["ckptlint.dropped"]) == ["n_averaged"]


TIED = '''
from torch import nn


class LM(nn.Module):
    def __init__(self, vocab=16, d=8):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.body = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.tok.weight
'''


def test_a_tie_stored_once_is_written_as_two_equal_tensors(project):
    # safetensors' save_model keeps one of two tied tensors; the refactor renamed `body`
    old = module(TIED)["LM"]()
    save_model(old, str(project.root / "lm.safetensors"))
    kept = set(load_file(project.root / "lm.safetensors"))
    assert len({"lm_head.weight", "tok.weight"} & kept) == 1
    _setup(project, TIED.replace("self.body", "self.mid"), 'name = "lm"\ntarget = "models:LM"')
    run = project.run("convert", "lm.safetensors", "out.safetensors")
    assert run.code == 0 and "1 tied keys written as copies" in run.out, run.out + run.err
    state = old.state_dict()
    want = {k.replace("body.", "mid."): v for k, v in state.items()}
    _loads_strictly(project, project.root / "out.safetensors", want, cls="LM")
    out = load_file(project.root / "out.safetensors")
    assert torch.equal(out["lm_head.weight"], out["tok.weight"])


@pytest.mark.parametrize("fmt", ["legacy", "safetensors", "sharded", "nested", "folder"])
def test_every_format_the_readers_read(project, fmt):
    _setup(project)
    torch.manual_seed(1)
    state = module(OLD)["Net"]().state_dict()
    root = project.root
    if fmt == "legacy":
        torch.save(state, root / "old.pt", _use_new_zipfile_serialization=False)
        name = "old.pt"
    elif fmt == "safetensors":
        save_file(state, str(root / "old.safetensors"))
        name = "old.safetensors"
    elif fmt == "sharded":  # two shards and the index Hugging Face writes for them
        keys = list(state)
        shards = {"model-1.safetensors": keys[:10], "model-2.safetensors": keys[10:]}
        for shard, names in shards.items():
            save_file({k: state[k] for k in names}, str(root / shard))
        (root / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {k: s for s, names in shards.items() for k in names}}))
        name = "model.safetensors.index.json"
    elif fmt == "nested":
        torch.save({"epoch": 3, "model": state, "optimizer": {"lr": 0.1}}, root / "old.pt")
        name = "old.pt"
    else:  # a folder as save_pretrained leaves it
        (root / "release").mkdir()
        save_file(state, str(root / "release" / "model.safetensors"))
        name = "release"
    run = project.run("convert", name, "out.safetensors")
    assert run.code == 0, run.out + run.err
    _loads_strictly(project, root / "out.safetensors", expected(state, "plain"))
    if fmt == "folder":
        with safe_open(str(root / "out.safetensors"), "pt") as f:
            assert f.metadata()["ckptlint.source_sha256"] == hashlib.sha256(
                (root / "release" / "model.safetensors").read_bytes()).hexdigest()


def test_a_strided_view_converts_to_its_values(project):
    project.write("models.py", "from torch import nn\n\n\nclass Pair(nn.Module):\n"
                               "    def __init__(self):\n        super().__init__()\n"
                               "        self.a = nn.Linear(3, 4, bias=False)\n"
                               "        self.b = nn.Linear(4, 3, bias=False)\n")
    project.configure('name = "pair"\ntarget = "models:Pair"')
    base = torch.randn(4, 3)
    torch.save({"a.weight": base, "b.weight": base.t()}, project.root / "old.pt")  # one storage
    assert project.run("convert", "old.pt", "out.safetensors").code == 0
    out = load_file(project.root / "out.safetensors")
    assert torch.equal(out["a.weight"], base) and torch.equal(out["b.weight"], base.t())


def test_what_no_remap_explains_writes_nothing(project):
    extra = "self.head = nn.Linear(d, 5)\n        self.extra = nn.Linear(d, d)"
    _setup(project, NEW.replace("self.head = nn.Linear(d, 5)", extra))
    saved(project, "plain")
    before = _files(project.root)
    run = project.run("convert", "ckpt.pt", "out.safetensors")
    assert run.code == 1
    assert "does not load into `net` even with the keys ckptlint can remap, so nothing was " \
           "written:\n  missing: `extra.bias`, `extra.weight`" in run.out, run.out
    assert _files(project.root) == before


VERSIONED = '''
import torch
from torch import nn


class Scale(nn.Module):
    _version = 2

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version", 1) < 2:  # before version 2 it was called `w`
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "w")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = Scale()
        self.fc = nn.Linear(3, 3)
'''


def test_a_file_check_would_not_load_is_not_kept(project):
    """The remap proves on the old file's metadata; safetensors keeps no `_version`, so this
    module's upgrade hook takes the file for an old one and fails: OUT is refused."""
    _setup(project, VERSIONED.replace("self.fc =", "self.head ="))
    torch.save(module(VERSIONED)["Net"]().state_dict(), project.root / "old.pt")
    before = _files(project.root)
    run = project.run("convert", "old.pt", "out.safetensors")
    assert run.code == 1, run.out + run.err
    assert run.out.startswith("ckptlint convert: out.safetensors: not written: `ckptlint check "
                              "net --against` it says it needs a real load to tell"), run.out
    assert _files(project.root) == before
    # the refusal is right: the converted file does not load into the model for real
    model = module(VERSIONED.replace("self.fc =", "self.head ="))["Net"]()
    state = {k.replace("fc.", "head."): v for k, v in model.state_dict().items()}
    with pytest.raises(KeyError):
        model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)


def test_out_outside_the_project_is_written_there_and_nothing_else(project, tmp_path_factory):
    _setup(project)
    state = saved(project, "torch-compile")
    elsewhere = tmp_path_factory.mktemp("release")
    out = elsewhere / "net.safetensors"
    assert project.run("convert", "ckpt.pt", str(out)).code == 0
    assert _files(elsewhere) == ["net.safetensors"]  # no temp file left beside it
    assert not (project.root / ".ckptlint_cache" / "tmp").exists() or _files(
        project.root / ".ckptlint_cache" / "tmp") == [".gitignore"]
    _loads_strictly(project, out, expected(state, "torch-compile"))


@pytest.mark.parametrize("argv, message", [
    (("convert", "ckpt.pt", "out.pt"), "out.pt: convert writes safetensors"),
    (("convert", "ckpt.pt", "ckpt.safetensors", "--model", "nope"), "no model named `nope`"),
    (("convert", "missing.pt", "out.safetensors"), "missing.pt: does not exist"),
    (("convert", "signatures", "out.safetensors"), "holds no checkpoint ckptlint recognises"),
    (("convert", "signatures/net.toml", "out.safetensors"), "holds no tensor data"),
])
def test_usage_errors_are_one_sentence(project, argv, message):
    _setup(project)
    saved(project, "plain")
    (project.root / "signatures").mkdir()
    if "signatures/net.toml" in argv:
        assert project.run("update").code == 0
    run = project.run(*argv)
    assert run.code == 2 and message in run.err and run.err.count("\n") == 1, run.err
    assert not (project.root / "out.safetensors").exists()


def test_several_models_need_one_named(project):
    project.write("models.py", NEW)
    project.configure(NET, 'name = "other"\ntarget = "models:Block"\nkwargs = { d = 4 }')
    saved(project, "plain")
    run = project.run("convert", "ckpt.pt", "out.safetensors")
    assert run.code == 2 and "name the model whose keys ckpt.pt should get with --model" in run.err
    assert project.run("convert", "ckpt.pt", "out.safetensors", "--model", "net").code == 0


def test_a_dcp_folder_converts(project):
    import torch.distributed.checkpoint as dcp

    _setup(project)
    torch.manual_seed(2)
    state = module(OLD)["Net"]().state_dict()
    dcp.save({"model": state, "step": 7}, checkpoint_id=str(project.root / "dcp"))
    run = project.run("convert", "dcp", "out.safetensors")
    assert run.code == 0, run.out + run.err
    _loads_strictly(project, project.root / "out.safetensors", expected(state, "plain"))
    with safe_open(str(project.root / "out.safetensors"), "pt") as f:
        digests = json.loads(f.metadata()["ckptlint.source_sha256"])
    assert sorted(Path(k).name for k in digests) == [".metadata", "__0_0.distcp"]


def test_a_peft_adapter_is_said_to_need_merging(project):
    from peft import LoraConfig, get_peft_model

    _setup(project, OLD)
    model = get_peft_model(module(OLD)["Net"](), LoraConfig(target_modules=["embed"], r=2))
    model.save_pretrained(project.root / "adapter")
    run = project.run("convert", "adapter", "out.safetensors")
    assert run.code == 1 and "holds PEFT adapter weights" in run.out, run.out + run.err
    with pytest.raises(ckptlint.CkptlintError, match="is a PEFT adapter: its weights are added"):
        ckptlint.convert(module(OLD)["Net"], project.root / "adapter",
                         project.root / "out.safetensors")
    assert not (project.root / "out.safetensors").exists()


# -- the pytest API -------------------------------------------------------------------------------

def test_api_convert(project):
    _setup(project)
    state = saved(project, "lightning")
    net = load_module(project.root / "models.py", "api_models").Net
    done = ckptlint.convert(net, project.root / "ckpt.pt", project.root / "out.safetensors")
    assert (done.tensors, done.mapping["model.fc.bias"]) == (32, "head.bias")
    _loads_strictly(project, project.root / "out.safetensors", expected(state, "lightning"))


def test_api_convert_refuses_what_does_not_load(project):
    _setup(project)
    saved(project, "plain")
    net = load_module(project.root / "models.py", "api_models").Net
    with pytest.raises(ckptlint.CkptlintError, match="not written: even remapped, it does not "
                                                     "load: missing: .*size mismatch: `embed"):
        ckptlint.convert(net, project.root / "ckpt.pt", project.root / "out.safetensors", d=4)
    assert not (project.root / "out.safetensors").exists()
