"""Build models in forked children, so that a model which ends or hangs the process is a finding.

A model's import, `__init__` or load hook may call `sys.exit` or `os._exit`, loop forever, or
leave a non-daemon thread running: in this process that would end `ckptlint check` with exit 0
and no output, which pre-commit and CI read as a pass. So the builds run in a child forked
after `import torch` (milliseconds, not another import): it sends each result back over a
private pipe, user code's output is forwarded to stderr, and the parent watches the time.
A child that dies or overruns `build_timeout` costs only the model it was building: that model
becomes a build error naming how it ended, and a new child builds the rest.

Assumptions, each tested in tests/test_isolation.py:
- fork after `import torch` is safe when the child runs torch single-threaded: OpenMP's thread
  pool does not survive fork (a child of a parent that ran a parallel op hangs in its first
  one), so the child sets `torch.set_num_threads(1)`.
- Without `os.fork` (Windows) models are built in this process: `sys.exit` is still caught,
  `os._exit` and endless builds are not (the README says so).
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import json
import os
import re
import selectors
import signal
import struct
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, Sequence

from ckptlint.core.collector import resume_full_collections, young_collections_only
from ckptlint.core.paths import is_project_file, relative
from ckptlint.core.records import BuildResult, Config, Location, ModelSpec, Signature

_FRAME = struct.Struct(">Q")
_POLL = 0.5  # seconds between checks that a child whose pipe is still open is alive
_TRACE_GRACE = 0.3  # time faulthandler gets to write the stack of a child that overran
_FAULT_FRAME = re.compile(r'^\s*File "(.+)", line (\d+) in ')


def build_isolated(specs: Sequence[ModelSpec], config: Config,
                   references: Sequence[Signature | None], processes: int = 1) -> list[BuildResult]:
    """Build every model in forked children (`processes` at a time); results keep input order."""
    from ckptlint.build.builder import build_all
    from ckptlint.build.loadtorch import import_torch

    if not hasattr(os, "fork"):
        return build_all(specs, config, references)
    import_torch()  # in the parent, once: every child inherits it
    supervisor = _Supervisor(specs, config, references)
    return supervisor.run(max(1, min(processes, len(specs))))


@dataclass
class _Child:
    pid: int
    fd: int
    queue: deque
    trace: IO[bytes]
    buffer: bytearray = field(default_factory=bytearray)
    current: int | None = None
    started: float = 0.0
    progressed: bool = False  # it began at least one build (else respawning would loop)
    exit_call: dict | None = None


class _Supervisor:
    def __init__(self, specs: Sequence[ModelSpec], config: Config,
                 references: Sequence[Signature | None]):
        self.specs, self.config, self.references = specs, config, references
        self.results: dict[int, BuildResult] = {}
        self.children: dict[int, _Child] = {}
        self.selector = selectors.DefaultSelector()

    def run(self, processes: int) -> list[BuildResult]:
        shares = [deque(range(i, len(self.specs), processes)) for i in range(processes)]
        waiting = deque(share for share in shares if share)
        try:
            while waiting or self.children:
                while waiting and len(self.children) < processes:
                    self._spawn(waiting.popleft())
                for child in self._wait():
                    rest = self._finish(child)
                    if rest:
                        waiting.append(rest)
        finally:
            for child in list(self.children.values()):
                self._kill(child)
            self.selector.close()
        return [self.results[i] for i in range(len(self.specs))]

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, queue: deque) -> None:
        read_fd, write_fd = os.pipe()
        trace = tempfile.TemporaryFile()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(read_fd)
            _child_main(write_fd, trace, list(queue), self.specs, self.config, self.references)
        os.close(write_fd)
        child = _Child(pid, read_fd, queue, trace)
        self.children[read_fd] = child
        self.selector.register(read_fd, selectors.EVENT_READ, child)

    def _wait(self) -> list[_Child]:
        """Read what the children sent; return those that are done (ended, died or overran)."""
        ended = []
        timeout = self._next_deadline()
        for key, _ in self.selector.select(timeout=timeout):
            child = key.data
            data = os.read(child.fd, 1 << 16)
            if not data:
                ended.append(child)
                continue
            child.buffer += data
            self._messages(child)
        for child in self.children.values():
            if child in ended:
                continue
            if child.current is not None and \
                    time.monotonic() - child.started > self.config.build_timeout:
                self._overran(child)
                ended.append(child)
            elif _dead(child.pid):
                self._drain(child)
                ended.append(child)
        return ended

    def _next_deadline(self) -> float:
        left = [child.started + self.config.build_timeout - time.monotonic()
                for child in self.children.values() if child.current is not None]
        return max(0.0, min(left + [_POLL]))

    def _drain(self, child: _Child) -> None:
        os.set_blocking(child.fd, False)
        try:
            while data := os.read(child.fd, 1 << 16):
                child.buffer += data
        except BlockingIOError:
            pass
        self._messages(child)

    def _messages(self, child: _Child) -> None:
        while len(child.buffer) >= _FRAME.size:
            (size,) = _FRAME.unpack_from(child.buffer)
            if len(child.buffer) < _FRAME.size + size:
                return
            body = bytes(child.buffer[_FRAME.size:_FRAME.size + size])
            del child.buffer[:_FRAME.size + size]
            self._handle(child, json.loads(body))

    def _handle(self, child: _Child, message: dict) -> None:
        from ckptlint.build.wire import decode_result

        if "out" in message:
            sys.stderr.write(message["out"])
        elif "start" in message:
            child.current, child.started, child.exit_call = message["start"], time.monotonic(), None
            child.progressed = True
        elif "result" in message:
            index = message["result"]
            self.results[index] = decode_result(message["doc"])
            child.queue.remove(index)
            child.current = None
        elif "exit" in message:
            child.exit_call = message

    def _finish(self, child: _Child) -> deque:
        """Reap a child; the model it was building when it ended gets an error. Returns the
        models it did not get to."""
        self.selector.unregister(child.fd)
        del self.children[child.fd]
        os.close(child.fd)
        status = _reap(child.pid)
        if child.current is not None:
            if child.current not in self.results:
                self.results[child.current] = self._ended(child, status)
            if child.current in child.queue:
                child.queue.remove(child.current)
        child.trace.close()
        if not child.progressed:  # it died before any build: a new one would too
            for index in child.queue:
                spec = self.specs[index]
                self.results[index] = BuildResult(
                    spec.name, error=f"the build process for `{spec.target}` ended before it "
                                     f"started ({_how(status)}); see the lines above",
                    error_location=self._entry(spec))
            return deque()
        return child.queue

    def _overran(self, child: _Child) -> None:
        """Stop a child whose current build overran `build_timeout`, saying where it was."""
        index = child.current
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(child.pid, signal.SIGUSR1)  # faulthandler writes every thread's stack
        time.sleep(_TRACE_GRACE)
        self._kill(child)
        spec = self.specs[index]
        where = self._stack_location(child) or self._entry(spec)
        self.results[index] = BuildResult(
            spec.name, error=f"building `{spec.target}` did not finish within "
                             f"{self.config.build_timeout:g} s and was stopped (raise "
                             "build_timeout in [tool.ckptlint] if it needs longer)",
            error_location=where)

    def _kill(self, child: _Child) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(child.pid, signal.SIGKILL)

    # -- messages for ended builds ----------------------------------------------------------

    def _ended(self, child: _Child, status: int | None) -> BuildResult:
        spec = self.specs[child.current]  # type: ignore[index]
        call = child.exit_call
        if call is not None:
            how = f"called os._exit({call['exit']!r})"
            where = Location(call["file"], call["line"]) if call.get("file") else None
        else:
            how = _how(status)
            where = None
        return BuildResult(spec.name, error=f"building `{spec.target}` {how}, which ends the "
                                            "process: a model must not end the run",
                           error_location=where or self._entry(spec))

    def _entry(self, spec: ModelSpec) -> Location | None:
        from ckptlint.config import entry_location

        return entry_location(self.config, spec, "target")

    def _stack_location(self, child: _Child) -> Location | None:
        child.trace.seek(0)
        for line in child.trace.read().decode("utf-8", "replace").splitlines():
            match = _FAULT_FRAME.match(line)
            if match and is_project_file(match.group(1), self.config.root):
                return Location(relative(match.group(1), self.config.root), int(match.group(2)))
        return None


def _how(status: int | None) -> str:
    if status is None:
        return "ended"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with code {status}"


_STATUS: dict[int, int] = {}  # children reaped by _dead, for _reap


def _dead(pid: int) -> bool:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if done:
        _STATUS[pid] = status
    return bool(done)


def _reap(pid: int) -> int | None:
    if pid in _STATUS:
        return os.waitstatus_to_exitcode(_STATUS.pop(pid))
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


# -- the child -------------------------------------------------------------------------------------

class _Channel:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode("utf-8", "surrogatepass")
        data = memoryview(_FRAME.pack(len(body)) + body)
        while data:  # a pipe takes 64 KiB at a time: a view, not a copy of the rest each time
            data = data[os.write(self.fd, data):]


class _Forwarded:
    """The child's sys.stdout and sys.stderr: what user code prints goes to the parent's stderr
    (pytest's capture, a notebook's stream), never to the results pipe or to stdout."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, channel: _Channel):
        self.channel = channel

    def write(self, text: str) -> int:
        if text:
            self.channel.send({"out": text})
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 2

    def writable(self) -> bool:
        return True


def _child_main(write_fd: int, trace: IO[bytes], indices: list[int],
                specs: Sequence[ModelSpec], config: Config,
                references: Sequence[Signature | None]) -> None:  # pragma: no cover - child
    real_exit = os._exit
    code = 0
    try:
        gc.freeze()  # what torch's import made is never collected here: cheaper GC, less copying
        resume_full_collections()  # the parent's pause is for its own objects, not the builds'
        os.dup2(2, 1)  # writes to file descriptor 1 (os.write, subprocesses) land on stderr
        channel = _Channel(write_fd)
        sys.stdout = sys.stderr = _Forwarded(channel)  # type: ignore[assignment]
        faulthandler.register(signal.SIGUSR1, file=trace, all_threads=True)
        _exit_reporting(channel, config, real_exit)
        _single_threaded()
        from ckptlint.build import tracking
        from ckptlint.build.builder import build
        from ckptlint.build.wire import encode_result

        tracking.reset()
        for index in indices:
            channel.send({"start": index})
            with young_collections_only():  # the result lives until it is sent
                result = build(specs[index], config, references[index])
                channel.send({"result": index, "doc": encode_result(result)})
                del result
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
        import traceback

        os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        code = 1
    finally:
        real_exit(code)


def _exit_reporting(channel: _Channel, config: Config, real_exit: Any) -> None:
    """`os._exit` from user code first tells the parent where it was called."""
    def reported_exit(code: int) -> None:
        frame = sys._getframe(1)
        while frame is not None and not is_project_file(frame.f_code.co_filename, config.root):
            frame = frame.f_back
        where = (relative(frame.f_code.co_filename, config.root), frame.f_lineno) \
            if frame is not None else ("", 0)
        channel.send({"exit": code, "file": where[0], "line": where[1]})
        real_exit(code)

    os._exit = reported_exit  # type: ignore[assignment]


def _single_threaded() -> None:
    import torch

    torch.set_num_threads(1)
