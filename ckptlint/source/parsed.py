"""The project's files as `init` reads them without importing anything: each module's
definitions, imports and aliases (`Source`), and where a module's file is (`Finder`)."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass
class Source:
    """One parsed file: its definitions, import bindings, star imports and script statements
    (module level, outside functions and classes, including `if __name__ == "__main__":`)."""

    name: str
    path: Path | None
    package: bool
    project: bool
    defs: dict[str, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef] = field(
        default_factory=dict)
    bindings: dict[str, list[ast.AST]] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)
    script: list[ast.stmt] = field(default_factory=list)
    values: dict[str, ast.expr] = field(default_factory=dict)  # module-level `NAME = value`

    def absolute(self, module: str | None, level: int) -> str:
        """The absolute name of `from <level dots><module> import ...` in this file."""
        if not level:
            return module or ""
        parts = self.name.split(".")
        base = parts[:len(parts) - level + (1 if self.package else 0)]
        return ".".join(base + ([module] if module else []))


def _parse(name: str, path: Path | None, package: bool, project: bool) -> Source:
    source = Source(name, path, package, project)
    if path is None:  # a namespace package: only its submodules exist
        return source
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError):
        return source  # unreadable or not Python this interpreter parses: it defines nothing
    _collect(source, tree.body, "", False)
    return source


def _collect(source: Source, body: Sequence[ast.stmt], scope: str, script: bool) -> None:
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            if not script:  # a class of a script block is not part of the importable module
                source.defs[scope + stmt.name] = stmt
                _collect(source, [s for s in stmt.body if isinstance(s, ast.ClassDef)],
                         f"{scope}{stmt.name}.", False)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not scope and not script:
                source.defs[stmt.name] = stmt
        elif scope:
            continue
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            _bind_import(source, stmt)
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            guard = isinstance(stmt, ast.If) and _is_main_guard(stmt.test)
            for part in ("body", "orelse", "finalbody"):
                _collect(source, getattr(stmt, part, []), "", script or (guard and part == "body"))
            for handler in getattr(stmt, "handlers", []):
                _collect(source, handler.body, "", script)
        else:
            _bind_alias(source, stmt)
            source.script.append(stmt)


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _bind_import(source: Source, stmt: ast.Import | ast.ImportFrom) -> None:
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            bound = alias.asname or alias.name.partition(".")[0]
            module = alias.name if alias.asname else bound
            source.bindings.setdefault(bound, []).append(ast.Constant(module))
        return
    module = source.absolute(stmt.module, stmt.level)
    for alias in stmt.names:
        if alias.name == "*":
            source.stars.append(module)
        else:
            pair = ast.Tuple([ast.Constant(module), ast.Constant(alias.name)])
            source.bindings.setdefault(alias.asname or alias.name, []).append(pair)


def _bind_alias(source: Source, stmt: ast.stmt) -> None:
    """`Norm = nn.LayerNorm` at module level: the name stands for what the value names;
    `BLOCKS = dict(basic=BasicBlock)` is kept as a registry its users draw classes from."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)):
        source.values[stmt.targets[0].id] = stmt.value
        if isinstance(stmt.value, (ast.Name, ast.Attribute)):
            source.bindings.setdefault(stmt.targets[0].id, []).append(stmt.value)


class Finder:
    """Module name -> parsed source: the project's own files first, then the search path
    (project roots, the project's virtualenv, this interpreter's sys.path). Each dotted name is
    looked up along the whole path rather than inside its parent package's `__path__`: the
    same answer for the usual layouts, without importing any package to learn its path."""

    def __init__(self, project: dict[str, Path], search: Sequence[str]):
        self._project = project
        self._search = [Path(p) for p in dict.fromkeys(search) if p and os.path.isdir(p)]
        self._sources: dict[str, Source | None] = {}

    def source(self, name: str) -> Source | None:
        if name not in self._sources:
            self._sources[name] = self._load(name) if name else None
        return self._sources[name]

    def _load(self, name: str) -> Source | None:
        path = self._project.get(name)
        if path is not None:
            return _parse(name, path, path.name == "__init__.py", True)
        found = self._locate(name.split("."))
        if found is None:
            return None
        path, package = found
        return _parse(name, path, package, False)

    def _locate(self, parts: list[str]) -> tuple[Path | None, bool] | None:
        """(file, is a package) of a regular module; (None, True) for a namespace package."""
        namespace = False
        for entry in self._search:
            directory = entry.joinpath(*parts)
            if directory.joinpath("__init__.py").is_file():
                return directory / "__init__.py", True
            if directory.with_suffix(".py").is_file():
                return directory.with_suffix(".py"), False
            namespace = namespace or directory.is_dir()
        return (None, True) if namespace else None
