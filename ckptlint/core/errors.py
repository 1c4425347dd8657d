"""The exception root of ckptlint; only the CLI turns these into stderr lines and exit code 2."""

from __future__ import annotations

import errno
import os

from ckptlint.core.keys import printable


class CkptlintError(Exception):
    """Something ckptlint could not do; `str()` is one sentence naming the file, key or model."""


class ConfigError(CkptlintError):
    """The `[tool.ckptlint]` table is missing or invalid."""

    def __init__(self, path: str, message: str, key: str = "", line: int | None = None):
        self.path, self.key, self.line = path, key, line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class SignatureFileError(CkptlintError):
    """A signature file is unreadable, hand-broken or from a newer ckptlint; `line` (1-based)
    is where, when known. Untrusted text in the sentence is escaped (`keys.printable`)."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path, self.line, self.message = path, line, printable(message)
        where = f"{path}:{line}" if line else path
        super().__init__(f"{printable(where)}: {self.message}")


class CheckpointError(CkptlintError):
    """A checkpoint file cannot be read safely. The sentence quotes keys and member names from
    the file, so its untrusted text is escaped (`keys.printable`) wherever it is printed."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, printable(message)
        super().__init__(f"{printable(path)}: {self.message}")


class TorchMissingError(CkptlintError):
    """torch is not importable in the interpreter that must build the models."""

    def __init__(self) -> None:
        super().__init__(
            "torch is not installed in this environment; ckptlint builds models with your own "
            "torch: install it (`pip install torch`, or `pip install \"ckptlint[torch]\"`), or "
            "point ckptlint at the Python that has it (CKPTLINT_PYTHON, [tool.ckptlint] python, "
            "or a .venv in the project)"
        )


class WriteError(CkptlintError, OSError):
    """A file ckptlint had to write could not be written (read-only folder, full disk, ...).

    Also an `OSError` (with the cause's errno and strerror), so code that already treats a failed
    write as "go on without it" (the cache) keeps doing so.
    """

    def __init__(self, path: str, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path = path
        self.message = f"{path}: cannot be written ({reason(cause)})"

    def __str__(self) -> str:
        return self.message


def reason(cause: OSError) -> str:
    """`permission denied`, `no space left on device`, ...: the system's words, lower case."""
    text = cause.strerror or str(cause) or type(cause).__name__
    return text[:1].lower() + text[1:]


class NoProjectError(ConfigError):
    """No pyproject.toml with a `[tool.ckptlint]` table here or above: not inside a project."""


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder stands where a regular file is expected."""

    def __init__(self, path: str | os.PathLike[str], kind: str):
        self.kind = kind
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
