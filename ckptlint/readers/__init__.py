"""Checkpoint readers: any checkpoint file or folder -> its `Signature`, without tensor data.

One module per format, each a `Reader` (`sniff(path, head)`, `read(path, state_dict_key)`),
listed in `READERS` and chosen by the file's content. Reading never runs pickle code and never
reads tensor payloads; every failure is a `CheckpointError` of one sentence naming the file.
"""

from __future__ import annotations

import importlib
from typing import Any

# what the package exports -> the module that holds it, imported on first use: a caller that
# only needs `files` (the cache, the replay) does not pay for the readers and the unpickler
_EXPORTS = {
    "READERS": "dispatch", "read_checkpoint": "dispatch", "read_shard": "dispatch",
    "CheckpointRead": "base", "Reader": "base", "UnsafeCheckpointError": "base",
    "with_tied": "base", "NotRegularFile": "files", "file_kind": "files",
    "open_regular": "files",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ckptlint.readers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ckptlint.readers.{_EXPORTS[name]}"), name)
