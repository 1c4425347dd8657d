"""Pointing at the cause, end to end on real model code.

Real modeling files of transformers, diffusers and x-transformers are copied into a project
(as the installed packages hold them), a signature is recorded, the file is edited the way real
commits edit them, and `check` must point at the line the edit touched: a vanished layer at the
statement that still names it or where git shows it was deleted, an added layer at the added
statement, a tied key at the tensor it shares, and findings one edit explains as one finding
(one GitHub annotation) at the edited line. Git-backed cases run in temporary repositories.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
x_transformers = pytest.importorskip("x_transformers")

HF = Path(transformers.__file__).parent / "models"
VAE = Path(diffusers.__file__).parent / "models" / "autoencoders" / "autoencoder_kl.py"
XT = Path(x_transformers.__file__).parent / "x_transformers.py"
TINY = "hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37"
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


# -- helpers ---------------------------------------------------------------------------------

def git(project, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project.root, env=ENV, capture_output=True, check=True)


def commit(project) -> None:
    """Commit the project as it is: code and signature together, as `update` leaves them."""
    project.write(".gitignore", "__pycache__/\n.ckptlint_cache/\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "model and signature")


def edit(project, path: str, old: str, new: str, count: int = 1) -> str:
    file = project.root / path
    text = file.read_text()
    assert old in text, old
    file.write_text(text.replace(old, new, count))
    return file.read_text()


def line_of(text: str, needle: str, nth: int = 0) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) > nth, needle
    return lines[nth]


def explained(findings: list) -> list:
    return [m for f in findings for m in (f.get("members") or [f])]


def check_json(project) -> list[dict]:
    run = project.run("check", "--format", "json")
    assert run.code == 1, run.out + run.err
    return json.loads(run.out)["findings"]


def annotations(project) -> list[tuple[str, dict[str, str], str]]:
    """`check --format github` as (level, properties, message) per workflow command."""
    run = project.run("check", "--format", "github")
    assert run.code == 1, run.out + run.err
    found = []
    for line in run.out.splitlines():
        match = re.match(r"^::(\w+) ([^:]*)::(.*)$", line)
        assert match, line
        props = dict(p.split("=", 1) for p in match.group(2).split(","))
        found.append((match.group(1), props, match.group(3).replace("%0A", "\n")))
    return found


def one_annotation_on(project, file: str, line: int) -> str:
    """Exactly one annotation, and its span holds `line` of `file`; returns its message."""
    (level, props, message), = annotations(project)
    assert props["file"] == file, props
    assert int(props["line"]) <= line <= int(props.get("endLine", props["line"])), (props, line)
    return message


def absolute_imports(text: str, package: str, name: str) -> str:
    text = re.sub(r"^(\s*)from \.\.\. import ", r"\1from transformers import ", text, flags=re.M)
    text = re.sub(r"^(\s*)from \.\.\.(\w)", r"\1from transformers.\2", text, flags=re.M)
    text = re.sub(r"^(\s*)from \.\.(\w)", r"\1from transformers.models.\2", text, flags=re.M)
    return re.sub(r"^(\s*)from \.(\w)", rf"\1from {package}.{name}.\2", text, flags=re.M)


def hf_project(project, name: str, imports: str, call: str, factory_args: str = "") -> str:
    """transformers' modeling_NAME.py copied to hf/, built by factory.py; returns its path."""
    source = absolute_imports((HF / name / f"modeling_{name}.py").read_text(),
                              "transformers.models", name)
    project.write("hf/__init__.py", "")
    (project.root / "hf" / f"modeling_{name}.py").write_text(source)
    project.write("factory.py", f"{imports}\n\n\ndef build({factory_args}):\n    return {call}\n")
    project.configure(f'name = "{name}"\ntarget = "factory:build"')
    assert project.run("update").code == 0
    return f"hf/modeling_{name}.py"


def vae_project(project) -> str:
    source = VAE.read_text()
    source = re.sub(r"^(\s*)from \.\.\.(\w)", r"\1from diffusers.\2", source, flags=re.M)
    source = re.sub(r"^(\s*)from \.\.(\w)", r"\1from diffusers.models.\2", source, flags=re.M)
    source = re.sub(r"^(\s*)from \.(\w)", r"\1from diffusers.models.autoencoders.\2", source,
                    flags=re.M)
    project.write("vae/__init__.py", "")
    (project.root / "vae" / "autoencoder_kl.py").write_text(source)
    project.write("factory.py", "from vae.autoencoder_kl import AutoencoderKL\n\n\n"
                                "def build():\n    return AutoencoderKL(block_out_channels=(8,), "
                                "layers_per_block=1, latent_channels=4, norm_num_groups=4)\n")
    project.configure('name = "vae"\ntarget = "factory:build"')
    assert project.run("update").code == 0
    return "vae/autoencoder_kl.py"


def xt_project(project) -> str:
    project.write("xt/__init__.py", "")
    (project.root / "xt" / "x_transformers.py").write_text(XT.read_text())
    project.write("factory.py", "from xt.x_transformers import TransformerWrapper, Decoder\n\n\n"
                                "def build():\n    return TransformerWrapper(num_tokens=20, "
                                "max_seq_len=16, attn_layers=Decoder(dim=16, depth=2, heads=2))\n")
    project.configure('name = "xt"\ntarget = "factory:build"')
    assert project.run("update").code == 0
    return "xt/x_transformers.py"


# a nanoGPT-style model (GPTConfig dataclass, LayerNorm with an optional bias, tied lm_head),
# written here the way nanoGPT's model.py reads, for replaying its history's kinds of commits
NANOGPT = '''
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.register_buffer("mask", torch.tril(torch.ones(config.block_size, config.block_size)))
        self.n_embd = config.n_embd

    def forward(self, x):
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        return self.c_proj(v)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


@dataclass
class GPTConfig:
    block_size: int = 16
    vocab_size: int = 96
    n_layer: int = 3
    n_embd: int = 16
    bias: bool = True


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte = nn.Embedding(config.vocab_size, config.n_embd),
            wpe = nn.Embedding(config.block_size, config.n_embd),
            h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f = LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx):
        x = self.transformer.wte(idx)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))
'''


def nanogpt(project, source: str = NANOGPT, git_history: bool = True) -> None:
    project.write("model.py", source)
    project.configure('name = "gpt"\ntarget = "model:GPT"\n'
                      'kwargs = { config = { _target_ = "model:GPTConfig" } }')
    assert project.run("update").code == 0
    if git_history:
        commit(project)


# -- 1. where a vanished key points ----------------------------------------------------------

def test_bert_pooler_set_to_none_points_at_the_statement_naming_the_slot(project):
    path = hf_project(project, "bert", "from transformers import BertConfig\nfrom hf.modeling_bert"
                      " import BertModel", f"BertModel(BertConfig({TINY}, vocab_size=99))")
    text = edit(project, path, "BertPooler(config) if add_pooling_layer else None",
                "BertPooler(config) if not add_pooling_layer else None")
    finding, = check_json(project)
    assert finding["key"] == "pooler.*" and finding["kind"] == "unexpected-key"
    assert (finding["file"], finding["line"]) == (path, line_of(text, "self.pooler = "))
    run = project.run("check")
    assert "= note: `pooler` is None now" in run.out


def test_vae_layer_deleted_since_the_signature_points_where_git_shows_the_gap(project):
    path = vae_project(project)
    commit(project)
    line = "        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) " \
           "if use_post_quant_conv else None\n"
    before = (project.root / path).read_text()
    text = edit(project, path, line, "")
    # the first statement after the gap, in the same __init__
    gap = line_of(text, "self.use_slicing = False")
    assert gap == line_of(before, "self.post_quant_conv = nn.Conv2d") + 1
    finding, = check_json(project)
    assert (finding["key"], finding["file"], finding["line"]) == ("post_quant_conv.*", path, gap)
    message = one_annotation_on(project, path, gap)
    assert "post_quant_conv" in message
    note = project.run("check").out
    assert "removed here since signatures/vae.toml was committed" in note
    assert "`self.post_quant_conv = nn.Conv2d(" in note


def test_vae_layer_deleted_without_history_points_at_the_model_init(project):
    path = vae_project(project)
    text = edit(project, path, "        self.post_quant_conv = nn.Conv2d(latent_channels, "
                "latent_channels, 1) if use_post_quant_conv else None\n", "")
    finding, = check_json(project)
    init = line_of(text, "def __init__(", nth=0)
    assert text.splitlines()[init - 1].strip() == "def __init__("
    assert (finding["file"], finding["line"]) == (path, init)
    assert finding["end_line"] > init  # the whole `def __init__(...)` header


def test_removed_buffer_points_where_it_was_registered(project):
    nanogpt(project)
    before = (project.root / "model.py").read_text()
    text = edit(project, "model.py", '        self.register_buffer("mask", torch.tril(torch.ones('
                'config.block_size, config.block_size)))\n', "")
    gap = line_of(before, 'register_buffer("mask"')
    assert text.splitlines()[gap - 1].strip() == "self.n_embd = config.n_embd"
    finding, = check_json(project)
    assert finding["key"] == "transformer.h.{0..2}.attn.mask"
    assert (finding["file"], finding["line"]) == ("model.py", gap)
    one_annotation_on(project, "model.py", gap)


# -- 2. where other keys point -------------------------------------------------------------

def test_gpt2_submodule_added_to_every_block_points_at_the_added_line(project):
    path = hf_project(project, "gpt2", "from transformers import GPT2Config\nfrom hf.modeling_gpt2"
                      " import GPT2Model", "GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, "
                      "n_positions=64, vocab_size=99, bos_token_id=0, eos_token_id=0))")
    commit(project)
    text = edit(project, path, "        self.mlp = GPT2MLP(inner_dim, config)\n",
                "        self.mlp = GPT2MLP(inner_dim, config)\n        self.adapter = nn."
                "Sequential(nn.Linear(hidden_size, 8), nn.GELU(), nn.Linear(8, hidden_size))\n")
    added = line_of(text, "self.adapter = ")
    finding, = check_json(project)
    assert (finding["key"], finding["line"]) == ("h.{0..1}.adapter.*", added)
    one_annotation_on(project, path, added)


def test_llama_leaf_layer_added_points_at_the_added_statement_not_the_norm_class(project):
    path = hf_project(project, "llama", "from transformers import LlamaConfig\nfrom hf.modeling_"
                      "llama import LlamaModel", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                      " num_key_value_heads=2))")
    old = "        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)\n"
    text = edit(project, path, old, old + "        self.embed_norm = LlamaRMSNorm(config.hidden_"
                "size, eps=config.rms_norm_eps)\n")
    finding, = check_json(project)
    assert finding["key"] == "embed_norm.weight"
    assert (finding["file"], finding["line"]) == (path, line_of(text, "self.embed_norm = "))


def test_t5_tied_embeddings_point_at_the_statement_creating_the_shared_tensor(project):
    path = hf_project(project, "t5", "from transformers import T5Config\nfrom hf.modeling_t5 "
                      "import T5ForConditionalGeneration", "T5ForConditionalGeneration(T5Config("
                      "vocab_size=99, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))")
    text = edit(project, path, "self.shared = nn.Embedding(config.vocab_size, config.d_model)",
                "self.shared = nn.Embedding(config.vocab_size + 1, config.d_model)", count=9)
    shared = line_of(text, "self.shared = nn.Embedding", nth=1)  # T5ForConditionalGeneration
    assert line_of(text, "class T5ForConditionalGeneration") < shared
    finding, = check_json(project)  # one statement, one finding
    assert set(finding["keys"]) == {"shared.weight", "encoder.embed_tokens.weight",
                                    "decoder.embed_tokens.weight", "lm_head.weight"}
    assert {k: v["line"] for k, v in finding["locations"].items()} == dict.fromkeys(
        finding["keys"], shared)
    assert finding["line"] == shared


def test_bert_tied_decoder_points_at_the_embedding_and_the_bias_parameter(project):
    path = hf_project(project, "bert", "from transformers import BertConfig\nfrom hf.modeling_bert"
                      " import BertForMaskedLM", f"BertForMaskedLM(BertConfig({TINY}, "
                      "vocab_size=vocab))", factory_args="vocab=99")
    edit(project, "factory.py", "def build(vocab=99)", "def build(vocab=98)")
    text = (project.root / path).read_text()
    where = {f["key"]: f["line"] for f in explained(check_json(project))}
    embeddings = line_of(text, "self.word_embeddings = nn.Embedding(")
    bias = line_of(text, "self.bias = nn.Parameter(torch.zeros(config.vocab_size))")
    assert where == {"bert.embeddings.word_embeddings.weight": embeddings,
                     "cls.predictions.decoder.weight": embeddings,
                     "cls.predictions.bias": bias, "cls.predictions.decoder.bias": bias}
    assert "post_init" not in text.splitlines()[embeddings - 1]


def test_a_newly_added_tie_points_at_the_tie_statement(project):
    nanogpt(project, NANOGPT.replace("        self.transformer.wte.weight = self.lm_head.weight\n",
                                     ""))
    text = edit(project, "model.py", "bias=False)\n\n    def forward",
                "bias=False)\n        self.lm_head.weight = self.transformer.wte.weight  # tie\n"
                "\n    def forward")
    finding, = check_json(project)
    assert finding["kind"] == "tie-changed"
    assert finding["line"] == line_of(text, "self.lm_head.weight = self.transformer.wte.weight")


# -- 3. one finding per cause --------------------------------------------------------------

def test_dataclass_default_bias_false_is_one_annotation_on_that_line(project):
    nanogpt(project)
    text = edit(project, "model.py", "    bias: bool = True\n", "    bias: bool = False\n")
    changed = line_of(text, "bias: bool = False")
    finding, = check_json(project)
    assert (finding["file"], finding["line"]) == ("model.py", changed)
    keys = set(finding["keys"])
    assert {"transformer.ln_f.bias", "transformer.h.0.attn.c_attn.bias",
            "transformer.h.2.ln_2.bias"} <= keys and len(keys) == 19
    # every key keeps the statement creating it (the LayerNorm's, each Linear's)
    assert finding["locations"]["transformer.ln_f.bias"]["line"] == \
        line_of(text, "self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None")
    assert finding["locations"]["transformer.h.0.attn.c_attn.bias"]["line"] == \
        line_of(text, "self.c_attn = nn.Linear(")
    message = one_annotation_on(project, "model.py", changed)
    assert "19 tensors" in message and "`transformer.ln_f.bias`" in message


def test_vocab_default_of_tied_embeddings_is_one_annotation(project):
    nanogpt(project)
    text = edit(project, "model.py", "    vocab_size: int = 96\n",
                "    vocab_size: int = 128  # padded to a multiple of 64\n")
    message = one_annotation_on(project, "model.py", line_of(text, "vocab_size: int = 128"))
    assert "`lm_head.weight` f32[96, 16] → f32[128, 16]" in message
    assert "`transformer.wte.weight`" in message


def test_x_transformers_feedforward_mult_default_is_one_annotation(project):
    path = xt_project(project)
    commit(project)
    text = edit(project, path, "        mult = 4,\n        glu = False,",
                "        mult = 2,\n        glu = False,")
    changed = line_of(text, "        mult = 2,")
    message = one_annotation_on(project, path, changed)
    assert "6 tensors" in message and message.count("CKL103") == 6
    finding, = check_json(project)  # the changed line of its `def __init__(` header
    assert (finding["line"], finding["end_line"]) == (changed, changed)


def test_mingpt_preset_change_is_one_annotation_covering_the_changed_line(project):
    source = NANOGPT.replace('''        super().__init__()
        self.transformer = nn.ModuleDict(dict(''', '''        super().__init__()
        config.__dict__.update({
            'gpt-nano': dict(n_layer=3, n_embd=16),
            'gpt-micro': dict(n_layer=4, n_embd=32),
        }[config.model_type])
        self.transformer = nn.ModuleDict(dict(''').replace(
        "    bias: bool = True\n", "    bias: bool = True\n    model_type: str = 'gpt-nano'\n")
    nanogpt(project, source)
    text = edit(project, "model.py", "'gpt-nano': dict(n_layer=3, n_embd=16)",
                "'gpt-nano': dict(n_layer=3, n_embd=24)")
    message = one_annotation_on(project, "model.py", line_of(text, "n_embd=24"))
    assert "this change alters the shape of" in message


def test_pyproject_kwarg_change_is_one_annotation_on_the_kwargs_line(project):
    project.write("model.py", NANOGPT)
    model = ('name = "gpt"\ntarget = "model:GPT"\n'
             'kwargs = { config = { _target_ = "model:GPTConfig", n_embd = 16 } }')
    project.configure(model)
    assert project.run("update").code == 0
    commit(project)
    project.configure(model.replace("n_embd = 16", "n_embd = 32"))
    pyproject = (project.root / "pyproject.toml").read_text()
    message = one_annotation_on(project, "pyproject.toml", line_of(pyproject, "n_embd = 32"))
    assert "n_embd" not in message.partition("\n")[0] or "change" in message


def test_submodule_added_to_every_block_is_one_annotation_on_the_added_line(project):
    nanogpt(project)
    text = edit(project, "model.py", "        self.mlp = MLP(config)\n",
                "        self.mlp = MLP(config)\n        self.adapter = nn.Sequential(nn.Linear("
                "config.n_embd, 4), nn.GELU(), nn.Linear(4, config.n_embd))\n")
    one_annotation_on(project, "model.py", line_of(text, "self.adapter = "))


def test_two_defaults_changed_are_two_annotations_each_on_its_line(project):
    nanogpt(project)
    edit(project, "model.py", "    bias: bool = True\n", "    bias: bool = False\n")
    text = edit(project, "model.py", "    vocab_size: int = 96\n", "    vocab_size: int = 100\n")
    spots = sorted(int(props["line"]) for _, props, _ in annotations(project))
    assert spots == [line_of(text, "vocab_size: int = 100"), line_of(text, "bias: bool = False")]


def test_an_edit_of_forward_does_not_take_the_blame(project):
    nanogpt(project)
    edit(project, "model.py", "        x = self.transformer.wte(idx)\n",
         "        x = self.transformer.wte(idx) * 2\n")
    text = edit(project, "model.py", "    n_embd: int = 16\n", "    n_embd: int = 24\n")
    spots = {int(props["line"]) for _, props, _ in annotations(project)}
    assert spots == {line_of(text, "n_embd: int = 24")}


def test_no_cause_is_claimed_when_the_change_is_not_in_the_history(project, monkeypatch):
    """The width comes from the environment; the only edit is a constant nothing reads: each
    finding stays at its creating statement (never blamed on the unrelated edit)."""
    project.write("model.py", "import os\nfrom torch import nn\n\nVERSION = 1\n\n\n"
                              "class Net(nn.Module):\n    def __init__(self):\n"
                              "        super().__init__()\n"
                              "        width = int(os.environ.get('NET_WIDTH', '8'))\n"
                              "        self.head = nn.Linear(4, width)\n")
    project.configure('name = "net"\ntarget = "model:Net"')
    assert project.run("update").code == 0
    commit(project)
    text = edit(project, "model.py", "VERSION = 1", "VERSION = 2")
    monkeypatch.setenv("NET_WIDTH", "9")
    finding, = check_json(project)  # weight and bias: one statement, one finding
    assert finding["line"] == line_of(text, "self.head = nn.Linear(4, width)")
    assert len(finding["members"]) == 2
    one_annotation_on(project, "model.py", line_of(text, "self.head = "))


def test_weight_and_bias_of_one_linear_are_one_annotation_without_history(project):
    nanogpt(project, git_history=False)
    text = edit(project, "model.py", "self.c_proj = nn.Linear(config.n_embd, config.n_embd, "
                "bias=config.bias)", "self.c_proj = nn.Linear(config.n_embd, 2 * config.n_embd,"
                " bias=config.bias)")
    message = one_annotation_on(project, "model.py", line_of(text, "2 * config.n_embd"))
    assert "`transformer.h.{0..2}.attn.c_proj.weight`" in message
    assert "`transformer.h.{0..2}.attn.c_proj.bias`" in message


# -- 4. renames of same-shaped layers ----------------------------------------------------------

def renames_of(findings: list) -> dict[str, tuple[str, str]]:
    return {old: (new, f.get("evidence", "")) for f in explained(findings)
            if f["kind"] == "renamed-key" for old, new in f["renames"].items()}


def test_x_transformers_to_q_to_k_to_v_pair_by_name(project):
    path = xt_project(project)
    for a in "qkv":
        edit(project, path, f"self.to_{a}", f"self.{a}_proj", count=99)
    found = renames_of(check_json(project))
    assert len(found) == 6  # 3 projections x 2 attention layers, every pair in `renames`
    for old, (new, evidence) in found.items():
        a = old.split(".to_")[1][0]
        assert new == old.replace(f".to_{a}.", f".{a}_proj.")
        assert evidence == f"paired by name: `to_{a}` ~ `{a}_proj`"


LLAMA_MLP = ("        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias="
             "config.mlp_bias)\n        self.up_proj = nn.Linear(self.hidden_size, self."
             "intermediate_size, bias=config.mlp_bias)\n        self.down_proj = nn.Linear(self."
             "intermediate_size, self.hidden_size, bias=config.mlp_bias)\n")


def llama_w123(project, history: bool) -> dict:
    path = hf_project(project, "llama", "from transformers import LlamaConfig\nfrom hf.modeling_"
                      "llama import LlamaModel", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                      " num_key_value_heads=2))")
    if history:
        commit(project)
    renamed = LLAMA_MLP.replace("gate_proj", "w1").replace("down_proj", "w2")
    renamed = renamed.replace("up_proj", "w3")
    lines = renamed.splitlines(keepends=True)
    edit(project, path, LLAMA_MLP, lines[0] + lines[2] + lines[1])  # Meta's order: w1, w2, w3
    for old, new in (("gate_proj(", "w1("), ("up_proj(", "w3("), ("down_proj(", "w2(")):
        edit(project, path, f"self.{old}", f"self.{new}", count=99)
    return check_json(project)


def test_llama_gate_up_down_renamed_in_place_pair_by_creation_order(project):
    found = renames_of(llama_w123(project, history=True))
    for i in range(2):
        mlp = f"layers.{i}.mlp."
        assert found[mlp + "gate_proj.weight"] == (
            mlp + "w1.weight", "paired by creation order in the edit that renamed them")
        assert found[mlp + "up_proj.weight"][0] == mlp + "w3.weight"
        assert found[mlp + "down_proj.weight"][0] == mlp + "w2.weight"


def test_llama_gate_and_up_without_history_are_not_guessed(project):
    findings = llama_w123(project, history=False)
    found = renames_of(findings)
    assert {old: new for old, (new, _) in found.items()} == {
        f"layers.{i}.mlp.down_proj.weight": f"layers.{i}.mlp.w2.weight" for i in range(2)}
    kinds = {(f["kind"], f["key"]) for f in explained(findings)}
    assert ("unexpected-key", "layers.{0..1}.mlp.gate_proj.weight") in kinds
    assert ("missing-key", "layers.{0..1}.mlp.w1.weight") in kinds


def test_a_q_k_swap_in_llama_attention_is_never_claimed(project):
    """The edit calls the statement that made q `k_attn` and the one that made k `q_attn`:
    names and position disagree, so no pair is claimed between them."""
    path = hf_project(project, "llama", "from transformers import LlamaConfig\nfrom hf.modeling_"
                      "llama import LlamaModel", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                      " num_key_value_heads=2))")
    commit(project)
    edit(project, path, "self.q_proj", "self.TMP", count=99)
    edit(project, path, "self.k_proj", "self.q_attn", count=99)
    edit(project, path, "self.TMP", "self.k_attn", count=99)
    found = renames_of(check_json(project))
    assert not any(".q_proj." in old or ".k_proj." in old for old in found), found


def test_an_entry_removed_from_a_long_statement_does_not_take_the_blame_of_its_siblings(project):
    """`wpe` leaves the `nn.ModuleDict(dict(...))` that also builds every block, and the bias
    default changes: the blocks' biases go to the default, only `wpe` to the dict statement."""
    nanogpt(project)
    edit(project, "model.py", "            wpe = nn.Embedding(config.block_size, config.n_embd),\n",
         "")
    text = edit(project, "model.py", "    bias: bool = True\n", "    bias: bool = False\n")
    at = {f["key"]: f["line"] for f in check_json(project)}
    assert at["transformer.wpe.weight"] == line_of(text, "self.transformer = nn.ModuleDict(")
    bias, = [f for f in check_json(project) if "transformer.ln_f.bias" in f["keys"]]
    assert bias["line"] == line_of(text, "bias: bool = False") and len(bias["keys"]) == 19


def test_a_checkpoint_saved_under_a_wrapper_prefix_still_points_at_the_added_layer(project):
    import torch

    source = ("from torch import nn\n\n\nclass Block(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.fc = nn.Linear(4, 4)\n\n\n"
              "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
              "        self.blocks = nn.ModuleList([Block() for _ in range(2)])\n")
    project.write("model.py", source)
    project.configure('name = "net"\ntarget = "model:Net"')
    namespace: dict = {}
    exec(compile(source, "model.py", "exec"), namespace)
    state = {f"module.{k}": v for k, v in namespace["Net"]().state_dict().items()}
    torch.save(state, project.root / "ddp.pt")
    text = edit(project, "model.py", "        self.fc = nn.Linear(4, 4)\n",
                "        self.fc = nn.Linear(4, 4)\n        self.norm = nn.LayerNorm(4)\n")
    run = project.run("check", "--against", "ddp.pt", "--format", "json")
    at = {f["key"]: f["line"] for f in explained(json.loads(run.out)["findings"])}
    assert at["blocks.{0..1}.norm.*"] == line_of(text, "self.norm = nn.LayerNorm(4)")


HELPER = "from torch import nn\n\n\ndef mlp(d):\n    hidden = 4 * d\n    return nn.Sequential(" \
         "nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))\n"
NET = "from torch import nn\nfrom layers import mlp\n\n\nclass Net(nn.Module):\n" \
      "    def __init__(self):\n        super().__init__()\n" \
      "        self.blocks = nn.ModuleList([mlp(8) for _ in range(3)])\n"


def helper_project(project) -> str:
    project.write("layers.py", HELPER)
    project.write("model.py", NET)
    project.configure('name = "net"\ntarget = "model:Net"')
    assert project.run("update").code == 0
    commit(project)
    return edit(project, "layers.py", "hidden = 4 * d", "hidden = 2 * d")


def test_a_helper_changed_since_the_signature_is_one_annotation_on_the_changed_line(project):
    text = helper_project(project)
    message = one_annotation_on(project, "layers.py", line_of(text, "hidden = 2 * d"))
    assert "9 tensors" in message  # two Linears' weights and one bias, in three blocks


def test_an_ignore_comment_on_the_cause_line_silences_the_whole_group(project):
    helper_project(project)
    edit(project, "layers.py", "hidden = 2 * d", "hidden = 2 * d  # ckptlint: ignore[CKL103]")
    run = project.run("check", "--format", "json")
    assert (run.code, json.loads(run.out)["findings"]) == (0, []), run.out


SIBLINGS = "from torch import nn\n\n\nclass Block(nn.Module):\n    def __init__(self, d, mult=4):\n" \
           "        super().__init__()\n        self.fc = nn.Linear(d, mult * d)\n\n\n" \
           "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n" \
           "        self.layers = nn.ModuleDict(dict(\n            emb=nn.Embedding(10, 8),\n" \
           "            blocks=nn.ModuleList([Block(8) for _ in range(2)]),\n        ))\n"


def test_an_ignore_comment_on_a_sibling_entry_does_not_silence_a_change_on_the_way(project):
    """The blocks' width changes in the entry that builds them: the group sits on that line of
    the long statement, so the comment silencing the embedding's own change on the line above
    silences nothing of it (it used to: the group spanned the whole statement, exit 0)."""
    project.write("model.py", SIBLINGS)
    project.configure('name = "net"\ntarget = "model:Net"')
    assert project.run("update").code == 0
    commit(project)
    edit(project, "model.py", "emb=nn.Embedding(10, 8),",
         "emb=nn.Embedding(12, 8),  # ckptlint: ignore[CKL103]")
    text = edit(project, "model.py", "Block(8) for", "Block(8, mult=2) for")
    finding, = check_json(project)
    assert set(finding["keys"]) == {f"layers.blocks.{i}.fc.{p}" for i in (0, 1)
                                    for p in ("weight", "bias")}
    blocks = line_of(text, "blocks=nn.ModuleList(")
    assert (finding["line"], finding["end_line"]) == (blocks, blocks)
    one_annotation_on(project, "model.py", blocks)


# -- gaps: a large removal, a parameter directly on the model, SARIF of a grouped cause ------

def test_a_whole_block_list_removed_from_a_multi_line_statement_is_one_finding_inside_it(project):
    """minGPT-style: 39 keys vanish at once (3 blocks of 13), their entry deleted from the
    statement that still creates the parent: one finding, inside that statement."""
    nanogpt(project)
    text = edit(project, "model.py",
                "            h = nn.ModuleList([Block(config) for _ in range(config.n_layer)]),\n", "")
    finding, = check_json(project)
    assert finding["kind"] == "unexpected-key" and finding["key"] == "transformer.h.*"
    assert len(finding["keys"]) == 39
    start = line_of(text, "self.transformer = nn.ModuleDict(dict(")
    end = line_of(text, "        ))")
    assert finding["file"] == "model.py" and start <= finding["line"] <= end
    (level, props, message), = annotations(project)
    assert level == "error" and start <= int(props["line"]) <= end
    assert "transformer.h" in message


def test_a_parameter_directly_on_the_model_points_at_its_own_statement(project):
    source = NANOGPT.replace(
        "        self.lm_head = nn.Linear(", "        self.pos_scale = nn.Parameter(torch.ones("
        "config.n_embd))\n        self.lm_head = nn.Linear(")
    nanogpt(project, source)
    text = edit(project, "model.py", "torch.ones(config.n_embd))",
                "torch.ones(config.block_size, config.n_embd))")
    finding, = check_json(project)
    assert (finding["kind"], finding["key"]) == ("shape-mismatch", "pos_scale")
    assert (finding["file"], finding["line"]) == ("model.py", line_of(text, "self.pos_scale ="))
    one_annotation_on(project, "model.py", line_of(text, "self.pos_scale ="))


def test_sarif_keeps_one_related_location_per_key_of_a_grouped_cause(project):
    nanogpt(project)
    text = edit(project, "model.py", "    bias: bool = True\n", "    bias: bool = False\n")
    run = project.run("check", "--format", "sarif")
    assert run.code == 1, run.err
    result, = json.loads(run.out)["runs"][0]["results"]
    where = result["locations"][0]["physicalLocation"]
    assert (where["artifactLocation"]["uri"], where["region"]["startLine"]) == \
        ("model.py", line_of(text, "bias: bool = False"))
    related = result["relatedLocations"]
    assert len(related) == 19  # one per key, each at the statement creating it
    lines = {r["physicalLocation"]["region"]["startLine"] for r in related}
    assert line_of(text, "self.c_attn = nn.Linear(") in lines
    assert line_of(text, "self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None") in lines


def test_llama_attention_renamed_to_meta_s_names_pairs_by_name(project):
    """HF's q_proj/k_proj/v_proj/o_proj as Meta's wq/wk/wv/wo, no history to tell the order:
    with the shared `_proj` and `w` set aside, the names themselves say q ~ q, k ~ k."""
    path = hf_project(project, "llama", "from transformers import LlamaConfig\nfrom hf.modeling_"
                      "llama import LlamaModel", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                      " num_key_value_heads=2))")
    for a in "qkvo":
        edit(project, path, f"self.{a}_proj", f"self.w{a}", count=99)
    found = renames_of(check_json(project))
    assert {old: new for old, (new, _) in found.items()} == {
        f"layers.{i}.self_attn.{a}_proj.weight": f"layers.{i}.self_attn.w{a}.weight"
        for i in range(2) for a in "qkvo"}
    assert found["layers.0.self_attn.q_proj.weight"][1] == "paired by name: `q_proj` ~ `wq`"


def test_llama_norms_renamed_to_meta_s_names_are_not_paired_on_a_shared_word(project):
    """Meta calls the norm before attention `attention_norm` and the one after it `ffn_norm`;
    HF calls the one after it `post_attention_layernorm`. Sharing `attention` is no evidence
    (it would pair the wrong two, same shape, which loads and is silently wrong)."""
    path = hf_project(project, "llama", "from transformers import LlamaConfig\nfrom hf.modeling_"
                      "llama import LlamaModel", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                      " num_key_value_heads=2))")
    edit(project, path, "self.input_layernorm", "self.attention_norm", count=99)
    edit(project, path, "self.post_attention_layernorm", "self.ffn_norm", count=99)
    findings = check_json(project)
    assert renames_of(findings) == {}
    kinds = {(f["kind"], f["key"]) for f in explained(findings)}
    assert ("unexpected-key", "layers.{0..1}.post_attention_layernorm.weight") in kinds
    assert ("missing-key", "layers.{0..1}.attention_norm.weight") in kinds


def _bert_masked_lm(project) -> str:
    path = hf_project(project, "bert", "from transformers import BertConfig\nfrom hf.modeling_bert"
                      " import BertForMaskedLM", f"BertForMaskedLM(BertConfig({TINY}, "
                      "vocab_size=99))")
    commit(project)
    return path


def test_a_tie_entry_deleted_from_tied_weights_keys_is_one_annotation_there(project):
    """transformers ties by a table of keys read in `post_init`, on no layer's way: the
    change that spells the key out is the cause."""
    path = _bert_masked_lm(project)
    head = "class BertForMaskedLM(BertPreTrainedModel):\n    _tied_weights_keys = {\n"
    entry = '        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",\n'
    text = edit(project, path, head + entry, head)
    finding, = check_json(project)
    assert finding["kind"] == "tie-changed"
    assert finding["line"] == line_of(text, "class BertForMaskedLM(") + 1  # the table
    one_annotation_on(project, path, finding["line"])


def test_a_tie_switched_off_by_a_config_default_is_one_annotation_on_that_line(project):
    path = _bert_masked_lm(project)
    edit(project, "factory.py", "vocab_size=99))", "vocab_size=99, tie_word_embeddings=False))")
    finding, = check_json(project)
    assert finding["kind"] == "tie-changed"
    assert (finding["file"], finding["line"]) == ("factory.py", line_of(
        (project.root / "factory.py").read_text(), "tie_word_embeddings=False"))
    assert path.endswith("modeling_bert.py")


def test_a_tie_switched_off_by_a_config_class_default_is_one_annotation_on_it(project):
    """The tie is made by transformers from `config.tie_word_embeddings`: a changed default
    that names the tie is the cause, though no layer's code reads it."""
    source = absolute_imports((HF / "bert" / "configuration_bert.py").read_text(),
                              "transformers.models", "bert")
    project.write("hf/configuration_bert.py", source)
    path = hf_project(project, "bert", "from hf.configuration_bert import BertConfig\n"
                      "from hf.modeling_bert import BertForMaskedLM",
                      f"BertForMaskedLM(BertConfig({TINY}, vocab_size=99))")
    commit(project)
    text = edit(project, "hf/configuration_bert.py", "    tie_word_embeddings: bool = True\n",
                "    tie_word_embeddings: bool = False\n")
    finding, = check_json(project)
    assert finding["kind"] == "tie-changed" and path.endswith("modeling_bert.py")
    assert (finding["file"], finding["line"]) == (
        "hf/configuration_bert.py", line_of(text, "tie_word_embeddings: bool = False"))
