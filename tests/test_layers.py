"""The package tree is the data-flow diagram (README, Development): imports only go down.

    core  <-  config, compare  <-  readers, build, source  <-  run  <-  reporters  <-  commands, api

Every import is read with `ast`, lazy ones inside functions included (they are still a
dependency, only a later one). A module may import its own package and any lower layer, never a
higher one nor a sibling of its own layer; no two modules import each other, directly or
around a loop (an import under `if TYPE_CHECKING:` never runs, so it obeys the layers but is no
loop); the root `ckptlint/__init__.py` is above everything; torch only under build/ and
readers/, libcst only under source/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ckptlint"

# layer of each top-level part of the package; a module imports only what sits lower
LAYERS = {
    "core": 0,
    "config": 1, "compare": 1,
    "readers": 2, "build": 2, "source": 2,
    "run": 3,
    "reporters": 4,
    "commands": 5, "api": 5, "__main__": 6,
}
ROOT = 6  # ckptlint/__init__.py: the public names, each loaded on first use

# where heavy third-party packages may be imported
CONFINED = {"torch": {"build", "readers"}, "libcst": {"source"}, "safetensors": {"build", "readers"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(name: str) -> str:
    """`ckptlint.run.cache` -> `run`; `ckptlint` itself -> ``."""
    return name.split(".")[1] if name.count(".") else ""


def ours(name: str) -> bool:
    return name == "ckptlint" or name.startswith("ckptlint.")


def layer_of(name: str) -> int:
    return LAYERS[part_of(name)] if part_of(name) else ROOT


def _typing_only(tree: ast.AST) -> set[int]:
    """The ids of import nodes under `if TYPE_CHECKING:`."""
    return {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
            and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
            for stmt in block.body for node in ast.walk(stmt)}


def imports(path: Path, name: str, modules: set[str],
            runtime: bool = False) -> list[tuple[str, int]]:
    """(imported name, line) of every import in the file, relative ones resolved; a name
    imported from a package resolves to its submodule when there is one. `runtime`: leave out
    the imports under `if TYPE_CHECKING:`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skip = _typing_only(tree) if runtime else set()
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full in modules else base, node.lineno))
    return found + _lazy_tables(tree, package, modules)


def _lazy_tables(tree: ast.Module, package: str, modules: set[str]) -> list[tuple[str, int]]:
    """A module-level dict whose values name modules (`"dispatch"`, `"ckptlint.reporters.json"`)
    is a table of imports made on first use through `importlib`: they count too."""
    found = []
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(value, ast.Dict) or not value.values:
            continue
        names = [v.value for v in value.values
                 if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        resolved = [n if n in modules else f"{package}.{n}" for n in names]
        if len(resolved) == len(value.values) and all(r in modules for r in resolved):
            found += [(r, node.lineno) for r in resolved]
    return found


def graph(runtime: bool = False) -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules = set(files)
    return {name: imports(path, name, modules, runtime) for name, path in files.items()}


def upward(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    wrong = []
    for source, targets in edges.items():
        for target, line in targets:
            if not ours(target) or part_of(target) == part_of(source):
                continue
            if layer_of(target) >= layer_of(source):
                wrong.append(f"{source}:{line} imports {target} "
                             f"(layer {layer_of(target)} into {layer_of(source)})")
    return wrong


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Every import loop, found by a depth-first walk (each reported from its first member)."""
    graph_ = {s: sorted({t for t, _ in ts if t in edges and t != s}) for s, ts in edges.items()}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph_[node]:
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for start in graph_:
        if start not in state:
            visit(start, [start])
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {part_of(name) for name in graph()} - {""}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a layer in LAYERS"


def test_imports_only_go_down() -> None:
    assert upward(graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(graph(runtime=True)) == []


@pytest.mark.parametrize("package", sorted(CONFINED))
def test_heavy_packages_stay_where_they_belong(package: str) -> None:
    wrong = [f"{source}:{line} imports {target}"
             for source, targets in graph().items() for target, line in targets
             if (target == package or target.startswith(package + "."))
             and part_of(source) not in CONFINED[package]]
    assert wrong == []


# -- the checks themselves catch what they are for ------------------------------------------------

def test_an_upward_import_is_caught() -> None:
    edges = {"ckptlint.core.keys": [("ckptlint.run.cache", 3)], "ckptlint.run.cache": []}
    assert upward(edges) == ["ckptlint.core.keys:3 imports ckptlint.run.cache (layer 3 into 0)"]


def test_a_sibling_layer_import_is_caught() -> None:
    edges = {"ckptlint.build.isolate": [("ckptlint.source.cst", 9)], "ckptlint.source.cst": []}
    assert upward(edges) == ["ckptlint.build.isolate:9 imports ckptlint.source.cst "
                             "(layer 2 into 2)"]


def test_a_loop_is_caught() -> None:
    edges = {"a": [("b", 1)], "b": [("c", 1)], "c": [("a", 1)]}
    assert cycles(edges) == [["a", "b", "c", "a"]]


def test_relative_lazy_and_typing_imports_are_read(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from . import keys\nif TYPE_CHECKING:\n    from ckptlint import api\n\n"
                      "def f():\n    from ckptlint.run import cache\n")
    modules = {"ckptlint.core.keys", "ckptlint.run.cache", "ckptlint.api"}
    found = sorted(imports(source, "ckptlint.core.m", modules), key=lambda i: i[1])
    assert found == [("ckptlint.core.keys", 1), ("ckptlint.api", 3), ("ckptlint.run.cache", 6)]
    assert ("ckptlint.api", 3) not in imports(source, "ckptlint.core.m", modules, runtime=True)


def test_a_table_of_lazy_imports_is_read(tmp_path: Path) -> None:
    source = tmp_path / "__init__.py"
    source.write_text('_EXPORTS = {"read": "dispatch", "open": "files"}\n')
    modules = {"ckptlint.readers.dispatch", "ckptlint.readers.files"}
    assert imports(source, "ckptlint.readers", modules) == [
        ("ckptlint.readers.dispatch", 1), ("ckptlint.readers.files", 1)]


def test_importing_the_root_from_below_is_caught() -> None:
    edges = {"ckptlint.run.cache": [("ckptlint", 27)], "ckptlint": []}
    assert upward(edges) == ["ckptlint.run.cache:27 imports ckptlint (layer 6 into 3)"]


def test_no_module_is_over_400_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > 400} == {}
