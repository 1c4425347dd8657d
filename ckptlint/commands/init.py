"""`ckptlint init`: find the project's nn.Module classes statically, register the top-level ones in
pyproject.toml (appending text, leaving every other byte alone), then record their signatures."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from ckptlint.errors import CkptlintError, ConfigError
from ckptlint.paths import display
from ckptlint.atomic import write_atomic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# directories that hold no project model code: environments, build output, tests
_SKIP_DIRS = frozenset({"venv", "site-packages", "dist-packages", "build", "dist", "tests",
                        "test", "__pycache__", "node_modules", "__pypackages__"})
_SKIP_FILES = re.compile(r"^(test_.*|.*_test|conftest|setup|noxfile)\.py$")
_MODELS_HEADER = re.compile(r"^\s*\[\[\s*tool\s*\.\s*ckptlint\s*\.\s*models\s*\]\]", re.M)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A proposed `[[tool.ckptlint.models]]` entry. `kwargs` are (name, TOML literal) pairs;
    `missing` are required `__init__` arguments nobody gave a value for yet."""

    name: str
    target: str
    file: str
    line: int
    kwargs: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    unknown_init: bool = False  # `__init__` comes from outside the file: arguments unknown

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unknown_init


@dataclass(frozen=True, slots=True)
class Survey:
    """What the static search found: candidates, and the classes left out as submodules."""

    candidates: tuple[Candidate, ...]
    submodules: tuple[str, ...]
    known: tuple[str, ...]  # targets already in pyproject.toml, registered or commented out
    classes: int


def run(args: argparse.Namespace) -> int:
    pyproject = _pyproject(Path.cwd())
    text = pyproject.read_bytes().decode("utf-8") if pyproject.exists() else ""
    table = _tool_table(pyproject, text)
    pythonpath = _pythonpath(pyproject.parent, table)
    survey = discover(pyproject.parent, pythonpath, table or {}, _commented_targets(text))
    out = sys.stdout
    _describe(survey, out)
    interactive = not (args.yes or args.dry_run) and sys.stdin.isatty()
    chosen = [ask(c) if interactive and not c.complete else c for c in survey.candidates]
    if not chosen:
        out.write("nothing to add to pyproject.toml\n")
        return 0
    new_text = merged(text, render(chosen, table, pythonpath, _newline(text)))
    _validate(pyproject, text, new_text, chosen)
    if args.dry_run:
        out.write(f"would append to {display(pyproject)}:\n\n{new_text[len(text):].lstrip()}")
        return 0
    if interactive and not _confirm(f"append {len(chosen)} model(s) to {display(pyproject)}?"):
        out.write("nothing written\n")
        return 0
    write_atomic(pyproject, new_text)
    return _first_update(args, pyproject, chosen, out)


def _describe(survey: Survey, out: Any) -> None:
    out.write(f"found {survey.classes} nn.Module class(es); "
              f"{len(survey.candidates)} new top-level model(s)\n")
    if survey.submodules:
        out.write(f"left out as submodules of other classes: {', '.join(survey.submodules)}\n")
    if survey.known:
        out.write(f"already in pyproject.toml: {', '.join(survey.known)}\n")


def _first_update(args: argparse.Namespace, pyproject: Path, chosen: Sequence[Candidate],
                  out: Any) -> int:
    active = [c.name for c in chosen if c.complete]
    waiting = [c for c in chosen if not c.complete]
    out.write(f"added {len(active)} model(s) to {display(pyproject)}"
              + (f"; {len(waiting)} left commented out with a TODO: fill in their kwargs, "
                 "uncomment them and run `ckptlint update NAME`" if waiting else "") + "\n")
    if not active:
        return 0
    from ckptlint.cli import main  # the very `ckptlint update` a user would run next

    code = main(["update", *active, "--jobs", str(args.jobs), *(["--debug"] * args.debug)])
    if code == 0:
        out.write("commit pyproject.toml and the signatures; `ckptlint check` then guards them\n")
    return code


# -- finding the models --------------------------------------------------------------------


def discover(root: Path, pythonpath: Sequence[str], table: dict[str, Any],
             commented: frozenset[str] = frozenset()) -> Survey:
    """Top-level nn.Module classes under `root`, skipping environments, build output and tests.

    A class is left out when another class of the project names it (a submodule or a base):
    an approximation of "used inside another model"."""
    from ckptlint.cst import SourceIndex  # libcst only for this command

    index = SourceIndex()
    found = [(path, module, info) for path, module in _modules(root, pythonpath)
             for info in index.module_classes(path)
             if "<locals>" not in info.qualname and not info.qualname.startswith("_")]
    names = {id(info): _referenced_names(index, path, info.qualname) for path, _, info in found}
    registered = [m for m in table.get("models", []) if isinstance(m, dict)]
    targets = {m.get("target") for m in registered} | commented
    taken = {str(m.get("name")) for m in registered}
    candidates, submodules, known = [], [], []
    for path, module, info in found:
        target = f"{module}:{info.qualname}"
        short = info.qualname.rpartition(".")[2]
        if any(short in names[id(other)] for _, _, other in found if other is not info):
            submodules.append(target)
        elif target in targets:
            known.append(target)
        else:
            candidate = _candidate(root, path, target, info, taken,
                                   _plain_module(index, path, info.qualname),
                                   _config_defaults(index, path, module, info))
            taken.add(candidate.name)
            candidates.append(candidate)
    return Survey(tuple(candidates), tuple(submodules), tuple(known), len(found))


def _modules(root: Path, pythonpath: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """(file, importable module name) for the project's Python files, in a stable order."""
    roots = sorted((root / p for p in pythonpath), key=lambda p: -len(p.parts)) + [root]
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in _SKIP_DIRS
                                                 or (here / d / "pyvenv.cfg").exists()))
        for name in sorted(files):
            if name.endswith(".py") and not _SKIP_FILES.match(name):
                module = _module_name(here / name, roots)
                if module:
                    yield here / name, module


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


def _referenced_names(index: Any, path: Path, qualname: str) -> frozenset[str]:
    """Every name the class's bases and body mention, except the class's own name."""
    import libcst as cst

    parsed = index.parsed(path)
    nodes = parsed.classes_named(qualname) if parsed is not None else []
    seen: set[str] = set()

    class Names(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            seen.add(node.value)

    for node in nodes:
        for part in (*node.bases, node.body):
            part.visit(Names())
    return frozenset(seen - {qualname.rpartition(".")[2]})


def _candidate(root: Path, path: Path, target: str, info: Any, taken: set[str],
               plain: bool, configs: dict[str, str]) -> Candidate:
    required = [p.name for p in info.init_params
                if not p.has_default and p.kind not in ("var_positional", "var_keyword")]
    return Candidate(name=_unique(_snake(info.qualname), target, taken), target=target,
                     file=path.relative_to(root).as_posix(), line=info.line,
                     kwargs=tuple((arg, configs[arg]) for arg in required if arg in configs),
                     missing=tuple(arg for arg in required if arg not in configs),
                     unknown_init=info.init_line is None and not plain)


def _config_defaults(index: Any, path: Path, module: str, info: Any) -> dict[str, str]:
    """Required arguments annotated with a dataclass of the same file whose fields all have
    defaults (`def __init__(self, config: GPTConfig)`): built from its defaults with `_target_`."""
    import libcst as cst

    parsed = index.parsed(path)
    if parsed is None or info.init_line is None:
        return {}
    inits = [node for _, cls in parsed.classes for node in cls.body.body
             if isinstance(node, cst.FunctionDef) and node.name.value == "__init__"
             and parsed.span(node).line == info.init_line]
    params = [*inits[0].params.params, *inits[0].params.kwonly_params] if inits else []
    configs = {}
    for param in params:
        name = parsed.module.code_for_node(param.annotation.annotation) \
            if param.annotation is not None else ""
        if param.default is None and _defaulted_dataclass(parsed, name):
            configs[param.name.value] = f'{{ _target_ = "{module}:{name}" }}'
    return configs


def _defaulted_dataclass(parsed: Any, qualname: str) -> bool:
    import libcst as cst

    nodes = parsed.classes_named(qualname) if qualname.isidentifier() else []
    if not nodes or not any("dataclass" in parsed.module.code_for_node(d.decorator)
                            for d in nodes[0].decorators):
        return False
    fields = [stmt for line in nodes[0].body.body if isinstance(line, cst.SimpleStatementLine)
              for stmt in line.body if isinstance(stmt, cst.AnnAssign)]
    return all(f.value is not None for f in fields)


def _plain_module(index: Any, path: Path, qualname: str) -> bool:
    """Whether the class subclasses nn.Module directly: without an `__init__` of its own it then
    builds with no arguments; a subclass of anything else inherits arguments we cannot see."""
    parsed = index.parsed(path)
    nodes = parsed.classes_named(qualname) if parsed is not None else []
    bases = [parsed.module.code_for_node(arg.value) for node in nodes[:1] for arg in node.bases]
    return bool(bases) and all(b in ("nn.Module", "torch.nn.Module", "Module") for b in bases)


def _snake(qualname: str) -> str:
    return _CAMEL.sub("_", qualname.replace(".", "_")).lower()


def _unique(name: str, target: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    module = target.partition(":")[0].rpartition(".")[2]
    name = f"{module}_{name}" if module and f"{module}_{name}" not in taken else name
    number = 2
    while name in taken:
        name = f"{name.rstrip('0123456789_')}_{number}"
        number += 1
    return name


# -- asking for arguments ------------------------------------------------------------------


def ask(candidate: Candidate) -> Candidate:
    """Ask for each required argument's value as a TOML literal; an empty answer leaves the
    entry commented out."""
    if candidate.unknown_init:
        print(f"{candidate.target} inherits its __init__ from outside {candidate.file}: "
              "its entry is left commented out for you to fill in")
        return candidate
    print(f"{candidate.target} ({candidate.file}:{candidate.line}) needs "
          f"{', '.join(candidate.missing)}; answer with TOML values (e.g. 64, \"relu\", "
          "{ _target_ = \"pkg.mod:Config\" }), or press Enter to leave it commented out")
    given: list[tuple[str, str]] = []
    for arg in candidate.missing:
        literal = _ask_literal(f"  {arg} = ")
        if literal is None:
            return candidate
        given.append((arg, literal))
    return replace(candidate, kwargs=tuple(given), missing=())


def _ask_literal(prompt: str) -> str | None:
    while True:
        try:
            answer = input(prompt).strip()
        except EOFError:
            return None
        if not answer:
            return None
        try:
            tomllib.loads(f"v = {answer}")
            return answer
        except tomllib.TOMLDecodeError as exc:
            print(f"  not a TOML value ({exc}); strings need quotes, e.g. \"gelu\"")


def _confirm(question: str) -> bool:
    try:
        return input(f"{question} [Y/n] ").strip().lower() in ("", "y", "yes")
    except EOFError:
        return False


# -- writing pyproject.toml ----------------------------------------------------------------


def _commented_targets(text: str) -> frozenset[str]:
    """Targets of entries an earlier `init` left commented out: not proposed twice."""
    return frozenset(re.findall(r'^#\s*target\s*=\s*"([^"]+)"', text, re.M))


def _pyproject(start: Path) -> Path:
    """The nearest pyproject.toml at or above `start`; a new one in `start` when there is none."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory / "pyproject.toml"
    return start / "pyproject.toml"


def _tool_table(pyproject: Path, text: str) -> dict[str, Any] | None:
    """The existing [tool.ckptlint] table, or None when there is none yet."""
    try:
        table = tomllib.loads(text).get("tool", {}).get("ckptlint")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(display(pyproject), f"is not valid TOML: {exc}") from None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(display(pyproject), "`tool.ckptlint` must be a table")
    if table is not None and "models" in table and not _MODELS_HEADER.search(text):
        raise ConfigError(display(pyproject), "`tool.ckptlint.models` is an inline array; "
                          "`ckptlint init` appends [[tool.ckptlint.models]] tables: convert it "
                          "first")
    return table


def _pythonpath(root: Path, table: dict[str, Any] | None) -> list[str]:
    """The configured pythonpath; for a new table, `src` when the project has a src layout."""
    if table is not None:
        value = table.get("pythonpath", [])
        return [value] if isinstance(value, str) else list(value)
    src = root / "src"
    return ["src"] if src.is_dir() and not (src / "__init__.py").exists() else []


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def render(chosen: Sequence[Candidate], table: dict[str, Any] | None,
           pythonpath: Sequence[str], newline: str = "\n") -> str:
    """The text appended to pyproject.toml: [tool.ckptlint] when missing, then one table per
    model; an entry still missing arguments is commented out under a TODO."""
    lines = ["# Models registered by `ckptlint init`; `ckptlint update` records their signatures."]
    if table is None:
        lines += ["[tool.ckptlint]"]
        lines += [f"pythonpath = [{', '.join(_quote(p) for p in pythonpath)}]"] \
            if pythonpath else []
    for candidate in chosen:
        lines += [""] + _entry(candidate)
    return newline.join(lines) + newline


def _entry(candidate: Candidate) -> list[str]:
    body = ["[[tool.ckptlint.models]]", f"name = {_quote(candidate.name)}",
            f"target = {_quote(candidate.target)}"]
    kwargs = list(candidate.kwargs) + [(arg, "...") for arg in candidate.missing]
    if kwargs:
        body.append(f"kwargs = {{ {', '.join(f'{k} = {v}' for k, v in kwargs)} }}")
    if candidate.complete:
        return body
    why = "its __init__ is inherited from outside the file" if candidate.unknown_init else \
        f"{candidate.file}:{candidate.line} needs {', '.join(candidate.missing)}"
    return [f"# TODO: fill in kwargs ({why}), uncomment, then run "
            f"`ckptlint update {candidate.name}`"] + [f"# {line}" for line in body] + \
        ([] if candidate.missing else ["# kwargs = { }"])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def merged(text: str, block: str) -> str:
    """`text` unchanged, then a blank line, then `block`."""
    newline = _newline(text)
    if not text:
        return block
    return text + ("" if text.endswith(("\n", "\r")) else newline) + newline + block


def _validate(pyproject: Path, old: str, new: str, chosen: Sequence[Candidate]) -> None:
    """The appended text must parse and add exactly the active entries, nothing else."""
    try:
        after = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise CkptlintError(f"{display(pyproject)}: appending the new models would make it "
                            f"invalid TOML ({exc}); nothing was written") from None
    old_models, new_models = _models_of(tomllib.loads(old)), _models_of(after)
    added = [m.get("target") for m in new_models[len(old_models):]]
    if new_models[:len(old_models)] != old_models or \
            added != [c.target for c in chosen if c.complete]:
        raise CkptlintError(f"{display(pyproject)}: the [tool.ckptlint] tables could not be "
                            "extended safely; nothing was written (add the models by hand)")


def _models_of(document: dict[str, Any]) -> list[Any]:
    return document.get("tool", {}).get("ckptlint", {}).get("models", [])
