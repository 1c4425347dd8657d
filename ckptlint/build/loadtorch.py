"""`import torch` for every build module: one place that says what a missing torch means."""

from __future__ import annotations

import gc
import sys
import warnings
from typing import Any

from ckptlint.core.errors import TorchMissingError


def import_torch() -> Any:
    """torch, imported once with the cyclic garbage collector out of its way.

    `import torch` creates about a million objects, nearly all of which live until the
    process ends (modules, functions, op tables). The collector would walk them all at each
    full collection: during the import (~0.1 s here) and again, over and over, while models
    are built and reports made (~0.1 s each). So the collector is paused for the import and
    what it created is then frozen (`gc.freeze`, made for this and for fork's copy-on-write):
    frozen objects are never scanned, never freed, and behave otherwise exactly as before.
    Assumptions, tested in tests/test_cold_path.py: the garbage the import itself leaves
    (cycles it drops: about 7,000 small objects, 0.65 MB here) is small, and is kept until
    exit instead of freed; objects made later, by models and by ckptlint, are collected as
    usual; a collector the caller had paused stays paused.
    """
    if sys.modules.get("torch") is not None:  # None there means "not importable"
        return sys.modules["torch"]
    # torch warns on import when NumPy is absent ("Failed to initialize NumPy: No module named
    # 'numpy'"). ckptlint never converts a tensor to NumPy (it builds on meta and reads file
    # headers itself), so that one warning is noise to its users; every other warning shows.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy",
                                    category=UserWarning)
            try:
                import torch
            except ImportError:
                raise TorchMissingError() from None
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    return torch
