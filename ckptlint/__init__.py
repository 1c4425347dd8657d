"""ckptlint: catch PyTorch architecture drift before it breaks a checkpoint."""

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
]
