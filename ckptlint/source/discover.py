"""What `ckptlint init` proposes, found statically: the project's classes whose bases resolve to
`torch.nn.Module` (through imports, the project's own classes and installed packages' sources),
public module-level `build_*`/`create_*` functions that return one, which of them are main models,
and the config dataclasses that build them. Nothing is imported or executed: names are
followed by `ckptlint.source.resolve`.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ckptlint.source.resolve import (Def, Finder, Found, Inits, Param, Resolver, Source, arguments,
                                     dotted, find_method, own_params)

# directories that hold no project model code: environments, build output, tests
_SKIP_DIRS = frozenset({"venv", "site-packages", "dist-packages", "build", "dist", "tests",
                        "test", "testing", "__pycache__", "node_modules", "__pypackages__"})
_SKIP_FILES = re.compile(r"^(test_.*|.*_test|conftest|setup|noxfile|mocks?(_.*)?)\.py$")
# test doubles are never models a project registers, wherever they live
_MOCK = re.compile(r"^(Mock|Fake|Dummy|Stub)|(Mock|Fake|Dummy|Stub)$")
_FACTORY = re.compile(r"^(build|create)_\w+$")
_TYPE_TESTS = frozenset({"isinstance", "issubclass", "super", "type"})
_NESTED_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
# `_build_sam` -> `_build_sam_vit` -> ... : how far returns are followed through helpers
_RETURN_DEPTH = 4


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


# -- how classes use each other --------------------------------------------------------------


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


# -- the project -----------------------------------------------------------------------------

_Key = tuple[str, str]


class _Project:
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
        self._refs: dict[_Key, frozenset[_Key]] = {}
        self._taken: dict[_Key, tuple[str, Def | None] | None] = {}

    def source(self, found: Def) -> Source:
        source = self.finder.source(found.module)
        assert source is not None
        return source

    def model(self, source: Source, node: ast.expr, scope: str = "") -> Def | None:
        """The project Module class an expression names, if it names one."""
        found = self.resolver.expr(source, node, scope)
        return found if isinstance(found, Def) and found.key in self.keys else None

    def refs(self, source: Source, nodes: Sequence[ast.AST], scope: str) -> frozenset[_Key]:
        """The project Module classes `nodes` use as values, also through the project's
        functions and module-level registries (`BLOCKS = dict(basic=BasicBlock)`)."""
        found: set[_Key] = set()
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

    def _cached(self, key: _Key, nodes: Callable[[], list[ast.AST]]) -> frozenset[_Key]:
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

    def class_refs(self, cls: Def) -> frozenset[_Key]:
        assert isinstance(cls.node, ast.ClassDef)
        return self.refs(self.source(cls), _instance_methods(cls.node), cls.qualname)

    def project_bases(self, cls: Def) -> list[Def]:
        return [b for b in self.resolver.bases(cls) if isinstance(b, Def) and b.key in self.keys]

    def ancestors(self, cls: Def) -> set[_Key]:
        seen: set[_Key] = set()
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
    return any((dotted(d.func if isinstance(d, ast.Call) else d) or "").rpartition(".")[2]
               == "dataclass" for d in node.decorator_list)


def _wrappers(project: _Project) -> tuple[dict[_Key, str], set[_Key]]:
    """The wrappers, and the models used whole. First the certain wrappers (no state of their
    own besides the model passed in) and what scripts build through them; then the classes
    that keep a model passed in that is unannotated, a generic Module, or a model used whole."""
    taken = {c.key: (c, project.takes_model(c)) for c in project.classes}
    pure = {key: arg[0] for key, (cls, arg) in taken.items() if arg is not None
            and not project.creates_state(cls, find_method(cls.node, "__init__"))}  # type: ignore
    whole = {arg[1].key for key, (_, arg) in taken.items() if key in pure and arg and arg[1]}
    for source in project.sources:
        whole |= _built_in_scripts(project, source, pure)
    wrappers = dict(pure)
    for key, (_, arg) in taken.items():
        if arg is not None and (arg[1] is None or arg[1].key in whole):
            wrappers[key] = arg[0]
            whole |= {arg[1].key} if arg[1] is not None else set()
    return wrappers, whole


def _built_in_scripts(project: _Project, source: Source, wrappers: dict[_Key, str],
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


def _nested_builds(project: _Project, source: Source) -> Iterator[tuple[_Key, _Key]]:
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


def _defaulted_fields(project: _Project, found: Found) -> frozenset[str] | None:
    """The fields of a project dataclass whose fields all have defaults, else None."""
    if not (isinstance(found, Def) and isinstance(found.node, ast.ClassDef)
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
    return (isinstance(value, ast.Call) and (dotted(value.func) or "").endswith("field")
            and not {k.arg for k in value.keywords} & {"default", "default_factory"})


def _configs(project: _Project, owner: Def, function: ast.FunctionDef | ast.AsyncFunctionDef,
             method: bool, required: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Required arguments a config dataclass fills: the one their annotation names (anywhere
    in the project), or, unannotated, the only one of the same file that has every attribute
    the constructor reads from the argument (nanoGPT's `GPT(config)` and `GPTConfig`)."""
    source = project.source(owner)
    local = [Def(source.name, q, n) for q, n in source.defs.items() if isinstance(n, ast.ClassDef)]
    configs = []
    for arg in arguments(function, method) + list(function.args.kwonlyargs):
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
        if len(matches) == 1 and isinstance(matches[0], Def):
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
    from ckptlint.core.environment import site_packages

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


def _unknown_base(project: _Project, cls: Def) -> str:
    assert isinstance(cls.node, ast.ClassDef)
    for node, base in zip(cls.node.bases, project.resolver.bases(cls)):
        if project.resolver.is_module(base) is None:
            return ast.unparse(node)
    return "?"


def _factories(project: _Project, roles: _Roles) -> list[tuple[Def, Def, bool]]:
    """(factory, the class it builds, whether that is a main model) for each public
    module-level `build_*`/`create_*` function that returns an nn.Module."""
    found = []
    for source in project.sources:
        for name, node in source.defs.items():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _FACTORY.match(name):
                function = Def(source.name, name, node)
                cls = project.returns(function)
                if cls is not None:
                    found.append((function, cls, not roles.role(cls.key)))
    return found


def _class_proposal(project: _Project, roles: _Roles, cls: Def,
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


def _factory_proposal(project: _Project, roles: _Roles, function: Def, cls: Def,
                      main: bool) -> Proposal:
    node = function.node
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    params = own_params(node, method=False)
    configs = _configs(project, function, node, False, [p.name for p in params if p.required])
    role = "" if main else f"builds {cls.target}, {roles.role(cls.key)}"
    return Proposal(function.target, "factory", _relative(project, function), _line(function),
                    params, configs, main, role)


def _relative(project: _Project, found: Def) -> str:
    path = project.source(found).path
    assert path is not None
    return path.relative_to(project.root).as_posix()


def _line(found: Def) -> int:
    assert found.node is not None
    return found.node.lineno
