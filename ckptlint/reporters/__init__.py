"""Reporters: one module per output format, each a `render(report, options) -> str`.

They only format; choosing where the text goes is the CLI's job. Modules are imported when
their format is used, so a run pays only for the reporters it needs.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ckptlint.core.records import Report
from ckptlint.reporters.options import RenderOptions

Renderer = Callable[[Report, RenderOptions], str]

REPORTERS: dict[str, str] = {
    "text": "ckptlint.reporters.text",
    "json": "ckptlint.reporters.json",
    "github": "ckptlint.reporters.github",
    "sarif": "ckptlint.reporters.sarif",
    "markdown": "ckptlint.reporters.markdown",
}


def renderer(name: str) -> Renderer:
    return importlib.import_module(REPORTERS[name]).render


__all__ = ["REPORTERS", "RenderOptions", "Renderer", "renderer"]
