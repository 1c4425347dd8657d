"""ckptlint's own signature files, so `inspect` and `diff` take them wherever a checkpoint goes."""

from __future__ import annotations

from pathlib import Path

from ckptlint import sigfile
from ckptlint.errors import CheckpointError, SignatureFileError
from ckptlint.readers.base import MAX_TEXT_BYTES, CheckpointRead, read_small

FORMAT = "signature"
_STARTS = (b"# ckptlint signature", b"[signature]")


def sniff(path: Path, head: bytes) -> bool:
    return path.suffix == ".toml" or head.lstrip().startswith(_STARTS)


def read(path: Path, state_dict_key: str | None = None) -> CheckpointRead:
    data = read_small(path, MAX_TEXT_BYTES, "a signature file")
    try:
        text = data.decode("utf-8")
        sig = sigfile.loads(text, str(path))
    except UnicodeDecodeError:
        raise CheckpointError(str(path), "is not UTF-8 text, so not a signature file") from None
    except SignatureFileError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise CheckpointError(where, exc.message) from None
    note = f"a signature file; state_dict_key `{state_dict_key}` does not apply" if (
        state_dict_key) else ""
    return CheckpointRead(sig, FORMAT, note)
