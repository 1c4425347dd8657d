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
import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ckptlint.core.constants import ENV_REMOTE_TIMEOUT
from ckptlint.core.errors import CheckpointError, NotRegularFile
from ckptlint.core.urls import RemotePath, scrub

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
_VERSION_FIELDS = frozenset({
    "etag", "versionid", "version_id", "generation", "sha256", "blob_id", "lfs", "md5hash",
    "crc32c", "checksum", "last-modified", "lastmodified", "last_modified", "updated", "mtime"})
_RETRIED_STATUS = frozenset({408, 425, 429})  # and every 5xx
_HTTP = ("http", "https")
_HTTP_FOLDER = ("is an http(s) folder, which cannot be listed: name the checkpoint file (or its "
                "*.index.json) itself")
T = TypeVar("T")


class RemoteError(CheckpointError):
    """A remote checkpoint could not be read: the network, the server, or what it answered."""


class _Refused(Exception):
    """An answer that is not the one asked for: refused at once, never retried."""


class _Status(Exception):
    """An HTTP error status (other than not found or access denied)."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
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
    _record(folder.url, _listing_identity(entries))
    return sorted(folder / _base(e["name"]) for e in entries)


def identity(path: RemotePath) -> str | None:
    """What the server says identifies this version: a file's version fields, a folder's
    listing. None when it names none, or cannot be asked: nothing is cached on it then."""
    found = info(path)
    return found.identity if found.kind == "file" else _listing_identity(_listing(path))


def identities(urls: Sequence[str]) -> dict[str, str | None]:
    """`identity` of each URL, asked concurrently; None for any that fails."""
    def one(url: str) -> str | None:
        try:
            return identity(RemotePath(url))
        except Exception:  # the replay and the cache ask: any failure only means "changed"
            return None

    return dict(zip(urls, gather(one, urls)))


def gather(call: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """`call` on each item, CONCURRENCY at a time, results (or the first error) in order."""
    items = list(items)
    if len(items) < 2:
        return [call(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(CONCURRENCY, len(items)),
                            thread_name_prefix="ckptlint-remote") as pool:
        return list(pool.map(call, items))


class RemoteFile:
    """A remote file read like a local one (`read`, `readline`, `seek`, `tell`), in ranges."""

    def __init__(self, path: RemotePath, size: int):
        self.path, self.size, self._pos, self.closed = path, size, 0, False

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        data = _read(self.path, self.size, self._pos, end) if end > self._pos else b""
        self._pos += len(data)
        return data

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
                         for i in _block_range(start, min(start + length, self.size))})
        runs = _runs(_missing(self.path.url, wanted))
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

def _block_range(start: int, end: int) -> range:
    return range(start // BLOCK, (end - 1) // BLOCK + 1)


def _missing(url: str, indices: Iterable[int]) -> list[int]:
    run = _run
    with run.lock:
        return [i for i in indices if (url, i) not in run.blocks]


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers as [first, end) runs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _read(path: RemotePath, size: int, start: int, end: int) -> bytes:
    indices = _block_range(start, end)
    got = _cached(path.url, indices)
    for run in _runs([i for i in indices if i not in got]):
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
    data = _attempts(path, lambda: _target_get(path, found, start, end))
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
    if _protocol(path) in _HTTP and path.url.split("?")[0].endswith("/"):
        raise RemoteError(str(path), _HTTP_FOLDER)
    raw = _attempts(path, lambda: _target_info(path))
    kind = {"file": "file", "directory": "folder"}.get(str(raw.get("type", "file")))
    if kind is None:
        raise RemoteError(str(path), f"is a {raw.get('type')!r} entry on the server, not a "
                                     "file or folder")
    size = raw.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise RemoteError(str(path), f"has a size of {size!r} in the server's answer")
    etag = next((str(v) for k, v in raw.items() if k.lower() == "etag" and v), None)
    return Info(kind, size, _identity(raw) if kind == "file" else None, etag)


def _identity(raw: dict) -> str | None:
    fields = sorted((k.lower(), str(v)) for k, v in raw.items()
                    if k.lower() in _VERSION_FIELDS and v not in (None, ""))
    if not fields:
        return None
    text = json.dumps([raw.get("size"), fields])
    return "remote:" + hashlib.sha256(text.encode()).hexdigest()


def _listing(folder: RemotePath) -> list[dict]:
    run = _run
    with run.lock:
        known = run.listings.get(folder.url)
    if known is None:
        if _protocol(folder) in _HTTP:
            raise RemoteError(str(folder), _HTTP_FOLDER)
        entries = _attempts(folder, lambda: _target_listing(folder))
        known = [e for e in entries if isinstance(e, dict) and _base(str(e.get("name", "")))]
        with run.lock:
            known = run.listings.setdefault(folder.url, known)
    return known


def _listing_identity(entries: list[dict]) -> str | None:
    if len(entries) > FOLDER_LIMIT:
        return None
    rows = sorted((_base(str(e["name"])), str(e.get("type")), _identity(e) or str(e.get("size")))
                  for e in entries)
    return "remote-folder:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _base(name: str) -> str:
    return name.rstrip("/").rpartition("/")[2]


def _attempts(path: RemotePath, call: Callable[[], T]) -> T:
    """`call`, tried up to ATTEMPTS times while its failure may pass (timeouts, dropped
    connections, 5xx); a refusal, not-found or denied access is final at once."""
    delay = BACKOFF
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except _Refused as exc:
            raise RemoteError(str(path), str(exc)) from None
        except FileNotFoundError:
            raise
        except RemoteError:
            raise
        except Exception as exc:  # the filesystems' own network errors have no common base
            if _denied(exc):
                raise RemoteError(str(path), _denied_sentence(path, exc)) from None
            if not _transient(exc) or attempt == ATTEMPTS:
                tries = f"; tried {attempt} times" if attempt > 1 else ""
                raise RemoteError(str(path), f"could not be read over the network "
                                             f"({_why(path, exc)}{tries})") from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _denied(exc: Exception) -> bool:
    return isinstance(exc, PermissionError) or getattr(exc, "status", None) in (401, 403)


def _denied_sentence(path: RemotePath, exc: Exception) -> str:
    status = getattr(exc, "status", None)
    said = f"HTTP {status}" if status else (
        exc.strerror if isinstance(exc, OSError) and exc.strerror else "access denied")
    return (f"cannot be read: the server refused access ({said}); ckptlint uses the credentials "
            "its filesystem finds in the usual places (environment, config files)")


def _transient(exc: Exception) -> bool:
    if isinstance(exc, _Status):
        return exc.status >= 500 or exc.status in _RETRIED_STATUS
    return not isinstance(exc, (ImportError, ValueError, TypeError, KeyError, AttributeError))


def _why(path: RemotePath, exc: Exception) -> str:
    import asyncio  # already loaded by any filesystem that timed out

    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # aiohttp's and fsspec's too
        return f"no answer within {timeout():g} s"
    if isinstance(exc, _Status):
        return str(exc)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = scrub((text or "").splitlines()[0] if text else "", path.url)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the filesystems ------------------------------------------------------------------------

def _protocol(path: RemotePath) -> str:
    return path.url.split("://")[0].lower()


def _filesystem(path: RemotePath) -> Any:
    protocol = _protocol(path)
    run = _run
    with run.lock:
        fs = run.filesystems.get(protocol)
    if fs is None:
        fs = _new_filesystem(path, protocol)
        with run.lock:
            fs = run.filesystems.setdefault(protocol, fs)
    return fs


def _new_filesystem(path: RemotePath, protocol: str) -> Any:
    try:
        import fsspec
    except ImportError:
        raise RemoteError(str(path), "is a URL, and reading URLs needs fsspec, which is not "
                                     "installed: pip install fsspec aiohttp (ckptlint's "
                                     "`remote` extra)") from None
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError:
        raise RemoteError(str(path), _install_hint(protocol)) from None
    except ValueError:
        raise RemoteError(str(path), f"is a {protocol}:// URL, which fsspec does not know how to "
                                     "read") from None
    # a fresh instance per run: fsspec's instance and listing caches would answer a later run
    # from what an earlier one was told
    fs = cls(skip_instance_cache=True, **_options(protocol))
    if protocol in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retry loop off: ours (ATTEMPTS, naming the URL) is the one
    return fs


def _install_hint(protocol: str) -> str:
    from fsspec.registry import known_implementations

    module = known_implementations.get(protocol, {}).get("class", "").partition(".")[0]
    package = "aiohttp" if protocol in _HTTP else module.replace("_", "-") or protocol
    return (f"is a {protocol}:// URL, and reading it needs {package}, which is not installed: "
            f"pip install {package}")


def _options(protocol: str) -> dict[str, Any]:
    """Deadlines each filesystem understands; the overall one is `_call`'s."""
    seconds = timeout()
    if protocol in _HTTP:
        import aiohttp

        # trust_env: proxies and ~/.netrc credentials, as other HTTP tools find them
        return {"client_kwargs": {"trust_env": True, "timeout": aiohttp.ClientTimeout(
            total=None, sock_connect=seconds, sock_read=seconds)}}
    if protocol in ("s3", "s3a"):
        from fsspec.config import conf

        config = dict(conf.get("s3", {}).get("config_kwargs", {}))
        config.update(connect_timeout=seconds, read_timeout=seconds,
                      retries={"max_attempts": 1})
        return {"config_kwargs": config}
    return {}


def _call(fs: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """A filesystem method with a deadline: async filesystems run it on fsspec's loop and
    cancel it at the deadline; others (huggingface_hub's) keep their own timeouts."""
    if getattr(fs, "async_impl", False):
        from fsspec.asyn import sync

        return sync(fs.loop, getattr(fs, f"_{name}"), *args, timeout=timeout(), **kwargs)
    return getattr(fs, name)(*args, **kwargs)


def _fs_path(fs: Any, path: RemotePath) -> str:
    return path.url if _protocol(path) in _HTTP else fs._strip_protocol(path.url)


def _target_info(path: RemotePath) -> dict:
    fs = _filesystem(path)
    if _protocol(path) in _HTTP:
        from fsspec.asyn import sync

        return sync(fs.loop, _http_head, fs, path.url, timeout=timeout())
    return _call(fs, "info", _fs_path(fs, path))


def _target_get(path: RemotePath, found: Info, start: int, end: int) -> bytes:
    fs = _filesystem(path)
    if _protocol(path) in _HTTP:
        from fsspec.asyn import sync

        return sync(fs.loop, _http_range, fs, path.url, start, end, found, timeout=timeout())
    # object stores (s3fs, gcsfs, hf) honour ranges; the length is checked by `_get`
    return _call(fs, "cat_file", _fs_path(fs, path), start=start, end=end)


def _target_listing(folder: RemotePath) -> list[dict]:
    fs = _filesystem(folder)
    return _call(fs, "ls", _fs_path(fs, folder), detail=True)


# -- HTTP: fsspec's session, with answers read no further than asked ---------------------------
# fsspec's HTTP reads take a 206 answer whole, however long it is; these read at most one byte
# more than asked, so a server that sends more is refused without being waited for.

def _request_options(fs: Any) -> tuple[dict, dict]:
    options = dict(fs.kwargs)
    headers = {**options.pop("headers", {}), "Accept-Encoding": "identity"}
    options.pop("allow_redirects", None)
    return options, headers


async def _http_head(fs: Any, url: str) -> dict:
    session = await fs.set_session()
    options, headers = _request_options(fs)
    async with session.head(fs.encode_url(url), headers=headers, allow_redirects=True,
                            **options) as answer:
        if answer.status not in (403, 405, 501):
            _check_status(answer.status)
            return _http_meta(answer, answer.headers.get("Content-Length"))
    # servers that answer GET only (presigned GET URLs): the first byte and its Content-Range
    async with session.get(fs.encode_url(url), headers={**headers, "Range": "bytes=0-0"},
                           **options) as answer:
        _check_status(answer.status)
        total = _content_range(answer.headers.get("Content-Range", ""))[2]
        return _http_meta(answer, total if answer.status == 206 else
                          answer.headers.get("Content-Length"))


def _http_meta(answer: Any, size: Any) -> dict:
    _plain(answer)
    meta = {"type": "file", "size": int(size) if str(size or "").isdigit() else None}
    for name in ("ETag", "Last-Modified"):
        if answer.headers.get(name):
            meta[name] = answer.headers[name]
    return meta


async def _http_range(fs: Any, url: str, start: int, end: int, found: Info) -> bytes:
    session = await fs.set_session()
    options, headers = _request_options(fs)
    headers["Range"] = f"bytes={start}-{end - 1}"
    wanted = end - start
    async with session.get(fs.encode_url(url), headers=headers, **options) as answer:
        _check_status(answer.status)
        _plain(answer)
        if answer.status == 200 and not (start == 0 and end == found.size):
            raise _Refused("answered a range request with the whole file (HTTP 200): ckptlint "
                           "reads remote checkpoints only from servers that honour ranges")
        if answer.status not in (200, 206):
            raise _Refused(f"answered a range request with HTTP {answer.status}")
        if answer.status == 206:
            _check_content_range(answer.headers.get("Content-Range", ""), start, end, found)
        etag = answer.headers.get("ETag")
        if found.etag and etag and etag != found.etag:
            raise _Refused(f"changed while it was read (its ETag went from {found.etag} to "
                           f"{etag}); run again")
        length = answer.headers.get("Content-Length")
        if length is not None and length.strip() != str(wanted):
            raise _Refused(f"announced {length} bytes for a request of {wanted} (bytes "
                           f"{start}..{end - 1}): the server does not honour range requests "
                           "as it must")
        return await _read_at_most(answer.content, wanted + 1)


def _check_status(status: int) -> None:
    if status in (404, 410):
        raise FileNotFoundError(errno.ENOENT, "not found")
    if status in (401, 403):
        raise PermissionError(errno.EACCES, f"HTTP {status}")
    if status >= 400:
        raise _Status(status)


def _plain(answer: Any) -> None:
    encoding = answer.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _Refused(f"sent its bytes {encoding}-encoded although asked for them as they are: "
                       "sizes and ranges would not be the file's")


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of `bytes first-last/total`; None for what is not there."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    numbers = [int(x) if x.strip().isdigit() else None for x in (first, last, total)]
    return (None, None, None) if unit.lower() != "bytes" else (numbers[0], numbers[1], numbers[2])


def _check_content_range(value: str, start: int, end: int, found: Info) -> None:
    first, last, total = _content_range(value)
    if (first, last) != (start, end - 1):
        raise _Refused(f"answered a request for bytes {start}..{end - 1} with Content-Range "
                       f"{value!r}: not the bytes asked for")
    if total is not None and total != found.size:
        raise _Refused(f"says it is {total} bytes in one answer and {found.size} in its "
                       "metadata: the file changed while it was read, or the server misreports "
                       "its size")


async def _read_at_most(stream: Any, limit: int) -> bytes:
    chunks, got = [], 0
    while got < limit:
        chunk = await stream.read(min(limit - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
