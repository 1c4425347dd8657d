"""What a reporter may be told besides the report itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderOptions:
    color: bool = False
    command: str = "ckptlint"
