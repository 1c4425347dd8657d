"""The words of a grouped finding: its headline, and one line per member. Pure."""

from __future__ import annotations

from typing import Sequence

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding
from ckptlint.core.sigfile import format_spec, tensor_count


# a group's sentence per kind: (traced to an edit, grouped at the creating statement), then
# what that does at load time
_SAID = {
    Kind.SHAPE_MISMATCH: ("this change alters the shape of {t}", "{t} created here changed shape",
                          "loading fails with \"size mismatch\", even with strict=False"),
    Kind.DTYPE_MISMATCH: ("this change alters the dtype of {t}", "{t} created here changed dtype",
                          "loading casts them silently"),
    Kind.MISSING_KEY: ("this change adds {t} the checkpoint lacks",
                       "{t} created here are absent from the checkpoint",
                       "strict loading fails with \"Missing key(s)\"; with strict=False they "
                       "stay randomly initialised"),
    Kind.UNEXPECTED_KEY: ("since this change the code no longer creates {t} of the checkpoint",
                          "{t} of the checkpoint are no longer created here",
                          "strict loading fails with \"Unexpected key(s)\"; with strict=False "
                          "their weights are dropped"),
    Kind.RENAMED_KEY: ("this change moves {t} to new keys", "{t} created here moved to new keys",
                       "strict loading fails with \"Missing/Unexpected key(s)\", and with "
                       "strict=False the moved weights stay randomly initialised"),
}


def headline(members: Sequence[Finding], changed: bool) -> str:
    """The sentence of a grouped finding: how many tensors, what happened, what breaks."""
    count = sum(len(m.keys) for m in members)
    tensors = tensor_count(count)
    kinds = list(dict.fromkeys(m.kind for m in members))
    if len(kinds) == 1 and kinds[0] in _SAID:
        by_edit, here, breaks = _SAID[kinds[0]]
        return f"{(by_edit if changed else here).format(t=tensors)}: {breaks}"
    parts = ", ".join(f"{sum(len(m.keys) for m in members if m.kind is k)} {k.slug}"
                      for k in kinds)
    said = f"this change affects {tensors}" if changed else f"{tensors} created here differ"
    return f"{said} ({parts}): each is listed below"


def brief(finding: Finding) -> str:
    """One member of a group on one line: the key and what differs."""
    key = f"`{finding.key}`"
    old, new = finding.old, finding.new
    if finding.kind is Kind.SHAPE_MISMATCH:
        return f"{key} {_spec(old)} → {_spec(new)}"
    if finding.kind is Kind.DTYPE_MISMATCH:
        return f"{key} {old.dtype if old else '?'} → {new.dtype if new else '?'}"
    if finding.kind is Kind.MISSING_KEY:
        return f"{key} {_what(finding, new)}new"
    if finding.kind is Kind.UNEXPECTED_KEY:
        gone = "silently dropped" if finding.silent else "no longer created"
        return f"{key} {_what(finding, old)}{gone}"
    if finding.kind is Kind.RENAMED_KEY:
        why = f" ({finding.evidence})" if finding.evidence else ""
        return f"{key} → `{finding.new_key}`{why}"
    if finding.kind is Kind.TIE_CHANGED:  # the keys of one tie: each names the others
        key = ", ".join(f"`{k}`" for k in finding.keys or (finding.key,))
    return f"{key}: {finding.kind.slug}"


def _what(finding: Finding, spec) -> str:
    if finding.key.endswith(".*"):
        return f"({tensor_count(len(finding.keys))}) "
    return f"({format_spec(spec)}) " if spec is not None else ""


def _spec(spec) -> str:
    return format_spec(spec) if spec is not None else "?"
