"""`import torch` for every build module: one place that says what a missing torch means."""

from __future__ import annotations

import warnings
from typing import Any

from ckptlint.core.errors import TorchMissingError


def import_torch() -> Any:
    # torch warns on import when NumPy is absent ("Failed to initialize NumPy: No module named
    # 'numpy'"). ckptlint never converts a tensor to NumPy (it builds on meta and reads file
    # headers itself), so that one warning is noise to its users; every other warning shows.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy",
                                category=UserWarning)
        try:
            import torch
        except ImportError:
            raise TorchMissingError() from None
    return torch
