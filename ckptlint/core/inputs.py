"""What a build depended on, as plain JSON, and whether it still holds. Standard library only.

The cache and the replay answer for a model only when every input of its build is unchanged.
A build records its inputs (`ckptlint.build.tracking`) as a document:

    {"files":    {path: digest},        # sources it imported, data it read, dist RECORD files
     "env":      {NAME: value | null},  # environment variables it read ("*": all of them)
     "paths":    {path: kind},          # existence checks: "file", "dir", "other", "absent"
     "listings": {folder: digest},      # folders listed (by the import system or the code)
     "installed": {folder: stat},       # installed packages' top-level folders
     "remote":   {url: identity}}       # remote checkpoint files and folders that were read

Paths inside the project are relative to its root; others are absolute. `verify` re-reads each
one; anything it cannot read counts as changed. A remote input is re-validated with one
metadata request (`readers.remote.identity`: ETag, version id, size, last-modified), asked
only once every local input is known to hold. Imported by the replay, so it must stay cheap:
fsspec is imported only when a document has remote inputs.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any, Callable, Iterable, Mapping

# Files up to this size are keyed by content. Larger ones (checkpoints) by size, mtime, ctime
# and inode: an edit that keeps the size and restores the mtime still moves the ctime, which
# no user call can set back. A file touched in the last RACY_NS could still change within the
# filesystem's timestamp granularity unnoticed (git's "racily clean" problem): hash it instead.
CONTENT_LIMIT = 1 << 20
RACY_NS = 2_000_000_000
# A JSON document ckptlint wrote itself (cache entry, replay record) is never this large.
JSON_LIMIT = 64 << 20
FOLDER_FILES_LIMIT = 100_000
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
Memo = dict  # path -> digest, shared by every check of one run
# URLs -> what each server says identifies the version it serves now (None: no answer)
Identities = Callable[[list], Mapping[str, Any]]


def sha256(data: bytes = b"") -> Any:
    """`hashlib.sha256`, imported on first use: loading OpenSSL takes 3 ms, and a run that
    hashes nothing (`inspect` of a local file) skips it."""
    import hashlib

    return hashlib.sha256(data)


def _fingerprint(info: os.stat_result) -> str:
    return f"stat:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


def stat_fingerprint(path: str) -> str | None:
    """A file or folder by its own stat (not its content): what replacing it changes."""
    try:
        return _fingerprint(os.lstat(path))
    except OSError:
        return None


def _racy(info: os.stat_result) -> bool:
    now = time.time_ns()
    return any(now - t < RACY_NS for t in (info.st_mtime_ns, info.st_ctime_ns))


def read_regular(path: str, limit: int, follow: bool = True) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes; None for anything else.

    Opened non-blocking and checked with fstat, so a FIFO, socket or device where a file is
    expected is never waited on (no TOCTOU window between a stat and the open).
    """
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def load_json(path: str) -> Any:
    """A JSON document ckptlint wrote, or None when it is missing, foreign or damaged.

    Never follows a symlink, never blocks, never recurses without bound (RecursionError from a
    hostile `[[[[…` is caught), never reads more than JSON_LIMIT.
    """
    data = read_regular(path, JSON_LIMIT, follow=False)
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError, MemoryError):
        return None


def seal(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` with a checksum of itself, so that a damaged copy (truncated, a bit flipped, a
    value of the wrong type, an input deleted from it) is never mistaken for a good one."""
    body = {k: v for k, v in doc.items() if k != "seal"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=True)
    return {**body, "seal": sha256(text.encode()).hexdigest()}


def unsealed(doc: Any) -> dict[str, Any] | None:
    """The document if its checksum holds, else None."""
    if not isinstance(doc, dict) or not isinstance(doc.get("seal"), str):
        return None
    try:
        return doc if seal(doc)["seal"] == doc["seal"] else None
    except (TypeError, ValueError, RecursionError):
        return None


def digest(path: str) -> str | None:
    """A file by content (by stat fingerprint when large), a folder by its files' stats.

    None for what cannot be read, and for FIFOs, sockets and devices: never an input that can
    be vouched for, and never waited on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return _folder(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > CONTENT_LIMIT and not _racy(info):
            return _fingerprint(info)
        sha = sha256()
        while chunk := os.read(fd, 1 << 20):
            sha.update(chunk)
        return sha.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def _folder(path: str) -> str | None:
    """A checkpoint folder (DCP, sharded) or the signatures folder: its files' fingerprints."""
    entries = []
    for directory, _, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            try:
                info = os.lstat(full)
            except OSError:
                return None
            entries.append((os.path.relpath(full, path), _fingerprint(info)))
            if len(entries) > FOLDER_FILES_LIMIT:
                return None
    return sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def kind(path: str) -> str:
    """What an existence check of `path` sees (following symlinks, as os.path.exists does)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return "absent"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return "dir" if stat.S_ISDIR(info.st_mode) else "other"


def listing(path: str, mode: str) -> str | None:
    """A folder's names: "all" of them (code that lists a folder), or only the names an import
    could resolve to ("import": identifiers, optionally with a suffix), so that unrelated files
    appearing (notes, caches) do not count as a change."""
    try:
        names = os.listdir(path)
    except OSError:
        return None
    if mode == "import":
        names = [n for n in names if n.partition(".")[0].isidentifier() and n != "__pycache__"]
    return f"{mode}:" + sha256("\0".join(sorted(names)).encode()).hexdigest()


def environment_digest(environ: Mapping[str, str] | None = None) -> str:
    """The whole environment, for a build that iterated over os.environ."""
    items = sorted(dict(os.environ if environ is None else environ).items())
    return sha256(json.dumps(items).encode()).hexdigest()


def absolute(path: str, root: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def verify(doc: Mapping[str, Any], root: str, memo: Memo | None = None,
           identities: Identities | None = None) -> bool:
    """Whether every recorded input still reads the same. A malformed document is False.

    `identities` asks servers what version each URL is (`readers.remote.identities`); without
    it a document naming a remote file is never verified."""
    memo = {} if memo is None else memo
    try:
        for path, expected in doc["files"].items():
            full = absolute(path, root)
            if full not in memo:
                memo[full] = digest(full)
            if memo[full] != expected or expected is None:
                return False
        for name, value in doc["env"].items():
            if (environment_digest() if name == "*" else os.environ.get(name)) != value:
                return False
        if any(kind(absolute(p, root)) != k for p, k in doc["paths"].items()):
            return False
        if any(stat_fingerprint(p) != f for p, f in doc.get("installed", {}).items()):
            return False
        if not all(listing(absolute(p, root), str(d).partition(":")[0]) == d
                   for p, d in doc["listings"].items()):
            return False
        return remote_unchanged(doc.get("remote", {}), identities)
    except (KeyError, TypeError, AttributeError, ValueError):
        return False


def remote_unchanged(recorded: Mapping[str, Any], identities: Identities | None) -> bool:
    """Whether every remote file still says it is the version that was read: the replay and
    the cache never answer for a remote file they have not asked about in this run."""
    if not recorded:
        return True
    if identities is None:
        return False
    now = identities(list(recorded))
    return all(value is not None and now.get(url) == value for url, value in recorded.items())


EMPTY: dict[str, dict] = {"files": {}, "env": {}, "paths": {}, "listings": {}, "installed": {},
                          "remote": {}}


def merge(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict] | None:
    """One document holding every input of `docs`; None when two disagree about one input
    (it changed between the builds that read it)."""
    merged: dict[str, dict] = {section: {} for section in EMPTY}
    for doc in docs:
        for section, values in doc.items():
            target = merged.setdefault(section, {})
            for key, value in values.items():
                if target.setdefault(key, value) != value:
                    return None
    return merged
