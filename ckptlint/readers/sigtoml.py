"""ckptlint's own signature files, so `inspect` and `diff` take them wherever a checkpoint goes."""

from __future__ import annotations

from pathlib import Path

from ckptlint.core import sigfile
from ckptlint.core.errors import CheckpointError, NotRegularFile, SignatureFileError
from ckptlint.core.records import Signature
from ckptlint.readers import formats
from ckptlint.readers.base import MAX_TEXT_BYTES, CheckpointRead, read_small
from ckptlint.readers.files import open_regular

FORMAT = formats.SIGNATURE


sniff = formats.signature


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


def read_signature(path: Path, shown: str | None = None) -> Signature:
    """Read a signature file; errors name it as `shown` (default: the path as given).

    It is opened as every untrusted file is (`open_regular`): a FIFO in its place is refused,
    never waited on.
    """
    shown = shown or str(path)
    try:
        with open_regular(path) as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise SignatureFileError(shown, f"is more than {MAX_TEXT_BYTES >> 20} MiB, too big "
                                            "for a signature file")
        text = data.decode("utf-8")
    except NotRegularFile as exc:
        raise SignatureFileError(shown, f"is {exc.kind}, not a signature file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureFileError(shown, f"cannot be read ({exc.__class__.__name__}: {exc})") \
            from None
    return sigfile.loads(text, shown)
