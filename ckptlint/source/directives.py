"""The one parser of suppression comments: `# ckptlint: ignore` and `# ckptlint: ignore[CODE, ...]`.

The locator (which findings a comment silences) and the suppression report (which comments
silenced nothing, CKL205) both read comments through `codes`, so they can never disagree.
"""

from __future__ import annotations

import re

DIRECTIVE = re.compile(r"ckptlint:\s*ignore\b(?:\[([^\]]*)\])?")


def codes(comment: str) -> frozenset[str] | None:
    """The codes a comment silences ("*": every code), or None when it holds no directive.
    Several directives in one comment silence all their codes; `ignore[]` silences none."""
    matches = list(DIRECTIVE.finditer(comment))
    if not matches:
        return None
    found: set[str] = set()
    for match in matches:
        listed = match.group(1)
        found |= {"*"} if listed is None else {c for c in re.split(r"[\s,]+", listed) if c}
    return frozenset(found)
