"""Checkpoints behind URLs, read through fsspec with bounded ranged requests.

`files.open_regular` opens a `RemotePath` as a `RemoteFile`: a `read(n)` at an offset costs
at most one ranged request, and none when its blocks were fetched already (the block cache
coalesces a zip reader's many small reads), so a checkpoint's structure costs over the network
what it costs locally: a safetensors header, a zip's end records, directory and `data.pkl`.

The server is as untrusted as the file: an answer must be exactly the bytes asked for (one
that ignores the range, sends more or less, or reports another size or version than the
metadata said is refused with a sentence), every request has a deadline and is retried a
bounded number of times, and every sentence names the URL without its secrets (`urls.shown`).

Each file costs one metadata request per run (`info`, kept until `new_run`): it gives the size
every read is checked against and the identity the cache and the replay key the file on.
Standard library at import; fsspec and the filesystem packages load when a URL is read.
"""

from __future__ import annotations

import errno
import io
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from ckptlint.core.errors import NotRegularFile
from ckptlint.core.urls import RemotePath
from ckptlint.readers.remotefs import (base_name, fs_call, fs_path, http_head, http_range,
                                       identity_of, listing_identity, new_filesystem, protocol_of,
                                       with_retries)
from ckptlint.readers.remoteinfo import (BLOCK, CACHE_BYTES, HTTP_FOLDER, HTTP_SCHEMES, MAX_REQUEST,
                                         Info, RemoteError, block_range, block_runs, gather,
                                         timeout)


# -- one run's state: filesystems, metadata, blocks ------------------------------------------

class _Run:
    """Everything remote one run has learnt; `new_run` starts afresh, so a later run (also in
    the same process) asks every server again and never trusts what an earlier one was told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.filesystems: dict[str, Any] = {}
        # a failure is kept too: one unreachable server costs its retries once per run
        self.infos: dict[str, Info | FileNotFoundError | RemoteError] = {}
        self.listings: dict[str, list[dict]] = {}
        self.blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self.cached = 0
        self.recorders: list[dict[str, str | None]] = []


_run = _Run()


def new_run() -> None:
    global _run
    _run = _Run()


@contextmanager
def recording() -> Iterator[dict[str, str | None]]:
    """Collect the identity of every remote file (and listed folder) used inside the block,
    from any thread: what a result read from them rests on."""
    seen: dict[str, str | None] = {}
    run = _run
    with run.lock:
        run.recorders.append(seen)
    try:
        yield seen
    finally:
        with run.lock:
            run.recorders.remove(seen)


def _record(url: str, identity: str | None) -> None:
    run = _run
    with run.lock:
        for seen in run.recorders:
            seen[url] = identity


# -- what the readers call (through files.py) -------------------------------------------------

def info(path: RemotePath) -> Info:
    """The URL's metadata, asked once per run; `FileNotFoundError` when the server has none,
    `RemoteError` when it could not be asked."""
    run = _run
    with run.lock:
        known = run.infos.get(path.url)
    if known is None:
        try:
            known = _info(path)
        except (FileNotFoundError, RemoteError) as exc:
            known = exc
        with run.lock:
            known = run.infos.setdefault(path.url, known)
    if isinstance(known, FileNotFoundError):
        raise FileNotFoundError(errno.ENOENT, "not found on the server", str(path))
    if isinstance(known, RemoteError):
        raise RemoteError(known.path, known.message)
    if known.kind == "file":
        _record(path.url, known.identity)
    return known


def kind(path: RemotePath) -> str:
    return info(path).kind


def exists(path: RemotePath) -> bool:
    try:
        info(path)
    except FileNotFoundError:
        return False
    return True


def open_remote(path: RemotePath) -> RemoteFile:
    found = info(path)
    if found.kind != "file":
        raise NotRegularFile(path, "a folder")
    if found.size is None:
        raise RemoteError(str(path), "has no size in the server's answer (no Content-Length), "
                                     "so it cannot be read in ranges")
    return RemoteFile(path, found.size)


def children(folder: RemotePath) -> list[RemotePath]:
    """The entries of a remote folder (one listing request per run), sorted."""
    entries = _listing(folder)
    _record(folder.url, listing_identity(entries))
    return sorted(folder / base_name(e["name"]) for e in entries)


def identity(path: RemotePath) -> str | None:
    """What the server says identifies this version: a file's version fields, a folder's
    listing. None when it names none, or cannot be asked: nothing is cached on it then."""
    found = info(path)
    return found.identity if found.kind == "file" else listing_identity(_listing(path))


def identities(urls: Sequence[str]) -> dict[str, str | None]:
    """`identity` of each URL, asked concurrently; None for any that fails."""
    def one(url: str) -> str | None:
        try:
            return identity(RemotePath(url))
        except Exception:  # the replay and the cache ask: any failure only means "changed"
            return None

    return dict(zip(urls, gather(one, urls)))


class RemoteFile:
    """A remote file read like a local one (`read`, `readline`, `seek`, `tell`), in ranges."""

    def __init__(self, path: RemotePath, size: int):
        self.path, self.size, self._pos, self.closed = path, size, 0, False

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        data = _read(self.path, self.size, self._pos, end) if end > self._pos else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        out = bytearray()
        while self._pos < limit:
            chunk = _read(self.path, self.size, self._pos,
                          min(limit, (self._pos // BLOCK + 1) * BLOCK))
            cut = chunk.find(b"\n")
            chunk = chunk if cut < 0 else chunk[:cut + 1]
            out += chunk
            self._pos += len(chunk)
            if cut >= 0:
                break
        return bytes(out)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self.size)[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position", str(self.path))
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def prefetch(self, spans: Iterable[tuple[int, int]]) -> None:
        """Fetch the blocks of these (offset, length) spans now, concurrently: scattered
        small reads known in advance (a zip's local headers) cost one round trip, not many."""
        wanted = sorted({i for start, length in spans if length > 0 and start < self.size
                         for i in block_range(start, min(start + length, self.size))})
        runs = block_runs(_missing(self.path.url, wanted))
        gather(lambda run: _fetch_blocks(self.path, self.size, *run), runs)

    def fileno(self) -> int:
        raise io.UnsupportedOperation(f"{self.path} is remote: it has no file descriptor")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- blocks ------------------------------------------------------------------------------------


def _missing(url: str, indices: Iterable[int]) -> list[int]:
    run = _run
    with run.lock:
        return [i for i in indices if (url, i) not in run.blocks]


def _read(path: RemotePath, size: int, start: int, end: int) -> bytes:
    indices = block_range(start, end)
    got = _cached(path.url, indices)
    for run in block_runs([i for i in indices if i not in got]):
        got.update(_fetch_blocks(path, size, *run))
    data = b"".join(got[i] for i in indices)
    skip = start - indices[0] * BLOCK
    return data[skip:skip + end - start]


def _cached(url: str, indices: range) -> dict[int, bytes]:
    run = _run
    with run.lock:
        found = {i: run.blocks[(url, i)] for i in indices if (url, i) in run.blocks}
        for i in found:
            run.blocks.move_to_end((url, i))
    return found


def _fetch_blocks(path: RemotePath, size: int, first: int, end: int) -> dict[int, bytes]:
    """Blocks [first, end) of the file, in requests of at most MAX_REQUEST bytes."""
    got: dict[int, bytes] = {}
    per_request = MAX_REQUEST // BLOCK
    for lo in range(first, end, per_request):
        hi = min(lo + per_request, end)
        data = _get(path, size, lo * BLOCK, min(hi * BLOCK, size))
        for i in range(lo, hi):
            got[i] = data[(i - lo) * BLOCK:(i - lo + 1) * BLOCK]
    _keep(path.url, got)
    return got


def _keep(url: str, blocks: dict[int, bytes]) -> None:
    run = _run
    with run.lock:
        for i, block in blocks.items():
            if (url, i) not in run.blocks:
                run.blocks[(url, i)] = block
                run.cached += len(block)
        while run.cached > CACHE_BYTES and run.blocks:
            run.cached -= len(run.blocks.popitem(last=False)[1])


# -- requests: deadlines, retries, what an answer must be ------------------------------------

def _get(path: RemotePath, size: int, start: int, end: int) -> bytes:
    found = info(path)
    data = with_retries(path, lambda: _target_get(path, found, start, end))
    if len(data) > end - start:
        raise RemoteError(str(path), f"sent {len(data)} bytes for a request of {end - start} "
                                     f"(bytes {start}..{end - 1}): the server does not honour "
                                     "range requests as it must")
    if len(data) < end - start:
        raise RemoteError(str(path), f"sent {len(data)} of the {end - start} bytes asked for at "
                                     f"offset {start}, inside the {size} bytes its metadata "
                                     "gave: the file changed, or the server misreports its size")
    return data


def _info(path: RemotePath) -> Info:
    if protocol_of(path) in HTTP_SCHEMES and path.url.split("?")[0].endswith("/"):
        raise RemoteError(str(path), HTTP_FOLDER)
    raw = with_retries(path, lambda: _target_info(path))
    kind = {"file": "file", "directory": "folder"}.get(str(raw.get("type", "file")))
    if kind is None:
        raise RemoteError(str(path), f"is a {raw.get('type')!r} entry on the server, not a "
                                     "file or folder")
    size = raw.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise RemoteError(str(path), f"has a size of {size!r} in the server's answer")
    etag = next((str(v) for k, v in raw.items() if k.lower() == "etag" and v), None)
    return Info(kind, size, identity_of(raw) if kind == "file" else None, etag)


def _listing(folder: RemotePath) -> list[dict]:
    run = _run
    with run.lock:
        known = run.listings.get(folder.url)
    if known is None:
        if protocol_of(folder) in HTTP_SCHEMES:
            raise RemoteError(str(folder), HTTP_FOLDER)
        entries = with_retries(folder, lambda: _target_listing(folder))
        known = [e for e in entries if isinstance(e, dict) and base_name(str(e.get("name", "")))]
        with run.lock:
            known = run.listings.setdefault(folder.url, known)
    return known


# -- the filesystems ------------------------------------------------------------------------


def _filesystem(path: RemotePath) -> Any:
    protocol = protocol_of(path)
    run = _run
    with run.lock:
        fs = run.filesystems.get(protocol)
    if fs is None:
        fs = new_filesystem(path, protocol)
        with run.lock:
            fs = run.filesystems.setdefault(protocol, fs)
    return fs


def _target_info(path: RemotePath) -> dict:
    fs = _filesystem(path)
    if protocol_of(path) in HTTP_SCHEMES:
        from fsspec.asyn import sync

        return sync(fs.loop, http_head, fs, path.url, timeout=timeout())
    return fs_call(fs, "info", fs_path(fs, path))


def _target_get(path: RemotePath, found: Info, start: int, end: int) -> bytes:
    fs = _filesystem(path)
    if protocol_of(path) in HTTP_SCHEMES:
        from fsspec.asyn import sync

        return sync(fs.loop, http_range, fs, path.url, start, end, found, timeout=timeout())
    # object stores (s3fs, gcsfs, hf) honour ranges; the length is checked by `_get`
    return fs_call(fs, "cat_file", fs_path(fs, path), start=start, end=end)


def _target_listing(folder: RemotePath) -> list[dict]:
    fs = _filesystem(folder)
    return fs_call(fs, "ls", fs_path(fs, folder), detail=True)
