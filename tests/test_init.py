"""`ckptlint init`: proposals listed and pre-selected, an append-only edit of pyproject.toml, the
first update; non-interactive (`--yes`, no tty, `--select`) and interactive (a real pty) answers;
names; and the acceptance runs on copies of x-transformers, diffusers' UNets and a litgpt-like
project."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ckptlint.commands.init import snake, unique_names
from ckptlint.source.discover import Discovery, Proposal, discover

LAYERS = '''
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, d)
'''

MODEL = '''
from dataclasses import dataclass

from torch import nn

from pkg.layers import Block


@dataclass
class NetConfig:
    d: int = 8
    n: int = 2


class Net(nn.Module):
    def __init__(self, d=16, n=2):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.head = nn.Linear(d, 3)


class Configured(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.body = nn.Linear(config.d, config.n)


class Wide(nn.Module):
    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
'''

# never proposed: a test, an environment, a hidden folder, build output
ELSEWHERE = '''
from torch import nn


class Elsewhere(nn.Module):
    pass
'''

PYPROJECT = '''\
# the project's own settings: init must not touch a byte of them
[project]
name   = "fixture"      # odd spacing, kept
version = "0.1"

[tool.ruff]
line-length = 99
'''

APPENDED = '''
# Models registered by `ckptlint init`; `ckptlint update` records their signatures.
[tool.ckptlint]

[[tool.ckptlint.models]]
name = "net"
target = "pkg.model:Net"

[[tool.ckptlint.models]]
name = "configured"
target = "pkg.model:Configured"
kwargs = { config = { _target_ = "pkg.model:NetConfig" } }

# TODO: fill in kwargs (pkg/model.py:27 needs width), uncomment, then run `ckptlint update wide`
# [[tool.ckptlint.models]]
# name = "wide"
# target = "pkg.model:Wide"
# kwargs = { width = ... }
'''


@pytest.fixture
def models(project: Any) -> Any:
    project.write("pkg/__init__.py", "")
    project.write("pkg/layers.py", LAYERS)
    project.write("pkg/model.py", MODEL)
    for relpath in ("tests/test_model.py", ".venv/lib/python3.11/site-packages/dep.py",
                    ".hidden/x.py", "build/lib/pkg/model.py", "venv/x.py", "dist/x.py"):
        project.write(relpath, ELSEWHERE)
    (project.root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    return project


def pyproject_near(project: Any) -> str:
    return (project.root / "pyproject.toml").read_bytes().decode("utf-8")


def test_yes_appends_entries_records_signatures_and_check_passes(models: Any) -> None:
    run = models.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    assert pyproject_near(models) == PYPROJECT + APPENDED
    assert run.out.startswith(
        "found 4 new model class(es) and factories in 3 file(s); 3 look like main models "
        "([x]: proposed)\n"
        "   1 [x] net         pkg.model:Net\n"
        "   2 [x] configured  pkg.model:Configured\n"
        "   3 [x] wide        pkg.model:Wide  (needs width)\n"
        "     1 part(s) of other models not listed (Block); `ckptlint init --select NAME` "
        "registers any of them\n"), run.out
    assert "wrote signatures/net.toml" in run.out and "wrote signatures/configured.toml" in run.out
    assert sorted(p.name for p in (models.root / "signatures").iterdir()) == \
        ["configured.toml", "net.toml"]
    check = models.run("check")
    assert check.code == 0, check.out + check.err


def test_a_second_init_adds_nothing(models: Any) -> None:
    assert models.run("init", "--yes").code == 0
    again = models.run("init", "--yes")
    assert again.code == 0 and "nothing to add" in again.out
    assert pyproject_near(models) == PYPROJECT + APPENDED


def test_dry_run_prints_the_text_and_writes_nothing(models: Any) -> None:
    run = models.run("init", "--dry-run")
    assert run.code == 0, run.err
    assert run.out.endswith("would append to pyproject.toml:\n\n" + APPENDED.lstrip())
    assert pyproject_near(models) == PYPROJECT
    assert not (models.root / "signatures").exists()


def test_existing_table_gets_only_new_models(models: Any) -> None:
    existing = PYPROJECT + '''
[tool.ckptlint]
signatures = "sigs"   # a comment that stays

[[tool.ckptlint.models]]
name = "main"
target = "pkg.model:Net"
kwargs = { d = 16 }

[tool.black]
line-length = 99'''  # no final newline
    (models.root / "pyproject.toml").write_text(existing, encoding="utf-8")
    run = models.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    text = pyproject_near(models)
    assert text.startswith(existing + "\n\n# Models registered by `ckptlint init`")
    added = text[len(existing):]
    assert "[tool.ckptlint]\n" not in added and 'target = "pkg.model:Net"' not in added
    assert '[[tool.ckptlint.models]]\nname = "configured"' in added
    assert "already in pyproject.toml: pkg.model:Net" in run.out
    assert "wrote sigs/configured.toml" in run.out and "sigs/main.toml" not in run.out
    assert models.run("check", "configured").code == 0


def test_crlf_file_stays_crlf(models: Any) -> None:
    (models.root / "pyproject.toml").write_bytes(PYPROJECT.replace("\n", "\r\n").encode())
    assert models.run("init", "--dry-run").code == 0  # nothing built, nothing written
    assert models.run("init", "--yes").code == 0
    data = (models.root / "pyproject.toml").read_bytes()
    assert data.startswith(PYPROJECT.replace("\n", "\r\n").encode())
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_src_layout_gets_a_pythonpath(project: Any) -> None:
    project.write("src/lib/__init__.py", "")
    project.write("src/lib/net.py", ELSEWHERE)
    project.write("pyproject.toml", '[project]\nname = "lib"\n')
    run = project.run("init", "--dry-run")
    assert 'pythonpath = ["src"]\n\n[[tool.ckptlint.models]]\nname = "elsewhere"\n' \
        'target = "lib.net:Elsewhere"\n' in run.out


def test_no_pyproject_creates_one(project: Any) -> None:
    project.write("net.py", ELSEWHERE)
    run = project.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    assert (project.root / "pyproject.toml").read_text().startswith(
        "# Models registered by `ckptlint init`")
    assert (project.root / "signatures" / "elsewhere.toml").exists()


# -- stdin is not a terminal, or is one ----------------------------------------------------


def test_without_a_terminal_entries_needing_arguments_are_commented(models: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "ckptlint", "init"], cwd=models.root,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pyproject_near(models) == PYPROJECT + APPENDED
    assert "1 left commented out with a TODO" in proc.stdout


def _converse(cwd: Path, argv: list[str], script: list[tuple[str, str]],
              timeout: float = 240) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal; for each (prompt, answer) wait for the prompt, type the
    answer. Returns the exit code and everything the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
    os.close(slave)
    shown, seen, deadline = b"", 0, time.monotonic() + timeout
    steps = iter(script)
    step = next(steps, None)
    try:
        while True:
            if step is not None and step[0].encode() in shown[seen:]:
                seen = shown.index(step[0].encode(), seen) + len(step[0])
                os.write(master, step[1].encode() + b"\n")
                step = next(steps, None)
                continue
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"timed out waiting for {step}; the terminal shows:\n"
                                     + shown.decode(errors="replace"))
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    code = proc.wait(timeout=60)
    assert step is None, f"never asked {step[0]!r}:\n{shown.decode(errors='replace')}"
    return code, shown.decode(errors="replace").replace("\r\n", "\n")


PICK = "`all`, `none`: "


def test_interactive_asks_for_required_arguments(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        (PICK, ""),  # Enter: the three marked
        ("  width = ", "wide"),  # not TOML: asked again
        ("  width = ", "32"),
        ("append 3 model(s) to pyproject.toml? [Y/n] ", ""),
    ])
    assert code == 0, screen
    assert "pkg.model:Wide (pkg/model.py:27) needs width" in screen
    assert "not a TOML value" in screen
    assert pyproject_near(models) == PYPROJECT + APPENDED.split("# TODO")[0] + \
        '[[tool.ckptlint.models]]\nname = "wide"\ntarget = "pkg.model:Wide"\n' \
        'kwargs = { width = 32 }\n'
    assert "wrote signatures/wide.toml" in screen
    assert models.run("check").code == 0


def test_interactive_empty_answer_leaves_the_entry_commented(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        (PICK, "all"),
        ("  width = ", ""),
        ("? [Y/n] ", "y"),
    ])
    assert code == 0, screen
    assert pyproject_near(models) == PYPROJECT + APPENDED


def test_interactive_no_writes_nothing(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        (PICK, "1-3"),
        ("  width = ", "32"),
        ("? [Y/n] ", "n"),
    ])
    assert code == 0 and "nothing written" in screen, screen
    assert pyproject_near(models) == PYPROJECT


def test_interactive_pick_by_number_and_none(models: Any) -> None:
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        (PICK, "7"),  # not on the list: asked again
        (PICK, "2 net"),
        ("append 2 model(s) to pyproject.toml? [Y/n] ", ""),
    ])
    assert code == 0 and "not understood" in screen, screen
    text = pyproject_near(models)
    assert 'name = "configured"' in text and 'name = "net"' in text and "wide" not in text
    code, screen = _converse(models.root, [sys.executable, "-m", "ckptlint", "init"], [
        (PICK, "none")])
    assert code == 0 and "nothing to add" in screen, screen
    assert pyproject_near(models) == text


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("CaiT", "cait"), ("LLaMAMoE", "llama_moe"), ("ViViT", "vivit"),
    ("SigLIPViT", "siglip_vit"), ("ViT", "vit"), ("GPTConfig", "gpt_config"),
    ("XTransformer", "x_transformer"), ("TransformerWrapper", "transformer_wrapper"),
    ("TwoWayTransformer", "two_way_transformer"), ("MaxViT", "max_vit"), ("LeViT", "levit"),
    ("ViTDetPool", "vit_det_pool"), ("ImageEncoderViT", "image_encoder_vit"),
    ("UNet2DModel", "unet2d_model"), ("Kandinsky3UNet", "kandinsky3_unet"),
    ("CrossAttnDownBlock2D", "cross_attn_down_block2d"), ("T2TViT", "t2t_vit"),
    ("KVCache", "kv_cache"), ("XCiT", "xcit"), ("nViT", "nvit"), ("LayerNorm2d", "layer_norm2d"),
    ("my_model", "my_model"), ("Outer.Inner", "outer_inner"),
])
def test_names_keep_acronyms_whole(name: str, expected: str) -> None:
    assert "_".join(snake(part) for part in name.split(".")) == expected


def test_clashing_names_take_their_module() -> None:
    names = unique_names(["vit", "vit", "vit", "simple_vit", "simple_vit", "gpt"],
                         ["vit", "vit_1d", "ats_vit", "simple_vit", "simple_vit_3d", "model"],
                         {"gpt"})
    assert names == ["vit", "vit_1d", "ats_vit", "simple_vit", "simple_vit_3d", "model_gpt"]


# -- --select and the screenful of TODOs ------------------------------------------------------

MANY = "from torch import nn\n" + "".join(
    f"class Model{i}(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n"
    f"        self.fc = nn.Linear(width, width)\n" for i in range(8))


def test_more_todos_than_a_screen_are_written_only_when_selected(project: Any) -> None:
    project.write("many.py", MANY)
    run = project.run("init", "--yes")
    assert run.code == 0, run.err
    assert "8 proposed model(s) need constructor arguments: more TODOs than a screen holds" \
        in run.out and "nothing to add to pyproject.toml" in run.out
    assert not (project.root / "pyproject.toml").exists()
    run = project.run("init", "--select", "model3", "many:Model5", "Model7", "--yes")
    assert run.code == 0, run.err
    text = (project.root / "pyproject.toml").read_text()
    assert re.findall(r'^# name = "(\w+)"', text, re.M) == ["model3", "model5", "model7"]
    assert text.count("# TODO: fill in kwargs") == 3


@pytest.mark.parametrize("word, message", [
    ("nope", "--select nope: no new model of that name, target or class was found (see "
             "the list above)"),
    ("Block", "--select Block matches 2 classes (a:Block, b:Block): name one target"),
])
def test_select_names_what_it_cannot_pick(project: Any, word: str, message: str) -> None:
    block = "from torch import nn\nclass Block(nn.Module): pass\n"
    project.write("a.py", block)
    project.write("b.py", block)
    run = project.run("init", "--select", word, "--yes")
    assert (run.code, run.err) == (2, f"ckptlint: error: {message}\n")
    assert not (project.root / "pyproject.toml").exists()


def test_select_takes_a_part_that_was_not_proposed(models: Any) -> None:
    run = models.run("init", "--select", "pkg.layers:Block", "--dry-run")
    assert run.code == 0, run.err
    assert run.out.endswith('# [[tool.ckptlint.models]]\n# name = "block"\n'
                            '# target = "pkg.layers:Block"\n# kwargs = { d = ... }\n')


# -- real code: x-transformers, diffusers, a litgpt-like project -------------------------------

SITE = Path(__import__("x_transformers").__file__).parent.parent

_GROUND_TRUTH = """
import importlib, inspect, json, pkgutil, sys, warnings
import torch
warnings.simplefilter("ignore")
package = importlib.import_module(sys.argv[1])
classes = {}
for info in pkgutil.iter_modules(package.__path__):
    module = importlib.import_module(f"{sys.argv[1]}.{info.name}")
    for name, value in vars(module).items():
        if inspect.isclass(value) and value.__module__ == module.__name__:
            classes[f"{module.__name__}:{name}"] = issubclass(value, torch.nn.Module)
print(json.dumps(classes))
"""


def _ground_truth(package: str) -> dict[str, bool]:
    """Every class the installed package defines at module level: is it an nn.Module?"""
    proc = subprocess.run([sys.executable, "-c", _GROUND_TRUTH, package], capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def _copy(package: str, tmp_path: Path) -> Path:
    """A copy of an installed package (or one of its folders) under `tmp_path`, at the same
    dotted path so that its modules keep their names."""
    parts = package.split(".")
    destination = tmp_path.joinpath(*parts)
    shutil.copytree(SITE.joinpath(*parts), destination,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _classes(found: Discovery) -> dict[str, Proposal]:
    return {p.target: p for p in found.proposals if p.kind == "class"}

def _main(found: Discovery) -> set[str]:
    return {p.target for p in found.proposals if p.main}


_LISTED = re.compile(r"^ *\d+ \[(x| )\] (\S+) +(\S+)", re.M)


def _listed(out: str) -> dict[str, tuple[bool, str]]:
    """name -> (marked, target) from init's numbered list."""
    return {name: (mark == "x", target) for mark, name, target in _LISTED.findall(out)}


def test_x_transformers(project: Any) -> None:
    found = discover(_copy("x_transformers", project.root))
    truth, classes = _ground_truth("x_transformers"), _classes(found)
    assert classes and all(truth[t] for t in classes)  # never a class that is no nn.Module
    assert {t for t, is_module in truth.items()  # and every public nn.Module is found
            if is_module and not t.partition(":")[2].startswith("_")} <= set(classes)
    for part in ("Attention", "FeedForward", "RMSNorm", "Encoder", "Decoder", "AttentionLayers"):
        assert f"x_transformers.x_transformers:{part}" not in _main(found), part
    assert not classes["x_transformers.autoregressive_wrapper:AutoregressiveWrapper"].main

    run = project.run("init", "--dry-run")
    assert run.code == 0, run.err
    listed = _listed(run.out)
    assert listed["transformer_wrapper"] == (
        True, "x_transformers.x_transformers:TransformerWrapper")
    assert listed["x_transformer"] == (True, "x_transformers.x_transformers:XTransformer")
    assert not listed.get("autoregressive_wrapper", (False,))[0]  # a wrapper, not proposed
    assert {target for _, target in listed.values()} <= {t for t in truth if truth[t]}
    # all of them need arguments: more TODOs than a screen, so nothing is written unasked
    assert run.out.endswith("nothing to add to pyproject.toml\n")
    run = project.run("init", "--select", "transformer_wrapper", "x_transformer", "--dry-run")
    assert run.code == 0, run.err
    assert "# kwargs = { num_tokens = ..., max_seq_len = ..., attn_layers = ... }" in run.out
    assert "# kwargs = { dim = ... }" in run.out


UNETS = "diffusers.models.unets"


def test_diffusers_unets(project: Any) -> None:
    found = discover(_copy(UNETS, project.root))
    truth, classes = _ground_truth(UNETS), _classes(found)
    assert classes and all(truth[t] for t in classes)
    top = {f"{UNETS}.unet_2d:UNet2DModel", f"{UNETS}.unet_1d:UNet1DModel",
           f"{UNETS}.unet_2d_condition:UNet2DConditionModel",
           f"{UNETS}.unet_3d_condition:UNet3DConditionModel",
           f"{UNETS}.unet_spatio_temporal_condition:UNetSpatioTemporalConditionModel"}
    assert top <= _main(found)
    for part in ("DownBlock2D", "UNetMidBlock2D", "CrossAttnUpBlock2D"):
        assert not classes[f"{UNETS}.unet_2d_blocks:{part}"].main, part

    run = project.run("init", "--dry-run")
    assert run.code == 0, run.err
    listed = _listed(run.out)
    assert {t for marked, t in listed.values() if marked} >= top
    assert {target for _, target in listed.values()} <= {t for t in truth if truth[t]}
    # every argument of the UNets has a default: registered as they are, not as TODOs
    assert f'name = "unet2d_model"\ntarget = "{UNETS}.unet_2d:UNet2DModel"\n' in run.out
    # the entry builds: `update` imports the installed diffusers (the copy is a namespace
    # package, so the installed regular package wins) and records its signature on meta
    run = project.run("init", "--select", "unet2d_model", "--yes")
    assert run.code == 0, run.out + run.err
    assert "wrote signatures/unet2d_model.toml" in run.out


LITGPT = {
    "litgpt/__init__.py": "",
    "litgpt/model.py": """
        from dataclasses import dataclass
        from typing import Optional
        import torch
        import torch.nn as nn


        @dataclass
        class Config:
            name: str = ""
            block_size: int = 64
            vocab_size: int = 128
            n_layer: int = 2
            n_head: int = 2
            n_embd: int = 32
            bias: bool = True
            padded_vocab_size: Optional[int] = None


        class GPT(nn.Module):
            def __init__(self, config: Config) -> None:
                super().__init__()
                self.config = config
                self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
                self.transformer = nn.ModuleDict(dict(
                    wte=nn.Embedding(config.vocab_size, config.n_embd),
                    h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                    ln_f=nn.LayerNorm(config.n_embd),
                ))

            @classmethod
            def from_name(cls, name: str) -> "GPT":
                return cls(Config(name=name))


        class Block(nn.Module):
            def __init__(self, config: Config) -> None:
                super().__init__()
                self.norm_1 = nn.LayerNorm(config.n_embd)
                self.attn = CausalSelfAttention(config)


        class CausalSelfAttention(nn.Module):
            def __init__(self, config: Config) -> None:
                super().__init__()
                self.attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        """,
    "litgpt/data/__init__.py": "from litgpt.data.base import DataModule\n"
                               "from litgpt.data.alpaca import Alpaca\n",
    "litgpt/data/base.py": """
        from abc import abstractmethod
        from lightning import LightningDataModule
        from torch.utils.data import Dataset


        class DataModule(LightningDataModule):
            @abstractmethod
            def connect(self, tokenizer=None, batch_size: int = 1) -> None: ...


        class SFTDataset(Dataset):
            def __init__(self, data: list) -> None:
                self.data = data
        """,
    "litgpt/data/alpaca.py": """
        from dataclasses import dataclass
        from litgpt.data import DataModule, SFTDataset


        @dataclass
        class Alpaca(DataModule):
            val_split_fraction: float = 0.03865

            def setup(self, stage: str = "") -> None:
                self.train_dataset = SFTDataset(data=[])
        """,
}


def test_litgpt_layout(project: Any) -> None:
    for relpath, text in LITGPT.items():
        project.write(relpath, text)
    found = discover(project.root)
    assert {p.target: p.role for p in found.proposals} == {
        "litgpt.model:GPT": "", "litgpt.model:Block": "part of litgpt.model:GPT",
        "litgpt.model:CausalSelfAttention": "part of litgpt.model:Block"}
    assert found.unresolved == ()  # the data modules were followed into lightning, not skipped
    run = project.run("init", "--yes")
    assert run.code == 0, run.out + run.err
    assert "Alpaca" not in run.out and "DataModule" not in run.out
    assert (project.root / "pyproject.toml").read_text().endswith(
        '[[tool.ckptlint.models]]\nname = "gpt"\ntarget = "litgpt.model:GPT"\n'
        'kwargs = { config = { _target_ = "litgpt.model:Config" } }\n')
    assert "wrote signatures/gpt.toml" in run.out
    assert project.run("check").code == 0
