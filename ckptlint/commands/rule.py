"""`ckptlint rule CODE`: one finding code's docs (like `ruff rule E501`)."""

from __future__ import annotations

from ckptlint.commands.rules import run

__all__ = ["run"]
