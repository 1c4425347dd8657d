"""ckptlint: catch PyTorch architecture drift before it breaks a checkpoint.

The API for a project's own tests (`assert_loads`, `check`, `signature`, `read`) imports torch
only when called; `import ckptlint` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ckptlint.errors import CkptlintError  # noqa: E402
from ckptlint.ftypes import (  # noqa: E402
    Finding,
    Kind,
    Location,
    Report,
    Severity,
    Signature,
    TensorSpec,
)

__all__ = [
    "CkptlintError",
    "Finding",
    "Kind",
    "Location",
    "Report",
    "Severity",
    "Signature",
    "TensorSpec",
    "__version__",
    "assert_loads",
    "check",
    "read",
    "signature",
]

_API = {"assert_loads", "check", "read", "signature"}


def __getattr__(name: str):  # PEP 562: the API module (and what it imports) loads on first use
    if name in _API:
        from ckptlint import api

        return getattr(api, name)
    raise AttributeError(f"module 'ckptlint' has no attribute {name!r}")
