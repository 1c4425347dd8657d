"""A proven key mapping as the remap hook states it: regex rules that rename or drop keys.

`run/hook.py` finds and proves the rules; `source/apply.py` writes them into the model's class.
"""

from __future__ import annotations

from ckptlint.core.record import record


# the first line of the hook's docstring: how `remap --apply` knows a function is its own
MARKER = "Written by `ckptlint remap"


@record
class Rules:
    """What the hook does to a key it does not expect: drop it (regex match), else rename it
    (regex rules applied in order, each at most once)."""

    renames: tuple[tuple[str, str], ...] = ()
    drops: tuple[str, ...] = ()

    def __add__(self, other: Rules) -> Rules:
        return Rules(self.renames + other.renames, self.drops + other.drops)
