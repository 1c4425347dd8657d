"""What a reporter may be told besides the report itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderOptions:
    color: bool = False
    command: str = "ckptlint"
    # text only: counts per code instead of the findings; the findings and nothing else
    statistics: bool = False
    quiet: bool = False
