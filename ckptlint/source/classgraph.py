"""The project's classes as `init` surveys them: every class and function of its modules, and
how the classes use each other (attributes they create, call, and pass along)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ckptlint.source.resolve import (Def, Finder, Inits, Resolver, Source, arguments, dotted,
                                     find_method, own_params)


_TYPE_TESTS = frozenset({"isinstance", "issubclass", "super", "type"})


# `_build_sam` -> `_build_sam_vit` -> ... : how far returns are followed through helpers
_RETURN_DEPTH = 4


def _value_refs(node: ast.AST) -> Iterator[ast.expr]:
    """Names and dotted names used as values inside `node`: not annotations, not the classes
    of `isinstance`/`super(...)`, not nested classes, not the owner of an attribute
    (`Config.from_name` is a method, `nn.Linear` is one name)."""
    stack: list[ast.AST] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (ast.Name, ast.Attribute)) and dotted(current):
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


def _head(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def _instance_methods(node: ast.ClassDef) -> list[ast.stmt]:
    """The class body without static and class methods (alternative constructors such as
    `from_pretrained` build the class, they are not part of it)."""
    def special(stmt: ast.stmt) -> bool:
        return isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
            dotted(d) in ("staticmethod", "classmethod") for d in stmt.decorator_list)
    return [stmt for stmt in node.body if not special(stmt)]


def _self_assignments(init: ast.FunctionDef | ast.AsyncFunctionDef,
                      ) -> Iterator[tuple[str, ast.expr]]:
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


Key = tuple[str, str]


class Project:
    """The project's nn.Module classes and what their code uses, resolved."""

    def __init__(self, root: Path, modules: dict[str, Path], search: Sequence[str]):
        self.root = root
        self.finder = Finder(modules, search)
        self.resolver = Resolver(self.finder)
        self.inits = Inits(self.resolver)
        self.sources = [s for s in map(self.finder.source, modules) if s is not None]
        classes = [Def(s.name, q, n) for s in self.sources for q, n in s.defs.items()
                   if isinstance(n, ast.ClassDef)]
        verdicts = {c.key: self.resolver.is_module(c) for c in classes}
        self.classes = [c for c in classes if verdicts[c.key]]
        self.unknown = [c for c in classes if verdicts[c.key] is None]
        self.keys = {c.key for c in self.classes}
        self._refs: dict[Key, frozenset[Key]] = {}
        self._taken: dict[Key, tuple[str, Def | None] | None] = {}

    def source(self, found: Def) -> Source:
        source = self.finder.source(found.module)
        assert source is not None
        return source

    def model(self, source: Source, node: ast.expr, scope: str = "") -> Def | None:
        """The project Module class an expression names, if it names one."""
        found = self.resolver.expr(source, node, scope)
        return found if isinstance(found, Def) and found.key in self.keys else None

    def refs(self, source: Source, nodes: Sequence[ast.AST], scope: str) -> frozenset[Key]:
        """The project Module classes `nodes` use as values, also through the project's
        functions and module-level registries (`BLOCKS = dict(basic=BasicBlock)`)."""
        found: set[Key] = set()
        for node in nodes:
            for ref in _value_refs(node):
                target = self.resolver.expr(source, ref, scope)
                if isinstance(target, Def) and target.key in self.keys:
                    found.add(target.key)
                elif isinstance(target, Def) and self._is_project_function(target):
                    found |= self._cached(target.key, lambda t=target: [t.node])  # type: ignore
                elif _head(ref) in source.values:  # `BLOCKS[kind]`, `BLOCKS.get(kind)`
                    name = _head(ref)
                    found |= self._cached((source.name, name),
                                          lambda n=name: [source.values[n]])  # type: ignore
        return frozenset(found)

    def _cached(self, key: Key, nodes: Callable[[], list[ast.AST]]) -> frozenset[Key]:
        if key not in self._refs:
            self._refs[key] = frozenset()  # recursion sees what is known so far
            source = self.finder.source(key[0])
            assert source is not None
            self._refs[key] = self.refs(source, nodes(), "")
        return self._refs[key]

    def _is_project_function(self, found: Def) -> bool:
        source = self.finder.source(found.module)
        return source is not None and source.project and isinstance(
            found.node, (ast.FunctionDef, ast.AsyncFunctionDef))

    def class_refs(self, cls: Def) -> frozenset[Key]:
        assert isinstance(cls.node, ast.ClassDef)
        return self.refs(self.source(cls), _instance_methods(cls.node), cls.qualname)

    def project_bases(self, cls: Def) -> list[Def]:
        return [b for b in self.resolver.bases(cls) if isinstance(b, Def) and b.key in self.keys]

    def ancestors(self, cls: Def) -> set[Key]:
        seen: set[Key] = set()
        stack = self.project_bases(cls)
        while stack:
            base = stack.pop()
            if base.key not in seen:
                seen.add(base.key)
                stack.extend(self.project_bases(base))
        return seen

    # -- constructors -----------------------------------------------------------------------

    def creates_state(self, cls: Def, init: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """Whether `__init__` makes a submodule, parameter or buffer of its own."""
        source = self.source(cls)
        for _, value in _self_assignments(init):
            if isinstance(value, ast.Call):
                made = self.resolver.expr(source, value.func, cls.qualname)
                if self.resolver.is_module(made) or (isinstance(made, Def)
                                                     and made.qualname == "Parameter"):
                    return True
        return _registers(init)

    def takes_model(self, cls: Def) -> tuple[str, Def | None] | None:
        """The one required `__init__` argument kept as a submodule (`self.net = net`, then
        called or annotated with a Module class): its name, and the project class it is
        annotated with, if any."""
        if cls.key not in self._taken:
            self._taken[cls.key] = self._takes_model(cls)
        return self._taken[cls.key]

    def _takes_model(self, cls: Def) -> tuple[str, Def | None] | None:
        assert isinstance(cls.node, ast.ClassDef)
        init = find_method(cls.node, "__init__")
        if init is None:
            return None
        args = {a.arg: a for a in [*arguments(init, method=True), *init.args.kwonlyargs]}
        required = {p.name for p in own_params(init, method=True) if p.required}
        kept = [(attr, v.id) for attr, v in _self_assignments(init)
                if isinstance(v, ast.Name) and v.id in required]
        called = _called_attributes(cls.node) if kept else set()
        models = []
        for attr, arg in kept:
            note = args[arg].annotation
            named = self.resolver.expr(self.source(cls), note, cls.qualname) if note else None
            if attr in called or self.resolver.is_module(named):
                models.append((arg, named if isinstance(named, Def) and named.key in self.keys
                               else None))
        # one model passed in is wrapped; several are assembled (Sam(encoder, decoder))
        return models[0] if len({arg for arg, _ in models}) == 1 else None

    def returns(self, function: Def, depth: int = 0) -> Def | None:
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
                if isinstance(made, Def) and self._is_project_function(made):
                    found = self.returns(made, depth + 1)
                    if found is not None:
                        return found
        return None


def _called_attributes(node: ast.ClassDef) -> set[str]:
    """`x` for every `self.x(...)` in the class."""
    return {n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "self"}
