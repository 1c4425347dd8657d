"""What every checkpoint reader returns and the small protocol each reader module satisfies.

Also the shared limits: checkpoints are untrusted input, so every size read from a file is
checked against a bound before anything is allocated for it; and the sentence for a file that
cannot be opened (`files.open_regular` is the one way a reader opens one).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Mapping, Protocol

from ckptlint.core.errors import CheckpointError
from ckptlint.core.keys import natural_sorted
from ckptlint.core.record import field, record, replace
from ckptlint.core.records import Signature
from ckptlint.readers.files import NotRegularFile, open_regular, size_of

MAX_PICKLE_BYTES = 256 * 2**20  # a 70B model's data.pkl is ~100 kB; this leaves room for hparams
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit for its JSON header (MAX_HEADER_SIZE)
MAX_TEXT_BYTES = 64 * 2**20  # index JSON and signature TOML files
HEAD_BYTES = 512  # enough to recognise every format by its magic bytes


@record
class CheckpointRead:
    """The signature read from one checkpoint, which format it was, and how it was found.

    `note` says which entry of a nested checkpoint was used (and the alternatives), empty for a
    plain state dict. `tied` lists keys the writer left out because they share a kept tensor
    (dropped key -> kept key), as safetensors' `save_model` records in its metadata.
    """

    signature: Signature
    format: str
    note: str = ""
    tied: Mapping[str, str] = field(default_factory=dict)

    @property
    def full_signature(self) -> Signature:
        """The signature with the dropped tied keys restored, as loading re-ties them."""
        return with_tied(self.signature, self.tied) if self.tied else self.signature


class Reader(Protocol):
    """A reader module: `sniff` recognises its format from the first bytes, `read` reads it."""

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path, state_dict_key: str | None = None) -> CheckpointRead: ...


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint's pickle calls something ckptlint refuses to run; names that global."""

    def __init__(self, path: str, global_name: str, member: str, message: str = ""):
        self.global_name = global_name
        super().__init__(path, message or (
            f"refuses to run `{global_name}`, which the pickle in {member} calls: the file may "
            "be malicious (torch.load with weights_only=False would execute it)"))


def unreadable(path: str | os.PathLike[str], exc: OSError) -> CheckpointError:
    """The one sentence for a path that could not be looked at or opened."""
    where = str(path)
    if isinstance(exc, NotRegularFile):
        return CheckpointError(where, f"is {exc.kind}, not a checkpoint file: ckptlint reads "
                                      "only regular files and checkpoint folders")
    if isinstance(exc, FileNotFoundError):
        return CheckpointError(where, "does not exist")
    if exc.errno == errno.ELOOP:
        return CheckpointError(where, "is a symbolic link that loops back on itself")
    return CheckpointError(where, f"cannot be read ({exc.strerror or exc})")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    try:
        with open_regular(path) as handle:
            return handle.read(size)
    except OSError as exc:
        raise unreadable(path, exc) from None


def read_small(path: Path, limit: int, what: str) -> bytes:
    """The whole of a file that must be small (an index, a pickle), refused beyond `limit`."""
    try:
        with open_regular(path) as handle:
            size = size_of(handle)
            if size > limit:
                raise CheckpointError(str(path), f"is {size} bytes, more than the "
                                                 f"{limit >> 20} MiB ckptlint accepts for {what}")
            return handle.read(limit + 1)
    except OSError as exc:
        raise unreadable(path, exc) from None


def with_tied(sig: Signature, tied: Mapping[str, str]) -> Signature:
    """Add keys a writer dropped because they alias a kept tensor (dropped -> kept).

    `tied` is `CheckpointRead.tied`, or the code signature's `aliases` (which keys the model
    ties): a tied key missing from the checkpoint is then no "missing key" but an alias of the
    kept tensor, exactly as loading the model re-ties it.
    """
    groups: dict[str, set[str]] = {}
    for dropped, kept in tied.items():
        root = sig.aliases.get(kept, kept)
        groups.setdefault(root, set()).add(dropped)
    tensors, aliases = dict(sig.tensors), dict(sig.aliases)
    # root -> the keys aliased to it, kept up to date: a file may name a million ties, and
    # scanning every alias for every group would be quadratic
    tied_to: dict[str, set[str]] = {}
    for key, root in aliases.items():
        tied_to.setdefault(root, set()).add(key)
    for root, dropped in groups.items():
        members = dropped | {root} | tied_to.get(root, set())
        present = natural_sorted(k for k in members if k in tensors)
        if not present:
            continue
        for key in [k for k in members if k not in tensors]:  # not `- tensors.keys()`: O(n)
            tensors[key] = tensors[present[0]]
        first, *rest = natural_sorted(members)
        for key in members:
            old = aliases.pop(key, None)
            if old is not None:
                tied_to[old].discard(key)
        aliases.update(dict.fromkeys(rest, first))
        tied_to.setdefault(first, set()).update(rest)
    return replace(sig, tensors=tensors, aliases=aliases)
