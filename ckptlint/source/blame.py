"""What version control says about a model since its signature was committed: how the kwargs
in pyproject.toml changed, and which torch wrote the signature.

The signature file records no kwargs, so the only witness of "what the code was built with"
is version control: the entry in pyproject.toml at the commit that last wrote the signature
file (`ckptlint.source.changes`). A difference there is a change a finding may trace back to;
that it is *the* cause is `ckptlint.source.causes`' call (certain only when no Python file
changed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

from ckptlint.core.paths import relative
from ckptlint.core.records import Config, ModelSpec
from ckptlint.source import history
from ckptlint.source.changes import Changes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_UNSET = object()  # a kwarg absent on one side


def kwargs_delta(config: Config, spec: ModelSpec,
                 changes: Changes) -> tuple[str, list[str]] | None:
    """How the model's kwargs differ from the signature's commit (`"kwargs changed since …:
    a: 1 → 2"`, with the changed kwargs' own names), or None when they do not (or the entry's
    target changed too: then it is another model)."""
    root = Path(config.root)
    old = _committed_entry(root, changes.commit, relative(config.pyproject, root), spec.name)
    if old is None or old.get("target") != spec.target:
        return None
    before, after = _flat(old.get("kwargs", {})), _flat(spec.kwargs)
    changed = _changes(before, after)
    if not changed:
        return None
    names = [key.rpartition(".")[2] for key in sorted(set(before) | set(after))
             if before.get(key, _UNSET) != after.get(key, _UNSET)]
    note = (f"the kwargs changed since {changes.signature} was committed ({changes.short}): "
            + ", ".join(changed[:3]) + (", …" if len(changed) > 3 else ""))
    return note, names


def _committed_entry(root: Path, commit: str, pyproject: str,
                     name: str) -> Mapping[str, Any] | None:
    text = history.show(root, commit, pyproject)
    try:
        models = tomllib.loads(text or "").get("tool", {}).get("ckptlint", {}).get("models", [])
    except tomllib.TOMLDecodeError:
        return None
    found = [m for m in models if isinstance(m, dict) and m.get("name") == name]
    return found[0] if found else None


def committed_torch(path: Path) -> str:
    """The torch version in a signature file's header ("" if none, "?" if unreadable)."""
    try:
        header = tomllib.loads(path.read_text(encoding="utf-8")).get("signature", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "?"
    return str(header.get("torch", ""))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and (value or not prefix):
        return {k: v for key, item in value.items()
                for k, v in _flat(item, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: value}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{key}: {_shown(old.get(key, _UNSET))} → {_shown(new.get(key, _UNSET))}"
            for key in sorted(set(old) | set(new)) if old.get(key, _UNSET) != new.get(key, _UNSET)]


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, default=str)
