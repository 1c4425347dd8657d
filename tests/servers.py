"""Real servers on 127.0.0.1 for the remote-checkpoint tests, started and stopped by the tests.

`RangeServer`: an HTTP server (http.server) that serves a folder with single-range GETs,
HEAD, ETag and Last-Modified, counts the requests and body bytes it serves, and can be told to
misbehave the ways a hostile or broken server does. `S3Server`: moto's standalone S3 server,
counting the requests it answers and how many are in flight at once. Every loop here is
bounded in count and time, and stops with the server.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

# what a misbehaving server does, per mode (set `RangeServer.mode`)
MODES = ("honest", "ignore-range", "more", "endless", "short", "size-smaller", "size-larger",
         "hang", "fail-twice", "fail-always", "no-head", "etag-changes", "gzip", "no-etag",
         "forbidden")
ENDLESS_LIMIT = 64 << 20  # an "endless" answer stops here, or when the client hangs up
HANG_LIMIT = 30.0  # seconds a "hang" answer waits before the server gives up on it


class RangeServer:
    """Serves `root` at http://127.0.0.1:PORT/ until `stop()` (or the `with` block ends)."""

    def __init__(self, root: Path):
        self.root = root
        self.mode = "honest"
        self.delay = 0.0  # seconds each GET waits before it answers (so that overlaps show)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # "GET" / "HEAD" -> count
        self.bytes_served = 0
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of each GET
        self.in_flight = self.most_in_flight = 0  # GETs being answered at once
        self.stopping = threading.Event()
        server = self

        class Handler(_Handler):
            owner = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_served = 0
            self.ranges.clear()
            self.most_in_flight = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def settled(self, seconds: float = 10.0) -> bool:
        """Wait until no byte has been sent for a moment (a handler may still be writing an
        answer its client has stopped reading); False if that never happens in `seconds`."""
        deadline = time.monotonic() + seconds
        last = -1
        while time.monotonic() < deadline:
            if self.bytes_served == last:
                return True
            last = self.bytes_served
            time.sleep(0.2)
        return False

    def start(self) -> RangeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _count(self, method: str) -> None:
        with self.owner.lock:
            self.owner.requests[method] += 1

    def _write(self, data: bytes) -> None:
        with self.owner.lock:  # counted before it is sent: a count never lags behind the client
            self.owner.bytes_served += len(data)
        self.wfile.write(data)

    def _file(self) -> Path | None:
        path = (self.owner.root / self.path.lstrip("/").split("?")[0]).resolve()
        inside = self.owner.root.resolve() in path.parents
        return path if inside and path.is_file() else None

    def _version_headers(self, path: Path) -> None:
        info = path.stat()
        tag = hashlib.sha256(f"{info.st_size}-{info.st_mtime_ns}-{info.st_ino}".encode())
        etag = f'"{tag.hexdigest()[:16]}"'
        if self.owner.mode == "etag-changes" and self.command == "GET":
            etag = f'"{time.monotonic_ns()}"'
        if self.owner.mode != "no-etag":
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(info.st_mtime, usegmt=True))

    def _error(self, status: int, method: str) -> None:
        if method != "GET":  # a GET is counted when it arrives
            self._count(method)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        mode = self.owner.mode
        path = self._file()
        if path is None:
            return self._error(404, "HEAD")
        if mode == "no-head":
            return self._error(405, "HEAD")
        if mode == "forbidden":
            return self._error(403, "HEAD")
        if mode == "fail-always":
            return self._error(503, "HEAD")
        size = path.stat().st_size
        size += {"size-smaller": -1000, "size-larger": 1000}.get(mode, 0)
        self._count("HEAD")
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self._version_headers(path)
        self.end_headers()

    def do_GET(self) -> None:
        with self.owner.lock:
            self.owner.in_flight += 1
            self.owner.most_in_flight = max(self.owner.most_in_flight, self.owner.in_flight)
        try:
            if self.owner.delay:
                time.sleep(self.owner.delay)
            self._get()
        finally:
            with self.owner.lock:
                self.owner.in_flight -= 1

    def _get(self) -> None:
        mode = self.owner.mode
        path = self._file()
        self._count("GET")
        with self.owner.lock:
            self.owner.ranges.append((self.path, self.headers.get("Range", "")))
            failures = sum(1 for p, _ in self.owner.ranges if p == self.path)
        if path is None:
            return self._error(404, "GET")
        if mode == "fail-always" or (mode == "fail-twice" and failures <= 2):
            return self._error(503, "GET")
        if mode == "forbidden":
            return self._error(403, "GET")
        if mode == "hang":
            self.owner.stopping.wait(HANG_LIMIT)
            return
        size = path.stat().st_size
        span = _parse_range(self.headers.get("Range", ""), size)
        if span is None or mode == "ignore-range":
            return self._send(path, 0, size, 200, size)
        start, end = span
        if start >= size:
            return self._error(416, "GET")
        self._send(path, start, end, 206, size)

    def _send(self, path: Path, start: int, end: int, status: int, size: int) -> None:
        mode = self.owner.mode
        length = end - start
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self._version_headers(path)
        if mode == "gzip":
            self.send_header("Content-Encoding", "gzip")
        if mode == "more":
            length += 1 << 20
        if mode == "endless":
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self._body(path, start, end, mode)

    def _body(self, path: Path, start: int, end: int, mode: str) -> None:
        sent = 0
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                left = end - start if mode != "short" else (end - start) // 2
                while left > 0:
                    chunk = handle.read(min(left, 1 << 16)) or b"\0" * min(left, 1 << 16)
                    self._write(chunk)
                    sent, left = sent + len(chunk), left - len(chunk)
            if mode == "more":
                self._write(b"\0" * (1 << 20))
            while mode == "endless" and sent < ENDLESS_LIMIT and not self.owner.stopping.is_set():
                self._write(b"\0" * (1 << 16))
                sent += 1 << 16
            if mode == "short":
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=a-b` range, None when there is none."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first:
        return (max(size - int(last), 0), size) if last else None
    return int(first), min(int(last) + 1, size) if last else size


class S3Server:
    """moto's S3 server on 127.0.0.1, answering every request `delay` seconds late (so that
    requests made at once overlap), counting requests and the most in flight together."""

    def __init__(self, delay: float = 0.0):
        from moto.server import ThreadedMotoServer

        self.delay = delay
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []  # (method, path) of each request
        self.in_flight = 0
        self.most_in_flight = 0
        outer = self

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                from werkzeug.serving import make_server

                from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                                           MotoRequestHandler,
                                                           create_backend_app)

                class Quiet(MotoRequestHandler):
                    def log_request(self, *args: Any, **kwargs: Any) -> None:
                        pass

                app = outer._counting(DomainDispatcherApplication(create_backend_app))
                self._server = make_server(self._ip_address, self._port, app, True,
                                           request_handler=Quiet)
                self._server_ready_event.set()
                self._server.serve_forever()

        self.server = Server(ip_address="127.0.0.1", port=0, verbose=False)

    def _counting(self, app: Callable) -> Callable:
        def counted(environ: dict, start_response: Callable) -> Any:
            with self.lock:
                self.requests[environ["REQUEST_METHOD"]] += 1
                self.paths.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.delay:
                    time.sleep(self.delay)
                return app(environ, start_response)
            finally:
                with self.lock:
                    self.in_flight -= 1
        return counted

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.paths.clear()
            self.most_in_flight = 0

    @property
    def endpoint(self) -> str:
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def environment(self, home: Path) -> dict[str, str]:
        """Fake credentials and this endpoint, where botocore looks for them; no user config."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_CONFIG_FILE": str(home / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials")}

    def start(self) -> S3Server:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sparse_file(path: Path, head: bytes, size: int, tail: bytes = b"") -> Path:
    """`head`, then a hole up to `size - len(tail)`, then `tail`: a large file costing no disk."""
    with open(path, "wb") as handle:
        handle.write(head)
        handle.seek(size - len(tail))
        handle.write(tail)
        handle.truncate(size)
    return path


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


def sparse_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> Path:
    """A safetensors file of these (dtype, shape) tensors, as the format lays it out: an 8-byte
    header length, the JSON header padded with spaces to 8 bytes, then the data region, which
    is a hole (zeros) here, so that a file of any size costs no disk."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    head = len(raw).to_bytes(8, "little") + raw
    return sparse_file(path, head, len(head) + offset)


class _SkipLargeWrites(io.RawIOBase):
    """What torch.save writes, except that a storage of SKIP bytes or more becomes a hole.

    Only valid for storages that are all zeros: tensors made with `torch.empty` of that size,
    which glibc maps fresh from the kernel (any allocation above its 32 MiB mmap threshold), so
    they hold zeros, and torch's CRC over them is the CRC of the zeros the hole reads as.
    """

    SKIP = 64 << 20

    def __init__(self, handle: Any):
        self.handle = handle

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) < self.SKIP:
            return self.handle.write(view)
        for at in (0, len(view) // 2, len(view) - 4096):  # cheap guard of the assumption
            assert not any(view[at:at + 4096]), "a skipped storage must be zeros"
        self.handle.seek(len(view), os.SEEK_CUR)
        return len(view)


def sparse_torch_save(path: Path, state: dict) -> Path:
    """`torch.save(state, path)`, byte for byte, with its large storages left as holes."""
    import torch

    with open(path, "wb") as handle:
        torch.save(state, _SkipLargeWrites(handle))
        handle.truncate()
    return path
