"""Signature files: the committed TOML form of a `Signature`, read strictly and written atomically.

The writer is deterministic (same signature, same bytes) so `ckptlint update` on unchanged code
leaves the file untouched and any change shows up in review as a small diff. The reader checks
a signature file as strictly as a checkpoint: a format number, dtypes and shapes torch knows,
folded ranges of bounded size; every problem names the file and, where it can, the line.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Mapping

from ckptlint.core.dtypes import ITEMSIZE, OBJECT, shape_problem
from ckptlint.core.errors import CkptlintError, SignatureFileError
from ckptlint.core.keys import MAX_KEYS, TooManyKeys, count, expand, fold, natural_sorted, printable
from ckptlint.core.records import FORMAT_VERSION, Signature, TensorSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHORT_DTYPES = {
    "float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
    "complex64": "c64", "complex128": "c128", "bool": "bool",
    "float8_e4m3fn": "f8e4m3fn", "float8_e5m2": "f8e5m2",
}
LONG_DTYPES = {short: long for long, short in SHORT_DTYPES.items()}
_SPEC = re.compile(r"^([a-z][a-z0-9_]*)\[([0-9, ]*)\]( buffer)?$")
_DTYPES = frozenset(ITEMSIZE) | {OBJECT}
_MAX_DIGITS = 19  # a dimension torch can hold (< 2**63) has at most 19 digits
_RANGES = re.compile(r"\{([0-9]+)\.\.([0-9]+)\}")
_TABLE_LINE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?$")
_PAIR = re.compile(r"\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}")
_KEY_LINE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")
_HEADER_KEYS = {"format", "model", "target", "torch", "source", "parameters", "metadata"}
_TABLES = {"signature", "tensors", "versions", "aliases"}


def format_spec(spec: TensorSpec) -> str:
    """`TensorSpec("float32", (3, 4), "buffer")` -> `f32[3, 4] buffer`."""
    dtype = SHORT_DTYPES.get(spec.dtype, spec.dtype)
    shape = ", ".join(str(d) for d in spec.shape)
    return f"{dtype}[{shape}]" + (" buffer" if spec.role == "buffer" else "")


def tensor_count(count: int) -> str:
    """`1 tensor`, `2 tensors`."""
    return f"{count} tensor{'' if count == 1 else 's'}"


def parse_spec(text: str, from_code: bool) -> TensorSpec | None:
    """`f32[3, 4] buffer` -> its TensorSpec; None if the text is not of that form."""
    match = _SPEC.match(text)
    if not match:
        return None
    dtype = LONG_DTYPES.get(match.group(1), match.group(1))
    dims = [d.strip() for d in match.group(2).split(",")] if match.group(2).strip() else []
    if not all(d.isdigit() and len(d) <= _MAX_DIGITS for d in dims):
        return None
    role = "buffer" if match.group(3) else ("parameter" if from_code else None)
    return TensorSpec(dtype, tuple(int(d) for d in dims), role)


def spec_problem(spec: TensorSpec) -> str | None:
    """Why a parsed spec is no tensor torch could hold (unknown dtype, impossible shape)."""
    if spec.dtype not in _DTYPES:
        return f"has dtype `{spec.dtype}`, which is not a torch dtype"
    return shape_problem(spec.dtype, spec.shape)


def _q(text: str) -> str:
    """A TOML basic string: JSON's escaping, which TOML shares, but for characters beyond the
    BMP, which JSON writes as a surrogate pair and TOML as one `\\UXXXXXXXX`.

    A lone surrogate (a pickle may hold one in a key) has no TOML escape at all, so such a key
    cannot be written.
    """
    quoted = json.dumps(text)
    if "\\ud" not in quoted:
        return quoted
    if not _encodable(text):
        raise CkptlintError(f"key `{printable(text)}` holds a lone surrogate, which a TOML "
                            "signature file cannot hold")
    return _PAIR.sub(_astral, quoted)


def _astral(pair: re.Match[str]) -> str:
    """`\\ud83d\\ude00` (JSON) -> `\\U0001F600` (TOML)."""
    high, low = int(pair.group()[2:6], 16), int(pair.group()[8:12], 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(sig: Signature) -> str:
    """The signature file's text: header, folded tensors, non-default versions, aliases."""
    lines = [
        f"# ckptlint signature of {sig.model or 'a checkpoint'}: one line per tensor, "
        "`dtype[shape]`; runs of identical layers are folded as {first..last}.",
        "# Written by `ckptlint update`; review changes here like code.",
        "[signature]",
        f"format = {FORMAT_VERSION}",
        f"model = {_q(sig.model)}",
        f"target = {_q(sig.target)}",
        f"torch = {_q(sig.torch_version)}",
        f"source = {_q(sig.source)}",
        f"metadata = {'true' if sig.has_metadata else 'false'}",
        f"parameters = {sig.num_parameters}",
        "",
        "[tensors]",
    ]
    tensors = {key: format_spec(spec) for key, spec in sig.tensors.items()}
    lines += [f"{_q(pattern)} = {_q(value)}" for pattern, value in fold(tensors)]
    versions = {prefix: v for prefix, v in sig.versions.items() if v != 1}
    if versions:
        lines += ["", "[versions]"] + [f"{_q(p)} = {v}" for p, v in fold(versions)]
    if sig.aliases:
        lines += ["", "[aliases]"]
        lines += [f"{_q(k)} = {_q(sig.aliases[k])}" for k in natural_sorted(sig.aliases)]
    return "\n".join(lines) + "\n"


class _Problem(Exception):
    """A problem at `[table] key` (or with the table itself when `key` is None)."""

    def __init__(self, message: str, table: str | None = None, key: str | None = None):
        super().__init__(message)
        self.message, self.table, self.key = message, table, key


def loads(text: str, path: str) -> Signature:
    """Parse a signature file's text; every problem is a `SignatureFileError` naming `path`
    and, where it can be told, the line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise SignatureFileError(path, f"is not valid TOML ({exc}); regenerate it with "
                                       "`ckptlint update`",
                                 int(line.group(1)) if line else None) from None
    except RecursionError:
        raise SignatureFileError(path, "nests its TOML too deeply to be a signature file") \
            from None
    try:
        return _signature(doc)
    except _Problem as problem:
        raise SignatureFileError(path, problem.message,
                                 _line_of(text, problem.table, problem.key)) from None


def _signature(doc: Mapping[str, Any]) -> Signature:
    header = _table(doc, "signature")
    _reject_unknown(doc, _TABLES, None, "table")
    _reject_unknown(header, _HEADER_KEYS, "signature", "key in [signature]")
    _check_format(header.get("format"))
    for key, kind in (("metadata", bool), ("parameters", int)):
        if key in header and (type(header[key]) is not kind
                              or (kind is int and header[key] < 0)):
            raise _Problem(f"[signature] `{key}` must be "
                           f"{'true or false' if kind is bool else 'a non-negative integer'}",
                           "signature", key)
    source = _str(header, "source", "code")
    return Signature(
        tensors=_tensors(_table(doc, "tensors"), source == "code"),
        versions=_versions(doc.get("versions", {})),
        aliases=_aliases(doc.get("aliases", {})),
        has_metadata=header.get("metadata", True),
        model=_str(header, "model"),
        target=_str(header, "target"),
        torch_version=_str(header, "torch"),
        source=source,
    )


def _check_format(version: Any) -> None:
    if type(version) is not int or version < 1:
        raise _Problem(f"has `format = {_toml_value(version)}` in [signature], not a format "
                       "number (1 or more)" if version is not None else
                       "has no integer `format` in [signature]", "signature",
                       "format" if version is not None else None)
    if version > FORMAT_VERSION:
        raise _Problem(f"was written by a newer ckptlint (format {version}; this one reads "
                       f"format {FORMAT_VERSION}): upgrade ckptlint", "signature", "format")


def _toml_value(value: Any) -> str:
    return {True: "true", False: "false"}.get(value, repr(value)) \
        if isinstance(value, bool) else printable(repr(value))[:40]


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise _Problem(f"has no [{name}] table; regenerate it with `ckptlint update`")
    return table


def _reject_unknown(table: Mapping[str, Any], known: set[str], where: str | None,
                    what: str) -> None:
    for key in table:
        if key not in known:
            raise _Problem(f"has an unknown {what} `{key}`", where if where else key,
                           key if where else None)


def _str(header: Mapping[str, Any], key: str, default: str = "") -> str:
    value = header.get(key, default)
    if not isinstance(value, str):
        raise _Problem(f"[signature] `{key}` must be a string", "signature", key)
    return value


def _keys(pattern: str, table: str, room: int) -> list[str]:
    """The keys of a folded pattern, refused when a range runs backwards or is too big."""
    for a, b in _RANGES.findall(pattern):
        if len(a) > _MAX_DIGITS or len(b) > _MAX_DIGITS or int(a) >= int(b):
            raise _Problem(f"`{pattern}` has a range {{{a}..{b}}} that is not a run of layers "
                           "(first..last, first < last)", table, pattern)
    try:
        return expand(pattern, limit=room)
    except TooManyKeys:
        raise _Problem(f"`{pattern}` stands for {count(pattern):,} keys, more than the "
                       f"{MAX_KEYS:,} a signature may hold", table, pattern) from None


def _tensors(table: Mapping[str, Any], from_code: bool) -> dict[str, TensorSpec]:
    tensors: dict[str, TensorSpec] = {}
    for pattern, value in table.items():
        spec = parse_spec(value, from_code) if isinstance(value, str) else None
        if spec is None and isinstance(value, str) and _SPEC.match(value):
            raise _Problem(f"tensor `{pattern}` has a dimension in {value!r} larger than "
                           "torch's sizes (int64) allow", "tensors", pattern)
        if spec is None:
            raise _Problem(f"tensor `{pattern}` has value {value!r}, expected \"dtype[shape]\" "
                           "such as \"f32[768, 64]\"", "tensors", pattern)
        problem = spec_problem(spec)
        if problem:
            raise _Problem(f"tensor `{pattern}` {problem}", "tensors", pattern)
        for key in _keys(pattern, "tensors", MAX_KEYS - len(tensors)):
            if key in tensors:
                raise _Problem(f"lists tensor `{key}` twice", "tensors", pattern)
            tensors[key] = spec
    return tensors


def _versions(table: Any) -> dict[str, int]:
    if not isinstance(table, dict):
        raise _Problem("[versions] must be a table", "versions")
    versions: dict[str, int] = {}
    for pattern, value in table.items():
        if type(value) is not int:
            raise _Problem(f"version of module `{pattern}` must be an integer", "versions",
                           pattern)
        versions.update(dict.fromkeys(_keys(pattern, "versions", MAX_KEYS - len(versions)),
                                      value))
    return versions


def _aliases(table: Any) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise _Problem("[aliases] must map keys to key strings", "aliases")
    return dict(table)


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The 1-based line of `[table]`'s entry `key` (or of the table's header), if found."""
    if table is None:
        return None
    current, header_line = None, None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _TABLE_LINE.match(line)
        if match:
            current = match.group(1)
            header_line = number if current == table else header_line
            continue
        match = _KEY_LINE.match(line) if current == table and key is not None else None
        if match and _toml_key(match.group(1)) == key:
            return number
    return header_line


def _toml_key(raw: str) -> str:
    if raw.startswith('"'):
        try:
            return json.loads(raw)
        except ValueError:
            return raw[1:-1]
    return raw.strip("'")
