"""The `help:` line of a located drift finding: what to do at the statement it points at."""

from __future__ import annotations

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding


def advice(finding: Finding, model: str, listed: bool = True) -> str:
    """The `help:` line of a drift finding: what to do at the located statement.

    `listed`: the finding's checkpoint is in the entry's `checkpoints` (else `--against`).
    """
    if finding.against:  # a checkpoint file: `update` would not make it load
        remap = f"`ckptlint remap {model} --against {finding.against}`"
        if finding.kind.spec.remaps:
            return f"restore what {finding.against} expects here, or load it through {remap}"
        if finding.kind is Kind.DTYPE_MISMATCH:
            return (f"loading casts {finding.against}'s weights to the code's dtype; restore its "
                    "dtype here if that cast is not wanted")
        if listed:
            return (f"restore what {finding.against} expects here, or stop listing it in "
                    "`checkpoints`")
        return f"restore what {finding.against} expects here: it cannot load until they agree"
    if finding.kind is Kind.RENAMED_KEY and not finding.new_key:
        return ""
    # one wording per kind (`KindSpec.advice`), so findings that share a statement share it
    return finding.kind.spec.advice.format(update=f"`ckptlint update {model}`", model=model)
