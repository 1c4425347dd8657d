"""Find and validate `[tool.ckptlint]` in pyproject.toml; strict, so a typo never disables a check."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from ckptlint.errors import ConfigError
from ckptlint.ftypes import DEFAULT_BUILD_TIMEOUT, Config, Location, ModelSpec
from ckptlint.paths import display, relative

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOOL_KEYS = ("signatures", "pythonpath", "python", "build_timeout", "models")
MODEL_KEYS = ("name", "target", "kwargs", "checkpoints", "state_dict_key", "strip_prefix",
              "ignore")
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MODELS_HEADER = re.compile(r"^\s*\[\[\s*tool\s*\.\s*ckptlint\s*\.\s*models\s*\]\]")
_TOOL_HEADER = re.compile(r"^\s*\[\s*tool\s*\.\s*ckptlint\s*\]")
_ANY_HEADER = re.compile(r"^\s*\[")


def find_pyproject(start: Path) -> Path:
    """The first pyproject.toml with a `[tool.ckptlint]` table, walking up from `start`."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "ckptlint" in _read_toml(candidate).get("tool", {}):
            return candidate
    raise ConfigError(str(start), "no pyproject.toml with a [tool.ckptlint] table here or in any "
                                  "parent directory; run `ckptlint init` to register your models")


def load_config(start: Path | None = None) -> Config:
    pyproject = find_pyproject((start or Path.cwd()).resolve())
    return parse_config(pyproject)


def parse_config(pyproject: Path) -> Config:
    text = pyproject.read_text(encoding="utf-8")
    table = _read_toml(pyproject).get("tool", {}).get("ckptlint")
    lines = _Lines(text)
    where = display(pyproject)
    if not isinstance(table, dict):
        raise ConfigError(where, "has no [tool.ckptlint] table")
    _check_keys(table, TOOL_KEYS, "tool.ckptlint", where, lambda k: lines.key(lines.tool, k))
    models = table.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ConfigError(where, "`tool.ckptlint.models` must be an array of tables "
                                 "([[tool.ckptlint.models]])", line=lines.tool)
    specs = tuple(_model(m, i, where, lines) for i, m in enumerate(models))
    _check_unique(specs, where, lines)
    return Config(
        root=str(pyproject.parent),
        pyproject=str(pyproject),
        signatures=_string(table, "signatures", "tool.ckptlint", where, lines.tool, "signatures"),
        pythonpath=_string_list(table, "pythonpath", where, lines.tool),
        python=_string(table, "python", "tool.ckptlint", where, lines.tool, "") if "python" in table
        else "",
        models=specs,
        line=lines.tool,
        build_timeout=_seconds(table, "build_timeout", where, lines.key(lines.tool, "build_timeout")),
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(display(path), f"is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(display(path), f"cannot be read: {exc.strerror}") from None


def _model(table: Mapping[str, Any], index: int, where: str, lines: _Lines) -> ModelSpec:
    path = f"tool.ckptlint.models[{index}]"
    line = lines.model(index)
    _check_keys(table, MODEL_KEYS, path, where, lambda k: lines.model_key(index, k))
    name = _string(table, "name", path, where, line)
    if not _NAME.match(name):
        raise ConfigError(where, f"`{path}.name` = {name!r} must be a file-name-safe identifier "
                                 "(letters, digits, `_`, `-`, `.`)", line=line)
    target = _string(table, "target", path, where, line)
    _check_target(target, f"{path}.target", where, lines.model_key(index, "target"))
    kwargs = table.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(where, f"`{path}.kwargs` must be a table", line=line)
    _check_nested_targets(kwargs, f"{path}.kwargs", where, lines.model_key(index, "kwargs"))
    checkpoints = _string_list(table, "checkpoints", where, lines.model_key(index, "checkpoints"),
                               f"{path}.checkpoints")
    key = _string(table, "state_dict_key", path, where, lines.model_key(index, "state_dict_key"),
                  "") if "state_dict_key" in table else None
    strip = _string(table, "strip_prefix", path, where, lines.model_key(index, "strip_prefix"),
                    "") if "strip_prefix" in table else ""
    ignore = _ignore(table.get("ignore", {}), f"{path}.ignore", where,
                     lines.model_key(index, "ignore"))
    return ModelSpec(name=name, target=target, kwargs=kwargs, index=index, line=line,
                     checkpoints=checkpoints, state_dict_key=key, strip_prefix=strip,
                     ignore=ignore)


def _ignore(value: Any, path: str, where: str, line: int | None) -> dict[str, tuple[str, ...]]:
    """`ignore = { "head.*" = ["CKL103"] }`: key pattern (fnmatch) -> codes it may ignore."""
    from ckptlint.ftypes import Kind

    codes = {k.code for k in Kind}
    if not isinstance(value, dict):
        raise ConfigError(where, f"`{path}` must be a table of key pattern = [codes], e.g. "
                                 "ignore = { \"head.*\" = [\"CKL103\"] }", key=path, line=line)
    for pattern, listed in value.items():
        if not isinstance(listed, list) or not listed or \
                not all(isinstance(c, str) and c in codes for c in listed):
            raise ConfigError(where, f"`{path}.\"{pattern}\"` must be a non-empty list of "
                                     f"finding codes such as \"CKL103\" (see `ckptlint rules`), "
                                     f"not {listed!r}", key=f"{path}.{pattern}", line=line)
    return {pattern: tuple(listed) for pattern, listed in value.items()}


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], path: str, where: str,
                line_of: Callable[[str], int | None]) -> None:
    for key in table:
        if key not in known:
            import difflib  # only on the error path

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else \
                f" (known keys: {', '.join(known)})"
            raise ConfigError(where, f"unknown key `{path}.{key}`{hint}", key=f"{path}.{key}",
                              line=line_of(key))


def _string(table: Mapping[str, Any], key: str, path: str, where: str, line: int | None,
            default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(where, f"`{path}` needs a `{key}`", key=f"{path}.{key}", line=line)
    if not isinstance(value, str) or not value:
        raise ConfigError(where, f"`{path}.{key}` must be a non-empty string, not {value!r}",
                          key=f"{path}.{key}", line=line)
    return value


def _seconds(table: Mapping[str, Any], key: str, where: str, line: int | None) -> float:
    """A positive number of seconds (`build_timeout = 300`)."""
    value = table.get(key, DEFAULT_BUILD_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise ConfigError(where, f"`tool.ckptlint.{key}` must be a number of seconds above 0, "
                                 f"not {value!r}", key=f"tool.ckptlint.{key}", line=line)
    return float(value)


def _string_list(table: Mapping[str, Any], key: str, where: str, line: int | None,
                 path: str = "") -> tuple:
    value = table.get(key, [])
    path = path or f"tool.ckptlint.{key}"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(where, f"`{path}` must be a list of paths", key=path, line=line)
    return tuple(value)


def _check_target(target: Any, path: str, where: str, line: int | None) -> None:
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ConfigError(where, f"`{path}` = {target!r} is not of the form "
                                 "\"package.module:attribute\"", key=path, line=line)


def _check_nested_targets(value: Any, path: str, where: str, line: int | None) -> None:
    if isinstance(value, dict):
        if "_target_" in value:
            _check_target(value["_target_"], f"{path}._target_", where, line)
        for key, item in value.items():
            _check_nested_targets(item, f"{path}.{key}", where, line)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_nested_targets(item, f"{path}[{i}]", where, line)


def _check_unique(specs: tuple[ModelSpec, ...], where: str, lines: _Lines) -> None:
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.name, spec)
        if first is not spec:
            raise ConfigError(where, f"`tool.ckptlint.models[{spec.index}].name` = {spec.name!r} "
                                     f"is already used by tool.ckptlint.models[{first.index}]",
                              key=f"tool.ckptlint.models[{spec.index}].name",
                              line=lines.model_key(spec.index, "name"))


class _Lines:
    """1-based line numbers of the [tool.ckptlint] tables, for messages and annotations."""

    def __init__(self, text: str):
        self._lines = text.splitlines()
        self.tool = next((i + 1 for i, l in enumerate(self._lines) if _TOOL_HEADER.match(l)), None)
        self._models = [i + 1 for i, l in enumerate(self._lines) if _MODELS_HEADER.match(l)]

    def model(self, index: int) -> int | None:
        return self._models[index] if index < len(self._models) else self.tool

    def model_key(self, index: int, key: str) -> int | None:
        start = self.model(index)
        return start if index >= len(self._models) else self.key(start, key)

    def key(self, start: int | None, key: str) -> int | None:
        """The line assigning `key` in the table whose header is on line `start`."""
        if start is None:
            return None
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*[=.]")
        for number in range(start + 1, len(self._lines) + 1):
            text = self._lines[number - 1]
            if _ANY_HEADER.match(text):
                break
            if pattern.match(text):
                return number
        return start


def entry_location(config: Config, spec: ModelSpec, key: str = "target",
                   note: str = "") -> Location:
    """Where `key` of a model's `[[tool.ckptlint.models]]` table is set in pyproject.toml (the
    table's header line when the key is absent)."""
    text = Path(config.pyproject).read_text(encoding="utf-8")
    line = _Lines(text).model_key(spec.index, key) or spec.line or 1
    return Location(relative(config.pyproject, config.root), line, note=note)
