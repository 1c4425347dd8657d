"""Signature files: the committed TOML form of a `Signature`, read strictly and written atomically.

The writer is deterministic (same signature, same bytes) so `ckptlint update` on unchanged code
leaves the file untouched and any change shows up in review as a small diff.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from ckptlint.errors import SignatureFileError
from ckptlint.ftypes import FORMAT_VERSION, Signature, TensorSpec
from ckptlint.keys import expand, fold, natural_sorted

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
_HEADER_KEYS = {"format", "model", "target", "torch", "source", "parameters", "metadata"}
_TABLES = {"signature", "tensors", "versions", "aliases"}


def format_spec(spec: TensorSpec) -> str:
    """`TensorSpec("float32", (3, 4), "buffer")` -> `f32[3, 4] buffer`."""
    dtype = SHORT_DTYPES.get(spec.dtype, spec.dtype)
    shape = ", ".join(str(d) for d in spec.shape)
    return f"{dtype}[{shape}]" + (" buffer" if spec.role == "buffer" else "")


def parse_spec(text: str, from_code: bool) -> TensorSpec | None:
    match = _SPEC.match(text)
    if not match:
        return None
    dtype = LONG_DTYPES.get(match.group(1), match.group(1))
    dims = [d.strip() for d in match.group(2).split(",")] if match.group(2).strip() else []
    if not all(d.isdigit() for d in dims):
        return None
    role = "buffer" if match.group(3) else ("parameter" if from_code else None)
    return TensorSpec(dtype, tuple(int(d) for d in dims), role)


def _q(text: str) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(text)


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


def loads(text: str, path: str) -> Signature:
    """Parse a signature file's text; every problem is a `SignatureFileError` naming `path`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SignatureFileError(path, f"is not valid TOML ({exc}); regenerate it with "
                                       "`ckptlint update`") from None
    header = _table(doc, "signature", path)
    _reject_unknown(doc, _TABLES, path, "table")
    _reject_unknown(header, _HEADER_KEYS, path, "key in [signature]")
    version = header.get("format")
    if not isinstance(version, int):
        raise SignatureFileError(path, "has no integer `format` in [signature]")
    if version > FORMAT_VERSION:
        raise SignatureFileError(path, f"was written by a newer ckptlint (format {version}; this "
                                       f"one reads format {FORMAT_VERSION}): upgrade ckptlint")
    source = _str(header, "source", path, "code")
    return Signature(
        tensors=_tensors(_table(doc, "tensors", path), path, source == "code"),
        versions=_versions(doc.get("versions", {}), path),
        aliases=_aliases(doc.get("aliases", {}), path),
        has_metadata=bool(header.get("metadata", True)),
        model=_str(header, "model", path),
        target=_str(header, "target", path),
        torch_version=_str(header, "torch", path),
        source=source,
    )


def _table(doc: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise SignatureFileError(path, f"has no [{name}] table; regenerate it with "
                                       "`ckptlint update`")
    return table


def _reject_unknown(table: Mapping[str, Any], known: set[str], path: str, what: str) -> None:
    for key in table:
        if key not in known:
            raise SignatureFileError(path, f"has an unknown {what} `{key}`")


def _str(header: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = header.get(key, default)
    if not isinstance(value, str):
        raise SignatureFileError(path, f"[signature] `{key}` must be a string")
    return value


def _tensors(table: Mapping[str, Any], path: str, from_code: bool) -> dict[str, TensorSpec]:
    tensors: dict[str, TensorSpec] = {}
    for pattern, value in table.items():
        spec = parse_spec(value, from_code) if isinstance(value, str) else None
        if spec is None:
            raise SignatureFileError(path, f"tensor `{pattern}` has value {value!r}, "
                                           "expected \"dtype[shape]\" such as \"f32[768, 64]\"")
        for key in expand(pattern):
            if key in tensors:
                raise SignatureFileError(path, f"lists tensor `{key}` twice")
            tensors[key] = spec
    return tensors


def _versions(table: Any, path: str) -> dict[str, int]:
    if not isinstance(table, dict):
        raise SignatureFileError(path, "[versions] must be a table")
    versions: dict[str, int] = {}
    for pattern, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise SignatureFileError(path, f"version of module `{pattern}` must be an integer")
        versions.update(dict.fromkeys(expand(pattern), value))
    return versions


def _aliases(table: Any, path: str) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise SignatureFileError(path, "[aliases] must map keys to key strings")
    return dict(table)


def read(path: Path, shown: str | None = None) -> Signature:
    """Read a signature file; errors name it as `shown` (default: the path as given)."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureFileError(shown, f"cannot be read ({exc.__class__.__name__}: {exc})")
    return loads(text, shown)
