"""`ckptlint.source.resolve`: modules found on a search path without importing them, and names followed
through imports to the class they stand for, and on to torch.nn.Module."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from ckptlint.source.resolve import BUILTIN, Def, Inits, ModuleRef, Resolver
from ckptlint.source.parsed import Finder


def _resolver(tmp_path: Path, files: dict[str, str], search: list[str] | None = None
              ) -> Resolver:
    for relpath, text in files.items():
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return Resolver(Finder({}, [str(tmp_path)] + (search or [])))


def test_star_imports_relative_imports_and_re_exports(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path, {
        "pkg/__init__.py": "from .layers import *\n",
        "pkg/layers/__init__.py": "from pkg.layers.core import Block as Block\n",
        "pkg/layers/core.py": "from torch import nn\nclass Block(nn.Module): pass\n",
        "pkg/sub/model.py": "from ..layers import Block\nfrom .. import layers\n"})
    found = resolver.lookup("pkg", "Block")
    assert found == Def("pkg.layers.core", "Block", found.node) and resolver.is_module(found)
    assert resolver.lookup("pkg.sub.model", "Block") == found
    assert resolver.lookup("pkg.sub.model", "layers") == ModuleRef("pkg.layers")


def test_a_cycle_of_re_exports_is_unknown_not_a_hang(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path, {"a.py": "from b import X\n", "b.py": "from a import X\n",
                                    "c.py": "from a import X\nclass C(X): pass\n"})
    assert resolver.lookup("a", "X") is None
    assert resolver.is_module(resolver.lookup("c", "C")) is None


def test_a_regular_package_wins_over_a_namespace_folder(tmp_path: Path) -> None:
    (tmp_path / "first" / "pkg").mkdir(parents=True)  # a folder without __init__.py
    second = tmp_path / "second" / "pkg"
    second.mkdir(parents=True)
    (second / "__init__.py").write_text("class Thing: pass\n")
    finder = Finder({}, [str(tmp_path / "first"), str(tmp_path / "second")])
    source = finder.source("pkg")
    assert source is not None and source.path == second / "__init__.py"
    assert Finder({}, [str(tmp_path / "first")]).source("pkg").path is None  # namespace


def test_without_torch_sources_torch_nn_names_are_taken_on_trust(tmp_path: Path) -> None:
    # a search path without torch, as in an environment that lacks it
    resolver = Resolver(Finder({}, []))
    for name, expected in (("Linear", True), ("Parameter", False), ("Module", True)):
        assert resolver.is_module(resolver.lookup("torch.nn", name)) is expected, name
    assert resolver.lookup("torch", "nn") == ModuleRef("torch.nn")
    assert resolver.is_module(resolver.lookup("torch", "Tensor")) is None  # not trusted
    # with torch's sources, nn.Linear is followed into them, with its own arguments
    real = _resolver(tmp_path, {"m.py": "from torch import nn\nclass Head(nn.Linear): pass\n"},
                     search=[str(Path(__import__("torch").__file__).parent.parent)])
    head = real.lookup("m", "Head")
    assert real.is_module(head) is True
    assert [p.name for p in Inits(real).params(head) if p.required] == \
        ["in_features", "out_features"]


@pytest.mark.parametrize("annotation", ['"not python ("', '"nul\\x00byte"', '"42"'])
def test_a_string_that_is_not_a_name_names_nothing(tmp_path: Path, annotation: str) -> None:
    resolver = _resolver(tmp_path, {"m.py": f"x: {annotation}\n"})
    source = resolver.finder.source("m")
    assert resolver.expr(source, ast.Constant(eval(annotation))) is None


def test_builtins_are_never_modules(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path, {"m.py": "class D(dict): pass\n"})
    source = resolver.finder.source("m")
    assert resolver.name(source, "dict") == BUILTIN
    assert resolver.is_module(resolver.lookup("m", "D")) is False
