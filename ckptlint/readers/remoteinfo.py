"""What remote reads share: their limits, what a server said about a file (`Info`), and the
errors a request ends in."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, TypeVar

from ckptlint.core.constants import ENV_REMOTE_TIMEOUT
from ckptlint.core.errors import CheckpointError
from ckptlint.core.record import record

T = TypeVar("T")
BLOCK = 64 << 10  # the unit of fetching and caching: reads near one another share a request
MAX_REQUEST = 8 << 20  # no request asks for more (a multiple of BLOCK); a larger read is several
CACHE_BYTES = 64 << 20  # blocks kept per run, over every remote file
ATTEMPTS = 3  # tries of one request in all, when it fails in a way that may pass
BACKOFF = 0.5  # seconds before the second try, doubled before each further one
DEFAULT_TIMEOUT = 30.0  # seconds for one request: connecting, each read, and the whole of it
CONCURRENCY = 8  # requests in flight at once (shards, scattered zip headers, re-validation)
FOLDER_LIMIT = 100_000  # entries of a remote folder listed for its identity


# metadata fields that name a version of an object, as fsspec's filesystems spell them
# (HTTP, s3fs, gcsfs, huggingface_hub, local-like ones), compared without regard to case
VERSION_FIELDS = frozenset({
    "etag", "versionid", "version_id", "generation", "sha256", "blob_id", "lfs", "md5hash",
    "crc32c", "checksum", "last-modified", "lastmodified", "last_modified", "updated", "mtime"})


RETRIED_STATUS = frozenset({408, 425, 429})  # and every 5xx
HTTP_SCHEMES = ("http", "https")
HTTP_FOLDER = ("is an http(s) folder, which cannot be listed: name the checkpoint file (or its "
                "*.index.json) itself")


class RemoteError(CheckpointError):
    """A remote checkpoint could not be read: the network, the server, or what it answered."""


class Refused(Exception):
    """An answer that is not the one asked for: refused at once, never retried."""


class Status(Exception):
    """An HTTP error status (other than not found or access denied)."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


@record
class Info:
    """What one metadata request said about a URL."""

    kind: str  # "file" or "folder"
    size: int | None
    identity: str | None  # None: the server names no version (size alone is not one)
    etag: str | None = None


def timeout() -> float:
    try:
        value = float(os.environ.get(ENV_REMOTE_TIMEOUT, ""))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def gather(call: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """`call` on each item, CONCURRENCY at a time, results (or the first error) in order."""
    items = list(items)
    if len(items) < 2:
        return [call(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(items)),
                            thread_name_prefix="ckptlint-remote") as pool:
        return list(pool.map(call, items))


def block_range(start: int, end: int) -> range:
    return range(start // BLOCK, (end - 1) // BLOCK + 1)


def block_runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers as [first, end) runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
