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
from pathlib import Path
from typing import Iterator, Sequence

from ckptlint.core.record import record
from ckptlint.source.classgraph import Key, Project
from ckptlint.source.resolve import (Def, Found, Param, Source, arguments, dotted, find_method,
                                     own_params)

# directories that hold no project model code: environments, build output, tests
_SKIP_DIRS = frozenset({"venv", "site-packages", "dist-packages", "build", "dist", "tests",
                        "test", "testing", "__pycache__", "node_modules", "__pypackages__"})
_SKIP_FILES = re.compile(r"^(test_.*|.*_test|conftest|setup|noxfile|mocks?(_.*)?)\.py$")
# test doubles are never models a project registers, wherever they live
_MOCK = re.compile(r"^(Mock|Fake|Dummy|Stub)|(Mock|Fake|Dummy|Stub)$")
_FACTORY = re.compile(r"^(build|create)_\w+$")
_NESTED_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


@record
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


@record
class Discovery:
    """Every proposal in file order, and the classes left out because a base could not be
    followed to torch.nn.Module (`target (Base)`)."""

    proposals: tuple[Proposal, ...]
    unresolved: tuple[str, ...]
    files: int


# -- how classes use each other --------------------------------------------------------------


# -- the project -----------------------------------------------------------------------------


# -- roles: main models, parts, wrappers -----------------------------------------------------


@record
class _Roles:
    """Who uses whom. A class that another class builds, takes as a default, or keeps from an
    argument annotated with it is a part of it; so is a base of parts, a subclass of a part
    that nothing uses, and a class a config dataclass names as a string (litgpt's
    `mlp_class_name: Literal["GptNeoxMLP", "LLaMAMoE"]`, looked up with getattr). A class that
    keeps a whole model passed in (`self.net = net`) is a wrapper. Being used as a whole model
    outweighs being a part: built by module-level code (train.py, an
    `if __name__ == "__main__":` demo) or wrapped by a wrapper."""

    users: dict[Key, list[Key]]
    bases: dict[Key, list[Key]]
    subclasses: dict[Key, list[Key]]
    wrappers: dict[Key, str]
    whole: frozenset[Key]
    chosen: dict[Key, Key]

    def part_of(self, key: Key, seen: frozenset[Key] = frozenset()) -> str | None:
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

    def role(self, key: Key) -> str:
        """Why the class is not a main model; "" when it is one."""
        if key in self.wrappers:  # a wrapper inside another model is a part of it
            return self.part_of(key) or f"wraps the model passed as `{self.wrappers[key]}`"
        return "" if key in self.whole else self.part_of(key) or ""


def _roles(project: Project) -> _Roles:
    users: dict[Key, list[Key]] = {}
    bases: dict[Key, list[Key]] = {}
    subclasses: dict[Key, list[Key]] = {}
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


def _named_by_configs(project: Project) -> dict[Key, Key]:
    """Project models whose class name is a string in a dataclass's body: chosen by config."""
    by_name: dict[str, list[Key]] = {}
    for cls in project.classes:
        by_name.setdefault(cls.qualname.rpartition(".")[2], []).append(cls.key)
    chosen: dict[Key, Key] = {}
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


def _wrappers(project: Project) -> tuple[dict[Key, str], set[Key]]:
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


def _built_in_scripts(project: Project, source: Source, wrappers: dict[Key, str],
                      ) -> set[Key]:
    """The outermost project models built by module-level code (`model = GPT(config)` in
    train.py, a `__main__` demo), looking through wrappers: `Wrapper(GPT(...))` builds GPT."""
    found: set[Key] = set()
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


def _nested_builds(project: Project, source: Source) -> Iterator[tuple[Key, Key]]:
    """(part, model) for each project model built as an argument of another's constructor
    outside class bodies: `Sam(mask_decoder=MaskDecoder(transformer=TwoWayTransformer()))`
    in a factory, `TransformerWrapper(attn_layers=Decoder(...))` in a script."""
    roots = [n for n in source.defs.values() if not isinstance(n, ast.ClassDef)]
    stack: list[tuple[ast.AST, Key | None]] = [(n, None) for n in [*roots, *source.script]]
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


def _defaulted_fields(project: Project, found: Found) -> frozenset[str] | None:
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


def _configs(project: Project, owner: Def, function: ast.FunctionDef | ast.AsyncFunctionDef,
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
    project = Project(root, modules, search_path(root, pythonpath))
    roles = _roles(project)
    factories = _factories(project, roles)
    built: dict[Key, str] = {}
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


def _unknown_base(project: Project, cls: Def) -> str:
    assert isinstance(cls.node, ast.ClassDef)
    for node, base in zip(cls.node.bases, project.resolver.bases(cls)):
        if project.resolver.is_module(base) is None:
            return ast.unparse(node)
    return "?"


def _factories(project: Project, roles: _Roles) -> list[tuple[Def, Def, bool]]:
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


def _class_proposal(project: Project, roles: _Roles, cls: Def,
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


def _factory_proposal(project: Project, roles: _Roles, function: Def, cls: Def,
                      main: bool) -> Proposal:
    node = function.node
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    params = own_params(node, method=False)
    configs = _configs(project, function, node, False, [p.name for p in params if p.required])
    role = "" if main else f"builds {cls.target}, {roles.role(cls.key)}"
    return Proposal(function.target, "factory", _relative(project, function), _line(function),
                    params, configs, main, role)


def _relative(project: Project, found: Def) -> str:
    path = project.source(found).path
    assert path is not None
    return path.relative_to(project.root).as_posix()


def _line(found: Def) -> int:
    assert found.node is not None
    return found.node.lineno
