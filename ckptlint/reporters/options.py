"""What a reporter may be told besides the report itself."""

from __future__ import annotations

from ckptlint.core.record import record



@record
class RenderOptions:
    color: bool = False
    command: str = "ckptlint"
    # text only: counts per code instead of the findings; the findings and nothing else
    statistics: bool = False
    quiet: bool = False
