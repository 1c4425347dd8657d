"""How `ckptlint init` writes pyproject.toml: the chosen models as `[[tool.ckptlint.models]]`
tables merged into the file, checked by parsing the result before anything is written."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ckptlint.core.errors import CkptlintError, ConfigError
from ckptlint.core.paths import display
from ckptlint.core.record import record
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


_MODELS_HEADER = re.compile(r"^\s*\[\[\s*tool\s*\.\s*ckptlint\s*\.\s*models\s*\]\]", re.M)


@record
class Candidate:
    """A proposed `[[tool.ckptlint.models]]` entry. `kwargs` are (name, TOML literal) pairs;
    `missing` are required arguments nobody gave a value for yet."""

    name: str
    target: str
    file: str
    line: int
    kwargs: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()
    unknown_init: bool = False  # its `__init__` is in code that could not be read
    main: bool = False
    role: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unknown_init


def commented_targets(text: str) -> frozenset[str]:
    """Targets of entries an earlier `init` left commented out: not proposed twice."""
    return frozenset(re.findall(r'^#\s*target\s*=\s*"([^"]+)"', text, re.M))


def pyproject_near(start: Path) -> Path:
    """The nearest pyproject.toml at or above `start`; a new one in `start` when there is none."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file():
            return directory / "pyproject.toml"
    return start / "pyproject.toml"


def tool_table(pyproject: Path, text: str) -> dict[str, Any] | None:
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


def pythonpath_of(root: Path, table: dict[str, Any] | None) -> list[str]:
    """The configured pythonpath; for a new table, `src` when the project has a src layout."""
    if table is not None:
        value = table.get("pythonpath", [])
        return [value] if isinstance(value, str) else list(value)
    src = root / "src"
    return ["src"] if src.is_dir() and not (src / "__init__.py").exists() else []


def newline_of(text: str) -> str:
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
        lines += [""] + entry_lines(candidate)
    return newline.join(lines) + newline


def entry_lines(candidate: Candidate) -> list[str]:
    body = ["[[tool.ckptlint.models]]", f"name = {_quote(candidate.name)}",
            f"target = {_quote(candidate.target)}"]
    kwargs = list(candidate.kwargs) + [(arg, "...") for arg in candidate.missing]
    if kwargs:
        body.append(f"kwargs = {{ {', '.join(f'{k} = {v}' for k, v in kwargs)} }}")
    if candidate.complete:
        return body
    why = "its __init__ is inherited from code ckptlint could not read" \
        if candidate.unknown_init else \
        f"{candidate.file}:{candidate.line} needs {', '.join(candidate.missing)}"
    return [f"# TODO: fill in kwargs ({why}), uncomment, then run "
            f"`ckptlint update {candidate.name}`"] + [f"# {line}" for line in body] + \
        ([] if candidate.missing else ["# kwargs = { }"])


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def merged(text: str, block: str) -> str:
    """`text` unchanged, then a blank line, then `block`."""
    newline = newline_of(text)
    if not text:
        return block
    return text + ("" if text.endswith(("\n", "\r")) else newline) + newline + block


def validate(pyproject: Path, old: str, new: str, chosen: Sequence[Candidate]) -> None:
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
