"""Compare a committed signature with the current one: a pure function from data to findings.

Torch's words, torch's sense: the committed signature (or checkpoint) plays the state dict being
loaded, the current code plays the model. When torch's own dry run (`LoadReport`) is given, it is
the verdict and the structure only explains it: keys the model's load hooks absorb are not
findings. No I/O, no printing, no torch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Iterator

from ckptlint.ftypes import Finding, Kind, LoadReport, Signature, TensorSpec
from ckptlint.keys import expand, fold, natural_key, natural_sorted
from ckptlint.sigfile import format_spec


def compare(model: str, old: Signature, new: Signature,
            load: LoadReport | None = None) -> list[Finding]:
    """Findings of loading `old` into code that now produces `new`, folded across layers."""
    return fold_findings(_raw(model, old, new, load))


def _raw(model: str, old: Signature, new: Signature, load: LoadReport | None) -> Iterator[Finding]:
    old_t, new_t = old.tensors, new.tensors
    missing = set(new_t) - set(old_t) if load is None else set(load.missing)
    unexpected = set(old_t) - set(new_t) if load is None else set(load.unexpected)
    common = [k for k in new_t if k in old_t]
    mismatched = {k for k in common if old_t[k].shape != new_t[k].shape}
    if load is not None:
        mismatched = mismatched & set(load.mismatched) | (set(load.mismatched) - set(common))
    for key in natural_sorted(missing):
        yield _finding(Kind.MISSING_KEY, model, key, None, new_t.get(key))
    for key in natural_sorted(unexpected):
        yield _finding(Kind.UNEXPECTED_KEY, model, key, old_t.get(key), None)
    for key in natural_sorted(mismatched):
        yield _finding(Kind.SHAPE_MISMATCH, model, key, old_t.get(key), new_t.get(key))
    for key in natural_sorted(common):
        if key not in mismatched and old_t[key].dtype != new_t[key].dtype:
            yield _finding(Kind.DTYPE_MISMATCH, model, key, old_t[key], new_t[key])
    for error in load.errors if load else ():
        yield Finding(Kind.LOAD_ERROR, model, f"torch's load_state_dict failed: {error}")


def _spec(spec: TensorSpec | None) -> str:
    return format_spec(spec) if spec else "?"


def describe(kind: Kind, key: str, old: TensorSpec | None, new: TensorSpec | None) -> str:
    """The finding's sentence: what differs and what happens at load time."""
    if kind is Kind.MISSING_KEY:
        return (f"`{key}` ({_spec(new)}) is created by the code but absent from the checkpoint: "
                "strict loading fails with \"Missing key(s)\"; with strict=False it stays "
                "randomly initialised")
    if kind is Kind.UNEXPECTED_KEY:
        return (f"`{key}` ({_spec(old)}) is in the checkpoint but the code no longer creates it: "
                "strict loading fails with \"Unexpected key(s)\"; with strict=False its weights "
                "are dropped")
    if kind is Kind.SHAPE_MISMATCH:
        return (f"`{key}` is {_spec(old)} in the checkpoint but {_spec(new)} in the code: "
                "loading fails with \"size mismatch\", even with strict=False")
    if kind is Kind.DTYPE_MISMATCH:
        return (f"`{key}` is {old.dtype if old else '?'} in the checkpoint but "
                f"{new.dtype if new else '?'} in the code: loading casts it silently")
    return kind.doc


def _finding(kind: Kind, model: str, key: str, old: TensorSpec | None,
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
    return sorted(folded, key=_order) + unfoldable


def _order(f: Finding) -> tuple:
    return (f.model, natural_key(f.keys[0] if f.keys else f.key), f.kind.code)
