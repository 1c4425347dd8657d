"""What a finding says: its sentence from its kind's spec, and findings that differ only in a
layer index folded into one `layers.{0..11}.…` finding, in report order."""

from __future__ import annotations

from typing import Iterable

from ckptlint.core.keys import expand, fold, natural_key
from ckptlint.core.kinds import Kind
from ckptlint.core.record import replace
from ckptlint.core.records import Finding, TensorSpec
from ckptlint.core.sigfile import format_spec


def describe(kind: Kind, key: str, old: TensorSpec | None, new: TensorSpec | None) -> str:
    """The finding's sentence: what differs and what happens at load time (`KindSpec.message`)."""
    spec = kind.spec
    if not spec.message:
        return kind.doc
    return spec.message.format(key=key, old=_side(spec.shows, old), new=_side(spec.shows, new))


def _side(shows: str, spec: TensorSpec | None) -> str:
    if spec is None:
        return "?"
    if shows == "dtype":
        return spec.dtype
    if shows == "role":
        return spec.role or "?"
    return format_spec(spec)


def key_finding(kind: Kind, model: str, key: str, old: TensorSpec | None,
             new: TensorSpec | None) -> Finding:
    return Finding(kind, model, describe(kind, key, old, new), key=key, keys=(key,),
                   old=old, new=new)


def fold_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Fold findings that differ only in a layer index into one `layers.{0..11}.…` finding."""
    findings = list(findings)
    groups: dict[tuple, dict[str, Finding]] = {}
    unfoldable: list[Finding] = []
    for f in findings:
        if f.key and len(f.keys) <= 1 and not f.new_key:
            groups.setdefault((f.model, f.kind, f.old, f.new), {})[f.key] = f
        else:
            unfoldable.append(f)
    folded: list[Finding] = []
    for (model, kind, old, new), members in groups.items():
        for pattern, _ in fold(dict.fromkeys(members, True)):
            first = members[expand(pattern)[0]]
            keys = tuple(expand(pattern))
            folded.append(replace(first, key=pattern, keys=keys,
                                  message=describe(kind, pattern, old, new)
                                  if first.message == describe(kind, first.key, old, new)
                                  else first.message))
    return sorted(folded + unfoldable, key=_order)


_FIRST = (Kind.PREFIX_MISMATCH, Kind.NEEDS_REAL_LOAD)  # they explain every finding after them


def _order(f: Finding) -> tuple:
    rank = 0 if f.kind in _FIRST else 1 if f.key else 2
    return (f.model, rank, natural_key(f.keys[0] if f.keys and rank else f.key), f.kind.code)
