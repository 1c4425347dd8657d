"""ckptlint: catch PyTorch architecture drift before it breaks a checkpoint.

Every public name loads on first use (PEP 562), so `import ckptlint` costs nothing and the test
API (`assert_loads`, `check`, `convert`, `signature`, `read`) imports torch only when called.
"""

from __future__ import annotations

import importlib
from typing import Any

from ckptlint.core.constants import VERSION as __version__  # noqa: F401 (public)

_HOMES = {
    "CkptlintError": "ckptlint.core.errors",
    "Finding": "ckptlint.core.records",
    "Kind": "ckptlint.core.kinds",
    "Location": "ckptlint.core.records",
    "Report": "ckptlint.core.records",
    "Severity": "ckptlint.core.kinds",
    "Signature": "ckptlint.core.records",
    "TensorSpec": "ckptlint.core.records",
    "assert_loads": "ckptlint.api",
    "check": "ckptlint.api",
    "convert": "ckptlint.api",
    "read": "ckptlint.api",
    "signature": "ckptlint.api",
}

__all__ = sorted([*_HOMES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'ckptlint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
