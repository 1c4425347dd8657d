"""The fsspec side of remote reads: each protocol's filesystem and its options, retries with
their sentences, and HTTP answers read no further than asked (status, Content-Range and size
checked against the request)."""

from __future__ import annotations

import errno
import json
import time
from typing import Any, Callable, TypeVar

from ckptlint.core.inputs import sha256
from ckptlint.core.urls import RemotePath, scrub
from ckptlint.readers.remoteinfo import (ATTEMPTS, BACKOFF, FOLDER_LIMIT, HTTP_SCHEMES,
                                         RETRIED_STATUS, VERSION_FIELDS, Info, Refused, RemoteError,
                                         Status, timeout)


T = TypeVar("T")


def identity_of(raw: dict) -> str | None:
    fields = sorted((k.lower(), str(v)) for k, v in raw.items()
                    if k.lower() in VERSION_FIELDS and v not in (None, ""))
    if not fields:
        return None
    text = json.dumps([raw.get("size"), fields])
    return "remote:" + sha256(text.encode()).hexdigest()


def listing_identity(entries: list[dict]) -> str | None:
    if len(entries) > FOLDER_LIMIT:
        return None
    rows = sorted((base_name(str(e["name"])), str(e.get("type")),
                   identity_of(e) or str(e.get("size")))
                  for e in entries)
    return "remote-folder:" + sha256(json.dumps(rows).encode()).hexdigest()


def base_name(name: str) -> str:
    return name.rstrip("/").rpartition("/")[2]


def with_retries(path: RemotePath, call: Callable[[], T]) -> T:
    """`call`, tried up to ATTEMPTS times while its failure may pass (timeouts, dropped
    connections, 5xx); a refusal, not-found or denied access is final at once."""
    delay = BACKOFF
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except Refused as exc:
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
    if isinstance(exc, Status):
        return exc.status >= 500 or exc.status in RETRIED_STATUS
    return not isinstance(exc, (ImportError, ValueError, TypeError, KeyError, AttributeError))


def _why(path: RemotePath, exc: Exception) -> str:
    import asyncio  # already loaded by any filesystem that timed out

    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # aiohttp's and fsspec's too
        return f"no answer within {timeout():g} s"
    if isinstance(exc, Status):
        return str(exc)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = scrub((text or "").splitlines()[0] if text else "", path.url)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def protocol_of(path: RemotePath) -> str:
    return path.url.split("://")[0].lower()


def new_filesystem(path: RemotePath, protocol: str) -> Any:
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
    package = "aiohttp" if protocol in HTTP_SCHEMES else module.replace("_", "-") or protocol
    return (f"is a {protocol}:// URL, and reading it needs {package}, which is not installed: "
            f"pip install {package}")


def _options(protocol: str) -> dict[str, Any]:
    """Deadlines each filesystem understands; the overall one is `fs_call`'s."""
    seconds = timeout()
    if protocol in HTTP_SCHEMES:
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


def fs_call(fs: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """A filesystem method with a deadline: async filesystems run it on fsspec's loop and
    cancel it at the deadline; others (huggingface_hub's) keep their own timeouts."""
    if getattr(fs, "async_impl", False):
        from fsspec.asyn import sync

        return sync(fs.loop, getattr(fs, f"_{name}"), *args, timeout=timeout(), **kwargs)
    return getattr(fs, name)(*args, **kwargs)


def fs_path(fs: Any, path: RemotePath) -> str:
    return path.url if protocol_of(path) in HTTP_SCHEMES else fs._strip_protocol(path.url)


def request_options(fs: Any) -> tuple[dict, dict]:
    options = dict(fs.kwargs)
    headers = {**options.pop("headers", {}), "Accept-Encoding": "identity"}
    options.pop("allow_redirects", None)
    return options, headers


def http_meta(answer: Any, size: Any) -> dict:
    plain_answer(answer)
    meta = {"type": "file", "size": int(size) if str(size or "").isdigit() else None}
    for name in ("ETag", "Last-Modified"):
        if answer.headers.get(name):
            meta[name] = answer.headers[name]
    return meta


def check_status(status: int) -> None:
    if status in (404, 410):
        raise FileNotFoundError(errno.ENOENT, "not found")
    if status in (401, 403):
        raise PermissionError(errno.EACCES, f"HTTP {status}")
    if status >= 400:
        raise Status(status)


def plain_answer(answer: Any) -> None:
    encoding = answer.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Refused(f"sent its bytes {encoding}-encoded although asked for them as they are: "
                      "sizes and ranges would not be the file's")


def content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of `bytes first-last/total`; None for what is not there."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    numbers = [int(x) if x.strip().isdigit() else None for x in (first, last, total)]
    return (None, None, None) if unit.lower() != "bytes" else (numbers[0], numbers[1], numbers[2])


def check_content_range(value: str, start: int, end: int, found: Info) -> None:
    first, last, total = content_range(value)
    if (first, last) != (start, end - 1):
        raise Refused(f"answered a request for bytes {start}..{end - 1} with Content-Range "
                      f"{value!r}: not the bytes asked for")
    if total is not None and total != found.size:
        raise Refused(f"says it is {total} bytes in one answer and {found.size} in its "
                      "metadata: the file changed while it was read, or the server misreports "
                      "its size")


# -- HTTP: fsspec's session, with answers read no further than asked ---------------------------
# fsspec's HTTP reads take a 206 answer whole, however long it is; these read at most one byte
# more than asked, so a server that sends more is refused without being waited for.


async def http_head(fs: Any, url: str) -> dict:
    session = await fs.set_session()
    options, headers = request_options(fs)
    async with session.head(fs.encode_url(url), headers=headers, allow_redirects=True,
                            **options) as answer:
        if answer.status not in (403, 405, 501):
            check_status(answer.status)
            return http_meta(answer, answer.headers.get("Content-Length"))
    # servers that answer GET only (presigned GET URLs): the first byte and its Content-Range
    async with session.get(fs.encode_url(url), headers={**headers, "Range": "bytes=0-0"},
                           **options) as answer:
        check_status(answer.status)
        total = content_range(answer.headers.get("Content-Range", ""))[2]
        return http_meta(answer, total if answer.status == 206 else
                          answer.headers.get("Content-Length"))


async def http_range(fs: Any, url: str, start: int, end: int, found: Info) -> bytes:
    session = await fs.set_session()
    options, headers = request_options(fs)
    headers["Range"] = f"bytes={start}-{end - 1}"
    wanted = end - start
    async with session.get(fs.encode_url(url), headers=headers, **options) as answer:
        check_status(answer.status)
        plain_answer(answer)
        if answer.status == 200 and not (start == 0 and end == found.size):
            raise Refused("answered a range request with the whole file (HTTP 200): ckptlint "
                          "reads remote checkpoints only from servers that honour ranges")
        if answer.status not in (200, 206):
            raise Refused(f"answered a range request with HTTP {answer.status}")
        if answer.status == 206:
            check_content_range(answer.headers.get("Content-Range", ""), start, end, found)
        etag = answer.headers.get("ETag")
        if found.etag and etag and etag != found.etag:
            raise Refused(f"changed while it was read (its ETag went from {found.etag} to "
                          f"{etag}); run again")
        length = answer.headers.get("Content-Length")
        if length is not None and length.strip() != str(wanted):
            raise Refused(f"announced {length} bytes for a request of {wanted} (bytes "
                          f"{start}..{end - 1}): the server does not honour range requests "
                          "as it must")
        return await read_at_most(answer.content, wanted + 1)


async def read_at_most(stream: Any, limit: int) -> bytes:
    chunks, got = [], 0
    while got < limit:
        chunk = await stream.read(min(limit - got, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
