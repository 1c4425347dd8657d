"""`ckptlint.source.discover`: which classes are nn.Modules (bases followed through imports, the
project's own classes and installed packages' sources), which are main models, parts or
wrappers, which factories build one, and the config dataclasses that fill their arguments."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ckptlint.source.discover import Proposal, discover


def _write(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def _survey(root: Path, files: dict[str, str]) -> dict[str, Proposal]:
    _write(root, files)
    return {p.target: p for p in discover(root).proposals}


def _main(found: dict[str, Proposal]) -> set[str]:
    return {t for t, p in found.items() if p.main}


# -- what is an nn.Module -------------------------------------------------------------------

BASES = {
    # every spelling of torch.nn.Module, and subclasses of torch.nn classes
    "spellings": ({"m.py": """
        import torch
        import torch.nn as tnn
        from torch import nn
        from torch.nn import Module as M, Linear

        class A(nn.Module): pass
        class B(torch.nn.Module): pass
        class C(tnn.Module): pass
        class D(M): pass
        class E(Linear): pass
        class F(nn.Sequential): pass
        """}, {"m:A", "m:B", "m:C", "m:D", "m:E", "m:F"}),
    # through the project's own classes, in another file and package
    "project bases": ({"pkg/__init__.py": "", "pkg/base.py": """
        from torch import nn
        class Base(nn.Module): pass
        class Plain: pass
        """, "pkg/model.py": """
        from pkg.base import Base, Plain
        from .base import Base as Relative
        class Net(Base): pass
        class Other(Relative): pass
        class NotOne(Plain): pass
        """}, {"pkg.base:Base", "pkg.model:Net", "pkg.model:Other"}),
    # a name ending in "Module" proves nothing: lightning's LightningDataModule is no Module
    "data modules": ({"data.py": """
        from lightning import LightningDataModule, LightningModule
        from torch.utils.data import Dataset
        class DataModule(LightningDataModule): pass
        class Alpaca(DataModule): pass
        class SFTDataset(Dataset): pass
        class Lit(LightningModule): pass
        """}, {"data:Lit"}),
    # torch.nn classes that are not Modules, and a module-level alias of one that is
    "not modules": ({"m.py": """
        from torch import nn
        Norm = nn.LayerNorm
        class W(nn.Parameter): pass
        class N(Norm): pass
        class Generic(dict): pass
        """}, {"m:N"}),
    # `class Block(Block)` subclasses the imported Block, not itself
    "shadowing": ({"a.py": "from torch import nn\nclass Block(nn.Module): pass\n",
                   "b.py": "from a import Block\nclass Block(Block): pass\n"},
                  {"a:Block", "b:Block"}),
}


@pytest.mark.parametrize("files, modules", list(BASES.values()), ids=list(BASES))
def test_only_nn_modules_are_proposed(tmp_path: Path, files: dict[str, str],
                                      modules: set[str]) -> None:
    assert set(_survey(tmp_path, files)) == modules


def test_a_base_that_cannot_be_read_is_reported_not_proposed(tmp_path: Path) -> None:
    _write(tmp_path, {"m.py": "from not_installed_anywhere import Base\n"
                              "class Net(Base): pass\n"})
    found = discover(tmp_path)
    assert found.proposals == () and found.unresolved == ("m:Net (Base)",)


def test_tests_mocks_and_script_classes_stay_out(tmp_path: Path) -> None:
    net = "from torch import nn\nclass Net(nn.Module): pass\n"
    found = _survey(tmp_path, {
        "tests/test_net.py": net, "test_x.py": net, "conftest.py": net, "mocks.py": net,
        "model.py": net + "class MockMasker(nn.Module): pass\nclass _Private(nn.Module): pass\n"
                          "if __name__ == '__main__':\n    class Demo(nn.Module): pass\n"
                          "def f():\n    class Local(nn.Module): pass\n"})
    assert set(found) == {"model:Net"}


# -- main models, parts, wrappers, factories -------------------------------------------------

ROLES = {
    # a class another builds is a part of it; a base of parts is a part
    "parts": ("""
        from torch import nn
        class Base(nn.Module): pass
        class Block(Base):
            def __init__(self, d): super().__init__(); self.fc = nn.Linear(d, d)
        class Norm(nn.Module): pass
        class Net(nn.Module):
            def __init__(self, norm=Norm):
                super().__init__()
                self.blocks = nn.ModuleList([Block(4) for _ in range(2)])
                self.norm = norm()
        """, {"m:Net": "", "m:Block": "part of m:Net", "m:Norm": "part of m:Net",
              "m:Base": "base of m:Block"}),
    # a model that keeps a model passed in is a wrapper; the annotated model is used whole,
    # even though another model builds it too (x-transformers' TransformerWrapper)
    "wrappers": ("""
        from torch import nn
        class Layers(nn.Module): pass
        class Decoder(Layers): pass
        class Variant(Layers): pass
        class Wrapper(nn.Module):
            def __init__(self, num_tokens, attn_layers: Layers):
                super().__init__()
                self.emb = nn.Embedding(num_tokens, 8)
                self.attn_layers = attn_layers
        class EncDec(nn.Module):
            def __init__(self):
                super().__init__()
                self.decoder = Wrapper(10, Decoder())
        class Trainer(nn.Module):
            def __init__(self, net: Wrapper):
                super().__init__()
                self.net = net
        class Loss(nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net
            def forward(self, x):
                return self.net(x)
        """, {"m:Wrapper": "", "m:EncDec": "", "m:Layers": "part of m:Wrapper",
              "m:Decoder": "part of m:EncDec", "m:Variant": "variant of m:Layers",
              "m:Trainer": "wraps the model passed as `net`",
              "m:Loss": "wraps the model passed as `net`"}),
    # the outermost model a script builds is used whole; what it builds it from is a part
    "scripts": ("""
        from torch import nn
        class Layers(nn.Module): pass
        class Model(nn.Module):
            def __init__(self, layers): super().__init__(); self.layers = layers
        class Holder(nn.Module):
            def __init__(self): super().__init__(); self.model = Model(Layers())
        if __name__ == "__main__":
            model = Model(layers=Layers())
        """, {"m:Model": "", "m:Holder": "", "m:Layers": "part of m:Holder and 1 more"}),
    # classes drawn from a module-level registry, or named by a config dataclass
    "registries": ("""
        from dataclasses import dataclass
        from typing import Literal
        from torch import nn
        class Gelu(nn.Module): pass
        class Relu(nn.Module): pass
        class SmallMLP(nn.Module): pass
        class BigMLP(nn.Module): pass
        ACTS = dict(gelu=Gelu, relu=Relu)
        @dataclass
        class Config:
            mlp_class_name: Literal["SmallMLP", "BigMLP"] = "SmallMLP"
        class Net(nn.Module):
            def __init__(self, act="gelu"):
                super().__init__()
                self.act = ACTS[act]()
        """, {"m:Net": "", "m:Gelu": "part of m:Net", "m:Relu": "part of m:Net",
              "m:SmallMLP": "chosen by name in m:Config",
              "m:BigMLP": "chosen by name in m:Config"}),
    # segment-anything: public build_* factories of the main model, through a private helper
    # that builds its parts as arguments
    "factories": ("""
        from torch import nn
        class Encoder(nn.Module): pass
        class TwoWay(nn.Module): pass
        class Decoder(nn.Module):
            def __init__(self, transformer: nn.Module):
                super().__init__(); self.transformer = transformer; self.out = nn.Linear(2, 2)
        class Sam(nn.Module):
            def __init__(self, encoder: Encoder, decoder: Decoder):
                super().__init__(); self.encoder = encoder; self.decoder = decoder
        def build_sam_b(checkpoint=None):
            return _build(depth=12)
        def create_sam_l(checkpoint=None) -> Sam:
            return _build(depth=24)
        def build_optimizer(model):
            return None
        def _build(depth):
            sam = Sam(encoder=Encoder(), decoder=Decoder(transformer=TwoWay()))
            return sam
        build_sam = build_sam_b
        """, {"m:build_sam_b": "", "m:create_sam_l": "", "m:Sam": "built by build_sam_b",
              "m:Encoder": "part of m:Sam", "m:Decoder": "part of m:Sam",
              "m:TwoWay": "part of m:Decoder"}),
}


@pytest.mark.parametrize("source, roles", list(ROLES.values()), ids=list(ROLES))
def test_roles(tmp_path: Path, source: str, roles: dict[str, str]) -> None:
    found = _survey(tmp_path, {"m.py": source})
    assert {t: p.role for t, p in found.items()} == roles
    assert _main(found) == {t for t, role in roles.items() if not role}


# -- constructor arguments and configs ------------------------------------------------------

ARGUMENTS = {
    "own": ("class Net(nn.Module):\n    def __init__(self, a, b=1, *args, c, d=2, **kw): ...",
            ("a", "c"), ()),
    # `**kwargs` passed on to the base: its required arguments, less those given
    "forwarded": ("class Layers(nn.Module):\n    def __init__(self, dim, depth, causal): ...\n"
                  "class Encoder(Layers):\n    def __init__(self, **kwargs):\n"
                  "        super().__init__(causal=False, **kwargs)\n",
                  ("dim", "depth"), ()),
    # inherited from torch: nn.Linear's own arguments
    "torch base": ("class Head(nn.Linear): pass\n", ("in_features", "out_features"), ()),
    # nanoGPT: `GPT(config)`, unannotated, and the same file's all-defaults GPTConfig
    "unannotated config": ("@dataclass\nclass GPTConfig:\n    n_layer: int = 12\n"
                           "    n_embd: int = 768\n    extra: list = field(default_factory=list)\n"
                           "class Net(nn.Module):\n    def __init__(self, config):\n"
                           "        self.h = [config.n_embd] * config.n_layer\n",
                           ("config",), (("config", "m:GPTConfig"),)),
    "annotated config": ("@dataclass(frozen=True)\nclass Base:\n    a: int = 1\n"
                         "@dataclass\nclass Cfg(Base):\n    b: int = 2\n    k: ClassVar[int]\n"
                         "class Net(nn.Module):\n    def __init__(self, cfg: 'Cfg'): ...\n",
                         ("cfg",), (("cfg", "m:Cfg"),)),
    # a field without a default, or attributes the dataclass lacks: not filled
    "required field": ("@dataclass\nclass Cfg:\n    a: int\n    b: int = field()\n"
                       "class Net(nn.Module):\n    def __init__(self, cfg: Cfg): ...\n",
                       ("cfg",), ()),
    "other attributes": ("@dataclass\nclass Cfg:\n    a: int = 1\n"
                         "class Net(nn.Module):\n    def __init__(self, config):\n"
                         "        self.x = config.not_a_field\n", ("config",), ()),
}


@pytest.mark.parametrize("source, required, configs", list(ARGUMENTS.values()),
                         ids=list(ARGUMENTS))
def test_arguments(tmp_path: Path, source: str, required: tuple[str, ...],
                   configs: tuple[tuple[str, str], ...]) -> None:
    header = ("from dataclasses import dataclass, field\nfrom typing import ClassVar\n"
              "from torch import nn\n")
    found = _survey(tmp_path, {"m.py": header + source})
    net = found.get("m:Net") or found.get("m:Encoder") or found["m:Head"]
    assert (net.required, net.configs) == (required, configs)


def test_arguments_from_code_that_cannot_be_read_are_unknown(tmp_path: Path) -> None:
    found = _survey(tmp_path, {"m.py": "from torch import nn\nfrom nowhere import Mixin\n"
                                       "class Net(Mixin, nn.Module): pass\n"})
    assert found["m:Net"].params is None
