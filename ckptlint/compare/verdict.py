"""Whether a checkpoint loads into the code, from the findings about it: the worst verdict their
kinds imply, and which keys decide it."""

from __future__ import annotations

from typing import Iterable

from ckptlint.core.kinds import WORST_FIRST, Kind, Verdict
from ckptlint.core.records import Finding


def verdict(findings: Iterable[Finding]) -> tuple[Verdict, str]:
    """Whether the checkpoint loads into the code, and what to know: the worst verdict a
    finding's kind implies (`KindSpec.verdict`), else whether something drops silently."""
    findings = list(findings)
    implied = {f.kind.spec.verdict for f in findings if not f.silent}
    name = next((v for v in WORST_FIRST if v in implied),
                Verdict.DROPS_SILENTLY if any(f.silent for f in findings) else Verdict.LOADS)
    if name is Verdict.DOES_NOT_LOAD:
        keys = [f.key for f in findings if f.kind is Kind.SHAPE_MISMATCH]
        prefixes = [f.key for f in findings if f.kind is Kind.PREFIX_MISMATCH]
        why = ([f"size mismatch for {_few(keys)}"] if keys else []) + \
            [f"no key matches without handling the `{p}` prefix" for p in prefixes]
        return name, "; ".join(why) or "torch's load_state_dict raises"
    if name in (Verdict.LOADS_NON_STRICT, Verdict.DROPS_SILENTLY):
        random = [f.key for f in findings if f.kind is Kind.MISSING_KEY] + \
            [f.new_key for f in findings if f.kind is Kind.RENAMED_KEY]
        dropped = [f.key for f in findings
                   if f.kind in (Kind.UNEXPECTED_KEY, Kind.BUFFER_NOT_PERSISTENT)]
        tied = [f.key for f in findings if f.kind is Kind.TIED_KEY_ABSENT]
        parts = ([f"stays randomly initialised: {_few(random)}"] if random else []) + \
            ([f"dropped: {_few(dropped)}"] if dropped else []) + \
            ([f"strict=True misses tied {_few(tied)}, which its tie fills"] if tied else [])
        return name, "; ".join(parts)
    return name, ""


def _few(keys: list[str], limit: int = 4) -> str:
    # quoted: a key may hold a comma itself (a ModuleDict's "a,b")
    shown = ", ".join(f"`{k}`" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
