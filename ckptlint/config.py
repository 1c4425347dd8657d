"""Find and validate `[tool.ckptlint]` in pyproject.toml; strict, so a typo never disables a check."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from ckptlint.core.errors import ConfigError, NoProjectError
from ckptlint.core.paths import display, inside, relative
from ckptlint.core.records import DEFAULT_BUILD_TIMEOUT, Config, Location, ModelSpec
from ckptlint.core.urls import is_url, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOOL_KEYS = ("signatures", "pythonpath", "python", "build_timeout", "models")
MODEL_KEYS = ("name", "target", "kwargs", "checkpoints", "state_dict_key", "strip_prefix",
              "ignore")
# Both are matched with `fullmatch`: `$` would also match before a trailing newline.
_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# File systems cap a file name at 255 bytes; the longest name ckptlint derives from a model name
# (a temp file `.NAME.toml.XXXXXXXX.ckptlint-tmp`) adds 28 to it, and names are ASCII.
MAX_NAME_LENGTH = 200
# Real kwargs nest a handful of tables; at this depth nothing that walks them (this validation,
# `_target_` instantiation, the cache key's json) comes near Python's recursion limit.
MAX_KWARGS_DEPTH = 32
_MODELS_HEADER = re.compile(r"^\s*\[\[\s*tool\s*\.\s*ckptlint\s*\.\s*models\s*\]\]")
_TOOL_HEADER = re.compile(r"^\s*\[\s*tool\s*\.\s*ckptlint\s*\]")
_ANY_HEADER = re.compile(r"^\s*\[")
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|\'[^\']*\'|#.*')


def find_pyproject(start: Path) -> Path:
    """The first pyproject.toml with a `[tool.ckptlint]` table, walking up from `start`."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if _mentions_ckptlint(candidate) and "ckptlint" in _load(candidate)[1].get("tool", {}):
            return candidate
    raise NoProjectError(str(start), "no pyproject.toml with a [tool.ckptlint] table here or in "
                                     "any parent directory; run `ckptlint init` to register your "
                                     "models")


def _mentions_ckptlint(candidate: Path) -> bool:
    """Whether a pyproject.toml may be ours: one that never says "ckptlint" is another project's
    business, even when it is not valid TOML or not UTF-8."""
    try:
        return candidate.is_file() and b"ckptlint" in candidate.read_bytes()
    except OSError as exc:
        raise ConfigError(display(candidate), f"cannot be read ({exc.strerror})") from None


def load_config(start: Path | None = None) -> Config:
    pyproject = find_pyproject((start or Path.cwd()).resolve())
    return parse_config(pyproject)


def parse_config(pyproject: Path) -> Config:
    text, document = _load(pyproject)
    table = document.get("tool", {}).get("ckptlint")
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
        signatures=_signatures(table, pyproject.parent, where, lines.key(lines.tool, "signatures")),
        pythonpath=_string_list(table, "pythonpath", where, lines.tool),
        python=_string(table, "python", "tool.ckptlint", where, lines.tool, "") if "python" in table
        else "",
        models=specs,
        line=lines.tool,
        build_timeout=_seconds(table, "build_timeout", where, lines.key(lines.tool, "build_timeout")),
    )


def _load(path: Path) -> tuple[str, dict[str, Any]]:
    """The text of a pyproject.toml and its parsed TOML."""
    text = _text(path)
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(display(path), f"is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        line = _too_deep_line(text)
        entry = _Lines(text).entry_of(line) if line else None
        what = f"`{entry}`" if entry else "it"
        raise ConfigError(display(path), f"{what} nests arrays or inline tables too deeply to be "
                                         "parsed; flatten them", line=line) from None


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(display(path), f"cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(display(path), f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                                         f"offset {exc.start}); TOML files must be saved as "
                                         "UTF-8", line=line) from None


def _too_deep_line(text: str) -> int | None:
    """The line where arrays and inline tables first nest more than MAX_KWARGS_DEPTH deep,
    strings and comments skipped (a best effort, multi-line strings are not: it only names a
    line in an error message)."""
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for char in _STRING_OR_COMMENT.sub("", line):
            if char in "[{":
                depth += 1
                if depth > MAX_KWARGS_DEPTH:
                    return number
            elif char in "]}":
                depth = max(depth - 1, 0)
    return None


def _model(table: Mapping[str, Any], index: int, where: str, lines: _Lines) -> ModelSpec:
    path = f"tool.ckptlint.models[{index}]"
    line = lines.model(index)
    _check_keys(table, MODEL_KEYS, path, where, lambda k: lines.model_key(index, k))
    name = _string(table, "name", path, where, line)
    if not _NAME.fullmatch(name):
        raise ConfigError(where, f"`{path}.name` = {name!r} must be a file-name-safe identifier "
                                 "(letters, digits, `_`, `-`, `.`)", line=line)
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(where, f"`{path}.name` is {len(name)} characters long; a model name "
                                 f"(the name of its signature file) may have at most "
                                 f"{MAX_NAME_LENGTH}", line=lines.model_key(index, "name"))
    target = _string(table, "target", path, where, line)
    _check_target(target, f"{path}.target", where, lines.model_key(index, "target"))
    kwargs = table.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(where, f"`{path}.kwargs` must be a table", line=line)
    _check_kwargs(kwargs, f"{path}.kwargs", where, lines.model_key(index, "kwargs"))
    checkpoints = _string_list(table, "checkpoints", where, lines.model_key(index, "checkpoints"),
                               f"{path}.checkpoints")
    _check_checkpoints(checkpoints, f"{path}.checkpoints", where,
                       lines.model_key(index, "checkpoints"))
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
    from ckptlint.core.kinds import Kind

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


def _check_checkpoints(entries: tuple, path: str, where: str, line: int | None) -> None:
    """Each entry is a path (relative to the project root) or a URL (`s3://`, `https://`, ...,
    read in ranges through fsspec). A URL never carries a user name or password: the file is
    committed, and credentials belong where each filesystem finds them."""
    for entry in entries:
        if not is_url(entry):
            continue
        try:
            parts = urlsplit(entry)
            parts.port  # a bad host or port raises here, not in the middle of a run
        except ValueError as exc:
            raise ConfigError(where, f"`{path}` lists a URL that is not valid ({exc})", key=path,
                              line=line) from None
        if parts.username or parts.password:
            raise ConfigError(where, f"`{path}` lists {shown(entry)} with credentials in it; "
                                     "put them where its filesystem looks (environment "
                                     "variables, config files), never in pyproject.toml",
                              key=path, line=line)


def _check_target(target: Any, path: str, where: str, line: int | None) -> None:
    if not isinstance(target, str) or not _TARGET.fullmatch(target):
        raise ConfigError(where, f"`{path}` = {target!r} is not of the form "
                                 "\"package.module:attribute\"", key=path, line=line)


def _check_kwargs(kwargs: dict, path: str, where: str, line: int | None) -> None:
    """Every `_target_` inside kwargs is "module:attr", and kwargs nest at most MAX_KWARGS_DEPTH."""
    for inner, value, depth in _nested(kwargs, path):
        if depth > MAX_KWARGS_DEPTH:
            raise ConfigError(where, f"`{path}` nests tables or arrays more than "
                                     f"{MAX_KWARGS_DEPTH} levels deep; flatten it", key=path,
                              line=line)
        if isinstance(value, dict) and "_target_" in value:
            _check_target(value["_target_"], f"{inner}._target_", where, line)


def _nested(value: Any, path: str) -> Iterator[tuple[str, Any, int]]:
    """(path, table or array, depth) for `value` and every table and array inside it, in
    order, walked without recursion so that no depth exhausts the stack; nothing below
    MAX_KWARGS_DEPTH + 1 is visited (the caller refuses that depth)."""
    stack = [(path, value, 1)]
    while stack:
        inner, item, depth = stack.pop()
        yield inner, item, depth
        if depth > MAX_KWARGS_DEPTH:
            continue
        children = item.items() if isinstance(item, dict) else enumerate(item)
        stack += reversed([(f"{inner}.{k}" if isinstance(item, dict) else f"{inner}[{k}]", v,
                            depth + 1) for k, v in children if isinstance(v, (dict, list))])


def _signatures(table: Mapping[str, Any], root: Path, where: str, line: int | None) -> str:
    """`signatures` names a folder inside the project: `update` writes there, and nowhere else."""
    value = _string(table, "signatures", "tool.ckptlint", where, line, "signatures")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    problem = ""
    if posix.anchor or windows.anchor:
        problem = "is an absolute path"
    elif ".." in windows.parts:  # PureWindowsPath splits at both `/` and `\\`
        problem = "goes up with `..`"
    elif not inside(root / value, root):
        problem = f"leads outside the project through a symlink (to {(root / value).resolve()})"
    elif (root / value).resolve() == root.resolve():
        problem = "is the project folder itself (where a model's file could replace pyproject.toml)"
    if problem:
        raise ConfigError(where, f"`tool.ckptlint.signatures` = {value!r} {problem}; it must "
                                 "name a folder inside the project, such as \"signatures\"",
                          key="tool.ckptlint.signatures", line=line)
    return value


def _check_unique(specs: tuple[ModelSpec, ...], where: str, lines: _Lines) -> None:
    """Names are unique, also ignoring case: `Model.toml` and `model.toml` are one file on the
    default file systems of macOS and Windows."""
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        first = seen.setdefault(spec.name.lower(), spec)  # names are ASCII (see _NAME)
        if first is spec:
            continue
        same = "is already used by" if first.name == spec.name else \
            f"differs only in case from {first.name!r}, the name of"
        raise ConfigError(where, f"`tool.ckptlint.models[{spec.index}].name` = {spec.name!r} "
                                 f"{same} tool.ckptlint.models[{first.index}]",
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

    def entry_of(self, line: int) -> str | None:
        """`tool.ckptlint.models[i]` when `line` lies in that entry's table."""
        index = sum(1 for start in self._models if start <= line) - 1
        between = self._lines[self._models[index]:line - 1] if index >= 0 else []
        if index < 0 or any(_ANY_HEADER.match(text) for text in between):
            return None
        return f"tool.ckptlint.models[{index}]"

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
    try:
        text = Path(config.pyproject).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # changed since it was parsed: the entry's first line
        text = ""
    line = (_Lines(text).model_key(spec.index, key) if text else None) or spec.line or 1
    return Location(relative(config.pyproject, config.root), line, note=note)


def signature_path(config: Config, name: str) -> Path:
    """Where the committed signature of model `name` lives."""
    return Path(config.root) / config.signatures / f"{name}.toml"
