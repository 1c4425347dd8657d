"""What `ckptlint init` proposes, found statically: the project's classes whose bases resolve to
`torch.nn.Module` (through imports, the project's own classes and installed packages' sources),
public module-level `build_*`/`create_*` functions that return one, which of them are main models,
and the config dataclasses that build them. Nothing is imported or executed.

Parses with the standard library's `ast`, not libcst: only names, bases and line numbers matter
here, and installed packages (torch.nn, lightning, diffusers...) are parsed too, where ast is
5-10x faster (x_transformers.py: 54 ms against 518 ms).
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

# directories that hold no project model code: environments, build output, tests
_SKIP_DIRS = frozenset({"venv", "site-packages", "dist-packages", "build", "dist", "tests",
                        "test", "testing", "__pycache__", "node_modules", "__pypackages__"})
_SKIP_FILES = re.compile(r"^(test_.*|.*_test|conftest|setup|noxfile|mocks?(_.*)?)\.py$")
# test doubles are never models a project registers, wherever they live
_MOCK = re.compile(r"^(Mock|Fake|Dummy|Stub)|(Mock|Fake|Dummy|Stub)$")
_FACTORY = re.compile(r"^(build|create)_\w+$")
# where the class hierarchy ends: torch's own Module (as `torch.nn.Module` or its home)
_ROOT = ("torch.nn.modules.module", "Module")
_ROOT_NAMES = frozenset({"torch.nn.Module", "torch.nn.modules.Module",
                         "torch.nn.modules.module.Module"})
# torch.nn classes that are not Modules; used only when torch's sources cannot be found
_NN_NOT_MODULES = frozenset({"Parameter", "Buffer", "UninitializedParameter",
                             "UninitializedBuffer"})
_TYPE_TESTS = frozenset({"isinstance", "issubclass", "super", "type"})
_NESTED_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
# `_build_sam` -> `_build_sam_vit` -> ... : how far returns are followed through helpers
_RETURN_DEPTH = 4


@dataclass(frozen=True, slots=True)
class Param:
    """A constructor or factory argument; `required` when it has no default and is not
    `*args`/`**kwargs`."""

    name: str
    required: bool


@dataclass(frozen=True, slots=True)
class Proposal:
    """A class or factory that builds an nn.Module. `params` is None when its `__init__` comes
    from code that could not be read. `configs` maps required arguments to the config dataclass
    (its target) that builds them from its defaults. `main` models are pre-selected; `role` says
    why another is not ("part of pkg.mod:Net", "wraps the model passed as `net`")."""

    target: str
    kind: str  # "class" or "factory"
    file: str  # relative to the project root, with `/`
    line: int
    params: tuple[Param, ...] | None
    configs: tuple[tuple[str, str], ...] = ()
    main: bool = False
    role: str = ""

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params or () if p.required)


@dataclass(frozen=True, slots=True)
class Discovery:
    """Every proposal in file order, and the classes left out because a base could not be
    followed to torch.nn.Module (`target (Base)`)."""

    proposals: tuple[Proposal, ...]
    unresolved: tuple[str, ...]
    files: int


# -- parsed files ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Def:
    """A class or function of a parsed file; `node` is None for a torch.nn name taken on trust
    because torch's sources were not found."""

    module: str
    qualname: str
    node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef | None

    @property
    def key(self) -> tuple[str, str]:
        return self.module, self.qualname

    @property
    def target(self) -> str:
        return f"{self.module}:{self.qualname}"


@dataclass(frozen=True, slots=True)
class _Mod:
    name: str


_BUILTIN = "builtin"  # a builtin name (`object`, `dict`): never a Module
_Found = Union[_Def, _Mod, str, None]


@dataclass
class _Source:
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


def _parse(name: str, path: Path | None, package: bool, project: bool) -> _Source:
    source = _Source(name, path, package, project)
    if path is None:  # a namespace package: only its submodules exist
        return source
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError):
        return source  # unreadable or not Python this interpreter parses: it defines nothing
    _collect(source, tree.body, "", False)
    return source


def _collect(source: _Source, body: Sequence[ast.stmt], scope: str, script: bool) -> None:
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


def _bind_import(source: _Source, stmt: ast.Import | ast.ImportFrom) -> None:
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


def _bind_alias(source: _Source, stmt: ast.stmt) -> None:
    """`Norm = nn.LayerNorm` at module level: the name stands for what the value names;
    `BLOCKS = dict(basic=BasicBlock)` is kept as a registry its users draw classes from."""
    if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)):
        source.values[stmt.targets[0].id] = stmt.value
        if isinstance(stmt.value, (ast.Name, ast.Attribute)):
            source.bindings.setdefault(stmt.targets[0].id, []).append(stmt.value)


# -- finding modules without importing them -------------------------------------------------


class _Finder:
    """Module name -> parsed source: the project's own files first, then the search path
    (project roots, the project's virtualenv, this interpreter's sys.path), as Python would."""

    def __init__(self, project: dict[str, Path], search: Sequence[str]):
        self._project = project
        self._search = [Path(p) for p in dict.fromkeys(search) if p and os.path.isdir(p)]
        self._sources: dict[str, _Source | None] = {}

    def source(self, name: str) -> _Source | None:
        if name not in self._sources:
            self._sources[name] = self._load(name) if name else None
        return self._sources[name]

    def _load(self, name: str) -> _Source | None:
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
            if directory.with_suffix(".py").is_file() and directory.parent.is_dir():
                return directory.with_suffix(".py"), False
            namespace = namespace or directory.is_dir()
        return (None, True) if namespace else None


# -- resolving names -------------------------------------------------------------------------


class _Resolver:
    """Follows names through imports, star imports and aliases to the class or function they
    stand for, and answers whether a class is an nn.Module (None: a base could not be read)."""

    def __init__(self, finder: _Finder):
        self.finder = finder
        self._modules: dict[tuple[str, str], bool | None] = {}
        self._busy: set[tuple[str, ...]] = set()

    def lookup(self, module: str, name: str) -> _Found:
        """What `name` is in `module` (a class, function, submodule), or None."""
        if f"{module}.{name}" in _ROOT_NAMES:
            return _Def(*_ROOT, None)
        key = ("lookup", module, name)
        if key in self._busy:
            return None  # a cycle of re-exports
        self._busy.add(key)
        try:
            return self._lookup(module, name)
        finally:
            self._busy.discard(key)

    def _lookup(self, module: str, name: str, own: bool = True) -> _Found:
        source = self.finder.source(module)
        if source is None:
            trusted = module.startswith("torch.nn") and name[:1].isupper()
            return _Def(module, name, None) if trusted else None
        if own and name in source.defs:
            return _Def(module, name, source.defs[name])
        for binding in source.bindings.get(name, []):
            found = self._binding(source, binding)
            if found is not None:
                return found
        for star in source.stars:
            found = self.lookup(star, name)
            if found is not None:
                return found
        if source.package and self.finder.source(f"{module}.{name}") is not None:
            return _Mod(f"{module}.{name}")
        return None

    def _binding(self, source: _Source, binding: ast.AST) -> _Found:
        if isinstance(binding, ast.Constant):  # `import a.b` / `import a.b as c`
            return _Mod(binding.value) if self.finder.source(binding.value) else None
        if isinstance(binding, ast.Tuple):  # `from m import n`
            module, name = (e.value for e in binding.elts)  # type: ignore[attr-defined]
            if self.finder.source(f"{module}.{name}") is not None and \
                    f"{module}.{name}" not in _ROOT_NAMES:
                return _Mod(f"{module}.{name}")
            return self.lookup(module, name)
        return self.expr(source, binding)  # type: ignore[arg-type]

    def expr(self, source: _Source, node: ast.expr, scope: str = "") -> _Found:
        """What an expression in `source` names (`nn.Linear`, `Base[T]`, `"Config"`)."""
        if isinstance(node, ast.Name):
            return self.name(source, node.id, scope)
        if isinstance(node, ast.Attribute):
            return self._attribute(self.expr(source, node.value, scope), node.attr)
        if isinstance(node, ast.Subscript):
            return self.expr(source, node.value, scope)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:  # a string annotation: `config: "GPTConfig"`
                parsed = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
            return self.expr(source, parsed, scope) if not isinstance(parsed, ast.Constant) \
                else None
        return None

    def _attribute(self, owner: _Found, attr: str) -> _Found:
        if isinstance(owner, _Mod):
            return self.lookup(owner.name, attr)
        if isinstance(owner, _Def) and isinstance(owner.node, ast.ClassDef):
            source = self.finder.source(owner.module)
            nested = f"{owner.qualname}.{attr}"
            if source is not None and nested in source.defs:
                return _Def(owner.module, nested, source.defs[nested])
        return None

    def name(self, source: _Source, name: str, scope: str = "") -> _Found:
        """A bare name seen in `source`, inside class `scope` (nested classes see outer ones)."""
        parts = scope.split(".") if scope else []
        for depth in range(len(parts), 0, -1):
            nested = ".".join(parts[:depth] + [name])
            if nested in source.defs:
                return _Def(source.name, nested, source.defs[nested])
        found = self.lookup(source.name, name)
        if found is None and hasattr(builtins, name):
            return _BUILTIN
        return found

    def is_module(self, found: _Found) -> bool | None:
        """True when the class's bases lead to torch.nn.Module; None when a base is unknown."""
        if not isinstance(found, _Def):
            return False if found is not None else None
        if found.key == _ROOT:
            return True
        if found.node is None:
            return found.qualname not in _NN_NOT_MODULES
        if not isinstance(found.node, ast.ClassDef):
            return False
        if found.key not in self._modules:
            self._modules[found.key] = None  # in progress: a cycle is unknown
            self._modules[found.key] = self._bases_are_modules(found)
        return self._modules[found.key]

    def _bases_are_modules(self, found: _Def) -> bool | None:
        answers = [self.is_module(base) for base in self.bases(found)]
        if True in answers:
            return True
        return None if None in answers else False

    def bases(self, found: _Def) -> list[_Found]:
        assert isinstance(found.node, ast.ClassDef)
        source = self.finder.source(found.module)
        if source is None:
            return [None for _ in found.node.bases]
        scope = found.qualname.rpartition(".")[0]
        return [self._imported(found.module, base.id)
                if isinstance(base, ast.Name) and base.id == found.qualname
                else self.expr(source, base, scope) for base in found.node.bases]

    def _imported(self, module: str, name: str) -> _Found:
        """`class Block(Block)`: the base is the imported name the class then shadows."""
        key = ("imported", module, name)
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            return self._lookup(module, name, own=False)
        finally:
            self._busy.discard(key)


# -- constructors ----------------------------------------------------------------------------


def _params(function: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[ast.arg]:
    args = function.args
    every = [*args.posonlyargs, *args.args]
    return every[1:] if method else every


def _own_params(function: ast.FunctionDef | ast.AsyncFunctionDef,
                method: bool) -> tuple[Param, ...]:
    args = function.args
    positional = _params(function, method)
    defaults = len(args.defaults)
    first_default = len([*args.posonlyargs, *args.args]) - defaults
    offset = 1 if method else 0
    params = [Param(a.arg, i + offset < first_default) for i, a in enumerate(positional)]
    params += [Param(a.arg, d is None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return tuple(params)


def _method(node: ast.ClassDef, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for stmt in _class_statements(node):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
            return stmt
    return None


def _class_statements(node: ast.ClassDef) -> Iterator[ast.stmt]:
    """The class body's statements, also under `if`/`try` (conditional method definitions)."""
    stack = list(reversed(node.body))
    while stack:
        stmt = stack.pop()
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try)):
            nested = [*stmt.body, *stmt.orelse, *getattr(stmt, "finalbody", [])]
            stack.extend(reversed(nested))


def _forwards_to_super(init: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Call | None:
    """`super().__init__(..., **kwargs)` passing on the `*args`/`**kwargs` of `init`."""
    star = {a.arg for a in (init.args.vararg, init.args.kwarg) if a is not None}
    for node in ast.walk(init):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "__init__" and isinstance(node.func.value, ast.Call)
                and isinstance(node.func.value.func, ast.Name)
                and node.func.value.func.id == "super"):
            passed = [a.value for a in node.args if isinstance(a, ast.Starred)] + \
                [k.value for k in node.keywords if k.arg is None]
            if any(isinstance(p, ast.Name) and p.id in star for p in passed):
                return node
    return None


class _Inits:
    """Each class's constructor: its own `__init__` or the first one found along its bases
    (depth first, left to right: Python's order for the usual single-inheritance chains)."""

    def __init__(self, resolver: _Resolver):
        self.resolver = resolver
        self._found: dict[tuple[str, str], tuple[_Def, ast.FunctionDef | ast.AsyncFunctionDef]
                          | str | None] = {}

    def init(self, cls: _Def) -> tuple[_Def, ast.FunctionDef | ast.AsyncFunctionDef] | str | None:
        """(owner, `__init__`), "root" when torch.nn.Module's (no arguments) is the one used,
        None when it is in code that could not be read."""
        if cls.key not in self._found:
            self._found[cls.key] = None  # a cycle of bases is unknown
            self._found[cls.key] = self._init(cls)
        return self._found[cls.key]

    def _init(self, cls: _Def) -> tuple[_Def, ast.FunctionDef | ast.AsyncFunctionDef] | str | None:
        if cls.key == _ROOT or cls.node is None and cls.qualname == "Module":
            return "root"
        if not isinstance(cls.node, ast.ClassDef):
            return None
        own = _method(cls.node, "__init__")
        if own is not None:
            return cls, own
        for base in self.resolver.bases(cls):
            if base == _BUILTIN:
                continue  # object, Generic...: their __init__ takes nothing
            if not isinstance(base, _Def):
                return None
            found = self.init(base)
            if found is not None:
                return found
        return "root" if not cls.node.bases or all(
            b == _BUILTIN for b in self.resolver.bases(cls)) else None

    def params(self, cls: _Def) -> tuple[Param, ...] | None:
        found = self.init(cls)
        if found is None or found == "root":
            return None if found is None else ()
        owner, init = found  # type: ignore[misc]
        own = _own_params(init, method=True)
        call = _forwards_to_super(init)
        if call is None:
            return own
        return self._forwarded(owner, call, own)

    def _forwarded(self, owner: _Def, call: ast.Call,
                   own: tuple[Param, ...]) -> tuple[Param, ...] | None:
        """`def __init__(self, **kwargs): super().__init__(causal=False, **kwargs)` needs what
        the base needs, less what the call passes itself."""
        bases = [b for b in self.resolver.bases(owner) if isinstance(b, _Def)]
        inherited = self.params(bases[0]) if bases else ()
        if inherited is None:
            return None
        given = {k.arg for k in call.keywords if k.arg} | {p.name for p in own}
        positional = len([a for a in call.args if not isinstance(a, ast.Starred)])
        rest = [p for p in inherited[positional:] if p.name not in given]
        return own + tuple(rest)


# -- how classes use each other --------------------------------------------------------------


def _value_refs(node: ast.AST) -> Iterator[ast.expr]:
    """Names and dotted names used as values inside `node`: not annotations, not the classes
    of `isinstance`/`super(...)`, not nested classes, not the owner of an attribute
    (`Config.from_name` is a method, `nn.Linear` is one name)."""
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (ast.Name, ast.Attribute)) and _dotted(current):
            yield current  # type: ignore[misc]
            continue
        if isinstance(current, ast.Call) and isinstance(current.func, ast.Name) \
                and current.func.id in _TYPE_TESTS:
            continue
        for name, value in ast.iter_fields(current):
            if name in ("annotation", "returns", "bases", "decorator_list", "type_comment"):
                continue
            children = value if isinstance(value, list) else [value]
            stack.extend(c for c in reversed(children) if isinstance(c, ast.AST)
                         and not (isinstance(c, ast.ClassDef) and c is not node))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _head(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _instance_methods(node: ast.ClassDef) -> list[ast.stmt]:
    """The class body without static and class methods (alternative constructors such as
    `from_pretrained` build the class, they are not part of it)."""
    def special(stmt: ast.stmt) -> bool:
        return isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
            _dotted(d) in ("staticmethod", "classmethod") for d in stmt.decorator_list)
    return [stmt for stmt in node.body if not special(stmt)]


def _self_assignments(init: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[str, ast.expr]]:
    for node in ast.walk(init):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id == "self":
                    yield target.attr, node.value


def _registers(init: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """`self.register_buffer(...)`, `self.add_module(...)`: the class creates state itself."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "self"
               and n.func.attr in ("register_buffer", "register_parameter", "add_module",
                                   "register_module")
               for n in ast.walk(init))


# -- the project -----------------------------------------------------------------------------

_Key = tuple[str, str]


class _Project:
    """The project's nn.Module classes and what their code uses, resolved."""

    def __init__(self, root: Path, modules: dict[str, Path], search: Sequence[str]):
        self.root = root
        self.finder = _Finder(modules, search)
        self.resolver = _Resolver(self.finder)
        self.inits = _Inits(self.resolver)
        self.sources = [s for s in map(self.finder.source, modules) if s is not None]
        classes = [_Def(s.name, q, n) for s in self.sources for q, n in s.defs.items()
                   if isinstance(n, ast.ClassDef)]
        verdicts = {c.key: self.resolver.is_module(c) for c in classes}
        self.classes = [c for c in classes if verdicts[c.key]]
        self.unknown = [c for c in classes if verdicts[c.key] is None]
        self.keys = {c.key for c in self.classes}
        self._refs: dict[_Key, frozenset[_Key]] = {}
        self._taken: dict[_Key, tuple[str, _Def | None] | None] = {}

    def source(self, found: _Def) -> _Source:
        source = self.finder.source(found.module)
        assert source is not None
        return source

    def model(self, source: _Source, node: ast.expr, scope: str = "") -> _Def | None:
        """The project Module class an expression names, if it names one."""
        found = self.resolver.expr(source, node, scope)
        return found if isinstance(found, _Def) and found.key in self.keys else None

    def refs(self, source: _Source, nodes: Sequence[ast.AST], scope: str) -> frozenset[_Key]:
        """The project Module classes `nodes` use as values, also through the project's
        functions and module-level registries (`BLOCKS = dict(basic=BasicBlock)`)."""
        found: set[_Key] = set()
        for node in nodes:
            for ref in _value_refs(node):
                target = self.resolver.expr(source, ref, scope)
                if isinstance(target, _Def) and target.key in self.keys:
                    found.add(target.key)
                elif isinstance(target, _Def) and self._is_project_function(target):
                    found |= self._cached(target.key, lambda t=target: [t.node])  # type: ignore
                elif _head(ref) in source.values:  # `BLOCKS[kind]`, `BLOCKS.get(kind)`
                    name = _head(ref)
                    found |= self._cached((source.name, name),
                                          lambda n=name: [source.values[n]])  # type: ignore
        return frozenset(found)

    def _cached(self, key: _Key, nodes: Callable[[], list[ast.AST]]) -> frozenset[_Key]:
        if key not in self._refs:
            self._refs[key] = frozenset()  # recursion sees what is known so far
            source = self.finder.source(key[0])
            assert source is not None
            self._refs[key] = self.refs(source, nodes(), "")
        return self._refs[key]

    def _is_project_function(self, found: _Def) -> bool:
        source = self.finder.source(found.module)
        return source is not None and source.project and isinstance(
            found.node, (ast.FunctionDef, ast.AsyncFunctionDef))

    def class_refs(self, cls: _Def) -> frozenset[_Key]:
        assert isinstance(cls.node, ast.ClassDef)
        return self.refs(self.source(cls), _instance_methods(cls.node), cls.qualname)

    def project_bases(self, cls: _Def) -> list[_Def]:
        return [b for b in self.resolver.bases(cls) if isinstance(b, _Def) and b.key in self.keys]

    def ancestors(self, cls: _Def) -> set[_Key]:
        seen: set[_Key] = set()
        stack = self.project_bases(cls)
        while stack:
            base = stack.pop()
            if base.key not in seen:
                seen.add(base.key)
                stack.extend(self.project_bases(base))
        return seen

    # -- constructors -----------------------------------------------------------------------

    def creates_state(self, cls: _Def, init: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """Whether `__init__` makes a submodule, parameter or buffer of its own."""
        source = self.source(cls)
        for _, value in _self_assignments(init):
            if isinstance(value, ast.Call):
                made = self.resolver.expr(source, value.func, cls.qualname)
                if self.resolver.is_module(made) or (isinstance(made, _Def)
                                                     and made.qualname == "Parameter"):
                    return True
        return _registers(init)

    def takes_model(self, cls: _Def) -> tuple[str, _Def | None] | None:
        """The one required `__init__` argument kept as a submodule (`self.net = net`, then
        called or annotated with a Module class): its name, and the project class it is
        annotated with, if any."""
        if cls.key not in self._taken:
            self._taken[cls.key] = self._takes_model(cls)
        return self._taken[cls.key]

    def _takes_model(self, cls: _Def) -> tuple[str, _Def | None] | None:
        assert isinstance(cls.node, ast.ClassDef)
        init = _method(cls.node, "__init__")
        if init is None:
            return None
        args = {a.arg: a for a in [*_params(init, method=True), *init.args.kwonlyargs]}
        required = {p.name for p in _own_params(init, method=True) if p.required}
        kept = [(attr, v.id) for attr, v in _self_assignments(init)
                if isinstance(v, ast.Name) and v.id in required]
        called = _called_attributes(cls.node) if kept else set()
        models = []
        for attr, arg in kept:
            note = args[arg].annotation
            named = self.resolver.expr(self.source(cls), note, cls.qualname) if note else None
            if attr in called or self.resolver.is_module(named):
                models.append((arg, named if isinstance(named, _Def) and named.key in self.keys
                               else None))
        # one model passed in is wrapped; several are assembled (Sam(encoder, decoder))
        return models[0] if len({arg for arg, _ in models}) == 1 else None

    def returns(self, function: _Def, depth: int = 0) -> _Def | None:
        """The Module class a factory returns: by its annotation, or what its `return`
        statements build (directly, through a local name, or through another function)."""
        node, source = function.node, self.source(function)
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if node.returns is not None:
            named = self.resolver.expr(source, node.returns)
            if self.resolver.is_module(named):
                return named  # type: ignore[return-value]
        if depth > _RETURN_DEPTH:
            return None
        local = {t.id: s.value for s in ast.walk(node) if isinstance(s, ast.Assign)
                 for t in s.targets if isinstance(t, ast.Name)}
        for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value):
            value = local.get(ret.value.id, ret.value) if isinstance(ret.value, ast.Name) \
                else ret.value
            if isinstance(value, ast.Call):
                made = self.resolver.expr(source, value.func)
                if self.resolver.is_module(made):
                    return made  # type: ignore[return-value]
                if isinstance(made, _Def) and self._is_project_function(made):
                    found = self.returns(made, depth + 1)
                    if found is not None:
                        return found
        return None


def _called_attributes(node: ast.ClassDef) -> set[str]:
    """`x` for every `self.x(...)` in the class."""
    return {n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "self"}


# -- roles: main models, parts, wrappers -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Roles:
    """Who uses whom. A class that another class builds, takes as a default, or keeps from an
    argument annotated with it is a part of it; so is a base of parts, a subclass of a part
    that nothing uses, and a class a config dataclass names as a string (litgpt's
    `mlp_class_name: Literal["GptNeoxMLP", "LLaMAMoE"]`, looked up with getattr). A class that
    keeps a whole model passed in (`self.net = net`) is a wrapper. Being used as a whole model
    outweighs being a part: built by module-level code (train.py, an
    `if __name__ == "__main__":` demo) or wrapped by a wrapper."""

    users: dict[_Key, list[_Key]]
    bases: dict[_Key, list[_Key]]
    subclasses: dict[_Key, list[_Key]]
    wrappers: dict[_Key, str]
    whole: frozenset[_Key]
    chosen: dict[_Key, _Key]

    def part_of(self, key: _Key, seen: frozenset[_Key] = frozenset()) -> str | None:
        """Why `key` is a part ("part of pkg.mod:Net", "base of ...", "variant of ..."),
        or None."""
        if self.users.get(key):
            first, more = self.users[key][0], len(self.users[key]) - 1
            return f"part of {':'.join(first)}" + (f" and {more} more" if more else "")
        for sub in self.subclasses.get(key, []):
            if sub not in seen and self.part_of(sub, seen | {key}) is not None:
                return f"base of {':'.join(sub)}"
        if key in self.chosen:
            return f"chosen by name in {':'.join(self.chosen[key])}"
        for base in self.bases.get(key, []):
            if self.users.get(base) and base not in self.whole:
                return f"variant of {':'.join(base)}"
        return None

    def role(self, key: _Key) -> str:
        """Why the class is not a main model; "" when it is one."""
        if key in self.wrappers:  # a wrapper inside another model is a part of it
            return self.part_of(key) or f"wraps the model passed as `{self.wrappers[key]}`"
        return "" if key in self.whole else self.part_of(key) or ""


def _roles(project: _Project) -> _Roles:
    users: dict[_Key, list[_Key]] = {}
    bases: dict[_Key, list[_Key]] = {}
    subclasses: dict[_Key, list[_Key]] = {}
    for cls in project.classes:
        bases[cls.key] = [b.key for b in project.project_bases(cls)]
        for base in bases[cls.key]:
            subclasses.setdefault(base, []).append(cls.key)
        for used in sorted(project.class_refs(cls) - project.ancestors(cls) - {cls.key}):
            users.setdefault(used, []).append(cls.key)
    for source in project.sources:
        for part, whole in _nested_builds(project, source):
            users.setdefault(part, []).append(whole)
    wrappers, whole = _wrappers(project)
    for cls in project.classes:
        taken = project.takes_model(cls)
        if cls.key not in wrappers and taken is not None and taken[1] is not None:
            users.setdefault(taken[1].key, []).append(cls.key)  # TW(attn_layers: Layers)
    return _Roles({k: sorted(set(v)) for k, v in users.items()}, bases, subclasses, wrappers,
                  frozenset(whole), _named_by_configs(project))


def _named_by_configs(project: _Project) -> dict[_Key, _Key]:
    """Project models whose class name is a string in a dataclass's body: chosen by config."""
    by_name: dict[str, list[_Key]] = {}
    for cls in project.classes:
        by_name.setdefault(cls.qualname.rpartition(".")[2], []).append(cls.key)
    chosen: dict[_Key, _Key] = {}
    for source in project.sources:
        for qualname, node in source.defs.items():
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                for const in ast.walk(node):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        for key in by_name.get(const.value, []):
                            chosen.setdefault(key, (source.name, qualname))
    return chosen


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any((_dotted(d.func if isinstance(d, ast.Call) else d) or "").rpartition(".")[2]
               == "dataclass" for d in node.decorator_list)


def _wrappers(project: _Project) -> tuple[dict[_Key, str], set[_Key]]:
    """The wrappers, and the models used whole. First the certain wrappers (no state of their
    own besides the model passed in) and what scripts build through them; then the classes
    that keep a model passed in that is unannotated, a generic Module, or a model used whole."""
    taken = {c.key: (c, project.takes_model(c)) for c in project.classes}
    pure = {key: arg[0] for key, (cls, arg) in taken.items() if arg is not None
            and not project.creates_state(cls, _method(cls.node, "__init__"))}  # type: ignore
    whole = {arg[1].key for key, (_, arg) in taken.items() if key in pure and arg and arg[1]}
    for source in project.sources:
        whole |= _built_in_scripts(project, source, pure)
    wrappers = dict(pure)
    for key, (_, arg) in taken.items():
        if arg is not None and (arg[1] is None or arg[1].key in whole):
            wrappers[key] = arg[0]
            whole |= {arg[1].key} if arg[1] is not None else set()
    return wrappers, whole


def _built_in_scripts(project: _Project, source: _Source, wrappers: dict[_Key, str],
                      ) -> set[_Key]:
    """The outermost project models built by module-level code (`model = GPT(config)` in
    train.py, a `__main__` demo), looking through wrappers: `Wrapper(GPT(...))` builds GPT."""
    found: set[_Key] = set()
    stack: list[ast.AST] = list(source.script)
    while stack:
        node = stack.pop()
        if isinstance(node, _NESTED_DEFS):
            continue
        if isinstance(node, ast.Call):
            made = project.model(source, node.func)
            if made is not None and made.key not in wrappers:
                found.add(made.key)
                continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _nested_builds(project: _Project, source: _Source) -> Iterator[tuple[_Key, _Key]]:
    """(part, model) for each project model built as an argument of another's constructor
    outside class bodies: `Sam(mask_decoder=MaskDecoder(transformer=TwoWayTransformer()))`
    in a factory, `TransformerWrapper(attn_layers=Decoder(...))` in a script."""
    roots = [n for n in source.defs.values() if not isinstance(n, ast.ClassDef)]
    stack: list[tuple[ast.AST, _Key | None]] = [(n, None) for n in [*roots, *source.script]]
    while stack:
        node, outer = stack.pop()
        made = project.model(source, node.func) if isinstance(node, ast.Call) else None
        if made is not None:
            if outer is not None and outer != made.key:
                yield made.key, outer
            stack.extend((a, made.key) for a in [*node.args, *node.keywords])  # type: ignore
        elif not isinstance(node, ast.ClassDef):
            stack.extend((child, outer) for child in ast.iter_child_nodes(node))


# -- configs ---------------------------------------------------------------------------------


def _defaulted_fields(project: _Project, found: _Found) -> frozenset[str] | None:
    """The fields of a project dataclass whose fields all have defaults, else None."""
    if not (isinstance(found, _Def) and isinstance(found.node, ast.ClassDef)
            and project.finder.source(found.module) is not None
            and project.source(found).project and _is_dataclass(found.node)):
        return None
    inherited = [_defaulted_fields(project, base) for base in project.resolver.bases(found)]
    if None in inherited:
        return None  # a base that is not such a dataclass may add required fields
    fields = [s for s in found.node.body if isinstance(s, ast.AnnAssign)
              and isinstance(s.target, ast.Name)
              and not re.match(r"(typing\.|dataclasses\.)?(ClassVar|InitVar)\b",
                               ast.unparse(s.annotation))]
    if not all(f.value is not None and not _required_field(f.value) for f in fields):
        return None
    own = frozenset(f.target.id for f in fields)  # type: ignore[union-attr]
    return own.union(*inherited)  # type: ignore[arg-type]


def _required_field(value: ast.expr) -> bool:
    """`field()` without a default or default_factory."""
    return (isinstance(value, ast.Call) and (_dotted(value.func) or "").endswith("field")
            and not {k.arg for k in value.keywords} & {"default", "default_factory"})


def _configs(project: _Project, owner: _Def, function: ast.FunctionDef | ast.AsyncFunctionDef,
             method: bool, required: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Required arguments a config dataclass fills: the one their annotation names (anywhere
    in the project), or, unannotated, the only one of the same file that has every attribute
    the constructor reads from the argument (nanoGPT's `GPT(config)` and `GPTConfig`)."""
    source = project.source(owner)
    local = [_Def(source.name, q, n) for q, n in source.defs.items() if isinstance(n, ast.ClassDef)]
    configs = []
    for arg in _params(function, method) + list(function.args.kwonlyargs):
        if arg.arg not in required:
            continue
        if arg.annotation is not None:
            named = project.resolver.expr(source, arg.annotation)
            matches = [named] if _defaulted_fields(project, named) is not None else []
        else:
            read = {n.attr for n in ast.walk(function) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name) and n.value.id == arg.arg}
            matches = [c for c in local if read and read <= (_defaulted_fields(project, c)
                                                               or frozenset())]
        if len(matches) == 1 and isinstance(matches[0], _Def):
            configs.append((arg.arg, matches[0].target))
    return tuple(configs)


# -- the survey ------------------------------------------------------------------------------


def project_modules(root: Path, pythonpath: Sequence[str]) -> dict[str, Path]:
    """Importable module name -> file for the project's Python files, in a stable order,
    skipping environments, build output, hidden folders and tests."""
    roots = sorted((root / p for p in pythonpath), key=lambda p: -len(p.parts)) + [root]
    found: dict[str, Path] = {}
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in _SKIP_DIRS
                                                 or (here / d / "pyvenv.cfg").exists()))
        for name in sorted(files):
            if name.endswith(".py") and not _SKIP_FILES.match(name):
                module = _module_name(here / name, roots)
                if module and module not in found:
                    found[module] = here / name
    return found


def _module_name(path: Path, roots: Sequence[Path]) -> str | None:
    for root in roots:
        try:
            parts = list(path.relative_to(root).with_suffix("").parts)
        except ValueError:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None
    return None


def search_path(root: Path, pythonpath: Sequence[str]) -> list[str]:
    """Where imports are looked up: the project's roots, its own virtualenv (the one that
    builds the models), then this interpreter's sys.path."""
    from ckptlint.replay import site_packages

    venvs = [p for name in (".venv", "venv") for p in site_packages(str(root / name))]
    return [str(root / p) for p in pythonpath] + [str(root)] + venvs + \
        [p for p in sys.path if p]


def discover(root: Path, pythonpath: Sequence[str] = ()) -> Discovery:
    """Every nn.Module class and model factory of the project under `root`."""
    modules = project_modules(root, pythonpath)
    project = _Project(root, modules, search_path(root, pythonpath))
    roles = _roles(project)
    factories = _factories(project, roles)
    built: dict[_Key, str] = {}
    for function, cls, main in factories:
        if main:
            built.setdefault(cls.key, function.target)
    proposals = [_class_proposal(project, roles, cls, built.get(cls.key))
                 for cls in project.classes if _proposable(cls.qualname)]
    proposals += [_factory_proposal(project, roles, f, cls, main) for f, cls, main in factories]
    order = {name: i for i, name in enumerate(modules)}
    proposals.sort(key=lambda p: (order[p.target.partition(":")[0]], p.line))
    unresolved = [f"{c.target} ({_unknown_base(project, c)})" for c in project.unknown
                  if _proposable(c.qualname)]
    return Discovery(tuple(proposals), tuple(unresolved), len(modules))


def _proposable(qualname: str) -> bool:
    last = qualname.rpartition(".")[2]
    return not last.startswith("_") and not _MOCK.search(last)


def _unknown_base(project: _Project, cls: _Def) -> str:
    assert isinstance(cls.node, ast.ClassDef)
    for node, base in zip(cls.node.bases, project.resolver.bases(cls)):
        if project.resolver.is_module(base) is None:
            return ast.unparse(node)
    return "?"


def _factories(project: _Project, roles: _Roles) -> list[tuple[_Def, _Def, bool]]:
    """(factory, the class it builds, whether that is a main model) for each public
    module-level `build_*`/`create_*` function that returns an nn.Module."""
    found = []
    for source in project.sources:
        for name, node in source.defs.items():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _FACTORY.match(name):
                function = _Def(source.name, name, node)
                cls = project.returns(function)
                if cls is not None:
                    found.append((function, cls, not roles.role(cls.key)))
    return found


def _class_proposal(project: _Project, roles: _Roles, cls: _Def,
                    built_by: str | None) -> Proposal:
    params = project.inits.params(cls)
    found = project.inits.init(cls)
    configs: tuple[tuple[str, str], ...] = ()
    if params is not None and isinstance(found, tuple):
        owner, init = found
        configs = _configs(project, owner, init, True, [p.name for p in params if p.required])
    role = roles.role(cls.key) or (f"built by {built_by.partition(':')[2]}" if built_by else "")
    return Proposal(cls.target, "class", _relative(project, cls), _line(cls), params, configs,
                    not role, role)


def _factory_proposal(project: _Project, roles: _Roles, function: _Def, cls: _Def,
                      main: bool) -> Proposal:
    node = function.node
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    params = _own_params(node, method=False)
    configs = _configs(project, function, node, False, [p.name for p in params if p.required])
    role = "" if main else f"builds {cls.target}, {roles.role(cls.key)}"
    return Proposal(function.target, "factory", _relative(project, function), _line(function),
                    params, configs, main, role)


def _relative(project: _Project, found: _Def) -> str:
    path = project.source(found).path
    assert path is not None
    return path.relative_to(project.root).as_posix()


def _line(found: _Def) -> int:
    assert found.node is not None
    return found.node.lineno
