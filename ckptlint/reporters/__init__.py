"""Reporters: one module per output format, each a `render(report, options) -> str`.

They only format; choosing where the text goes is the CLI's job.
"""

from __future__ import annotations

from typing import Callable

from ckptlint.ftypes import Report
from ckptlint.reporters import github, json, markdown, sarif, text
from ckptlint.reporters.options import RenderOptions

Renderer = Callable[[Report, RenderOptions], str]

REPORTERS: dict[str, Renderer] = {
    "text": text.render,
    "json": json.render,
    "github": github.render,
    "sarif": sarif.render,
    "markdown": markdown.render,
}

__all__ = ["REPORTERS", "RenderOptions", "Renderer"]
