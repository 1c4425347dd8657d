"""Record every input one model's build really used, while it runs (build process only).

Rather than guess dependencies from a model's globals, the build is watched:
- every module in `sys.modules` once it is done: a source file by its content, a module of an
  installed distribution by that distribution's RECORD (name, version and installed files);
  the standard library is keyed by the Python version, ckptlint by its own;
- every file opened for reading (an audit hook), with its digest taken at that moment, and
  every folder listed — by the import system (so a module that did not exist, `try: from
  pkg.custom import X`, is noticed when it appears) or by the code;
- every existence check through `os.stat`/`os.lstat` (`os.path.exists`, `Path.is_file`, …);
- every environment variable read through `os.environ` / `os.getenv`.

Assumptions, each with a test in tests/test_trust_cache.py:
- The project's modules are imported afresh for each model (`build.forget_project_modules`),
  so the modules a model needs appear in `sys.modules` during its own build even when an
  earlier model imported them. Installed and out-of-project modules stay loaded: every one of
  them in `sys.modules` is keyed, so a later model's entry may hold more than it needs (a spare
  rebuild, never a stale answer). Files read, folders listed, paths checked and variables read
  accumulate over the whole process for the same reason.
- Reads from C code (getenv in an extension, a file opened by a C library) are not seen: the
  README says so.
- A digest is taken when a file is first read; when the build is done, every digest is taken
  again, and a build that saw an input change while it ran is not cached at all (`None`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from typing import Any, Iterator

from ckptlint.build.installed import in_stdlib, installed_file, record_of, site_of
from ckptlint.core import inputs
from ckptlint.core.paths import IMPORTED_PACKAGE_DIR, relative

_SKIPPED_PREFIXES = ("/proc/", "/sys/", "/dev/")
_LIMIT = 50_000  # inputs of one process beyond which nothing is cached (a build reading a tree)
_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})


class _State:
    """What this process's builds have read so far; one per process (forked children inherit)."""

    def __init__(self) -> None:
        self.active = False
        self.root = ""
        self.first: dict[str, str | None] = {}   # file -> digest when first read
        self.data: set[str] = set()              # files read that are not module sources
        self.written: set[str] = set()
        self.env: dict[str, str | None] = {}
        self.paths: dict[str, str] = {}
        self.listings: dict[str, str | None] = {}
        self.installed: dict[str, str | None] = {}  # installed top-level package -> its stat
        self.busy = threading.local()

    def count(self) -> int:
        return len(self.first) + len(self.env) + len(self.paths) + len(self.listings)


_STATE = _State()
_HOOKED = False


@contextlib.contextmanager
def _quiet() -> Iterator[bool]:
    """Our own reads inside the hook must not be recorded (nor recurse)."""
    if getattr(_STATE.busy, "on", False):
        yield False
        return
    _STATE.busy.on = True
    try:
        yield True
    finally:
        _STATE.busy.on = False


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """ckptlint's own file system calls inside a build (resolving a frame's file) are not the
    model's inputs."""
    with _quiet():
        yield


def _audit(event: str, args: tuple) -> None:
    if event not in _EVENTS or not _STATE.active:
        return
    with _quiet() as free:
        if not free:
            return
        by_import = sys._getframe(1).f_code.co_filename.startswith("<frozen importlib")
        if event == "open":
            _opened(args, by_import)
            return
        target = args[0] if args else None
        if target is not None and not isinstance(target, (str, bytes, os.PathLike)):
            return  # a listing by file descriptor: nothing to name
        path = os.path.abspath(os.fsdecode(target) if target is not None else ".")
        _listed(path, "import" if by_import else "all")


def _opened(args: tuple, by_import: bool) -> None:
    """A file opened: by the import system it is a module (keyed while the module is loaded),
    by anything else it is data (keyed for the rest of the process)."""
    if not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) \
        else bool((flags or 0) & (os.O_WRONLY | os.O_RDWR))
    if "__pycache__" in path:
        if writing:
            return
        try:  # reading a module's bytecode is reading the module
            from importlib.util import source_from_cache
            path = source_from_cache(path)
        except (ValueError, NotImplementedError):
            return
    elif writing:
        _STATE.written.add(path)
        return
    elif not by_import:
        _STATE.data.add(path)
    _note_file(path)


def _note_file(path: str) -> None:
    # installed files are keyed by their distribution's RECORD when the build is done
    if path in _STATE.first or path in _STATE.paths or _ignored(path) or installed_file(path):
        return
    found = inputs.kind(path)
    if found == "file":
        _STATE.first[path] = inputs.digest(path)
    else:  # an attempt to open what is not there (linecache probing sys.path) is a check
        _STATE.paths[path] = found


def _listed(path: str, mode: str) -> None:
    key = f"{mode}:{path}"
    if key in _STATE.listings or _ignored(path) or in_stdlib(os.path.join(path, "")):
        return
    site_dir = site_of(os.path.join(path, ""))
    if site_dir is not None and os.path.join(path, "") != site_dir:
        return  # inside an installed package: its RECORD answers for it
    _STATE.listings[key] = inputs.listing(path, mode)


def _note_path(path: Any) -> None:
    if not _STATE.active or not isinstance(path, (str, bytes, os.PathLike)):
        return
    with _quiet() as free:
        if free:
            full = os.path.abspath(os.fsdecode(path))
            if full not in _STATE.paths and not _ignored(full) and not installed_file(full):
                _STATE.paths[full] = inputs.kind(full)


def _ignored(path: str) -> bool:
    return (path.startswith(_SKIPPED_PREFIXES) or "__pycache__" in path
            or path.startswith(IMPORTED_PACKAGE_DIR) or ".ckptlint_cache" in path)


# -- where a file comes from -------------------------------------------------------------------


# -- the recorder --------------------------------------------------------------------------------

class _RecordingEnviron(os._Environ):  # type: ignore[name-defined,misc]
    """os.environ as the build sees it: the same variables, every read remembered."""

    def __init__(self, real: Any) -> None:
        super().__init__(real._data, real.encodekey, real.decodekey, real.encodevalue,
                         real.decodevalue)
        self.real = real

    def __getitem__(self, key: str) -> str:
        try:
            value = super().__getitem__(key)
        except KeyError:
            if _STATE.active and isinstance(key, str):
                _STATE.env.setdefault(key, None)
            raise
        if _STATE.active and isinstance(key, str):
            _STATE.env.setdefault(key, value)
        return value

    def __iter__(self) -> Iterator[str]:
        if _STATE.active and "*" not in _STATE.env:  # the build may depend on any variable
            _STATE.env["*"] = inputs.environment_digest(self.real)
        return super().__iter__()


@contextlib.contextmanager
def fresh_bytecode() -> Iterator[None]:
    """Never run a `.pyc` older than its source.

    Python trusts a timestamp pyc whose recorded source mtime (whole seconds) and size match:
    a source edited again within the second its pyc was written, to the same size, runs stale
    code — and the tracker, which digests the source, would cache that stale answer under the
    new content. While a build runs, a source modified after its pyc was written reports a
    shifted mtime to the import system, so the pyc does not validate and is compiled afresh.
    """
    from importlib.machinery import SourceFileLoader
    from importlib.util import cache_from_source

    real = SourceFileLoader.path_stats

    def path_stats(self: Any, path: str) -> dict:
        stats = real(self, path)
        try:
            newer = os.stat(path).st_mtime_ns > os.stat(cache_from_source(path)).st_mtime_ns
        except (OSError, ValueError, NotImplementedError):
            return stats
        return {**stats, "mtime": stats["mtime"] + 1} if newer else stats

    SourceFileLoader.path_stats = path_stats  # type: ignore[method-assign]
    try:
        yield
    finally:
        SourceFileLoader.path_stats = real  # type: ignore[method-assign]


@contextlib.contextmanager
def tracking(root: str) -> Iterator[None]:
    """Record inputs while the block runs (a model's build and its dry runs)."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it is idle between builds
        _HOOKED = True
    real_stat, real_lstat, real_environ = os.stat, os.lstat, os.environ

    def recording_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if not kwargs.get("dir_fd"):
            _note_path(path)
        return real_stat(path, *args, **kwargs)

    def recording_lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if not kwargs.get("dir_fd"):
            _note_path(path)
        return real_lstat(path, *args, **kwargs)

    _STATE.root = root
    os.stat, os.lstat = recording_stat, recording_lstat
    os.environ = _RecordingEnviron(real_environ)
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = False
        os.stat, os.lstat, os.environ = real_stat, real_lstat, real_environ


def document(root: str) -> dict[str, dict] | None:
    """The inputs of the build that just ran, or None when one changed while it ran (or there
    were too many to keep): then nothing may be cached for it."""
    files: dict[str, str | None] = {}
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if isinstance(name, str):
            _keep_module(name, files)
    for path in _STATE.data - _STATE.written:
        _keep(path, files)
    if _STATE.count() > _LIMIT or None in files.values():
        return None
    # an input that reads differently now than when the build first read it changed under us
    if any(inputs.digest(p) != d for p, d in files.items() if not p.endswith("RECORD")):
        return None
    paths = {p: k for p, k in _STATE.paths.items()}
    if any(inputs.kind(p) != k for p, k in paths.items()):
        return None
    listings = {key.partition(":")[2]: d for key, d in _STATE.listings.items()}
    if None in listings.values() or len(listings) < len(_STATE.listings):
        return None  # listed both ways: keep it simple and do not cache
    if None in _STATE.installed.values():
        return None
    return {"files": {_name(p, root): d for p, d in files.items()},
            "env": dict(_STATE.env), "paths": {_name(p, root): k for p, k in paths.items()},
            "listings": {_name(p, root): d for p, d in listings.items()},
            "installed": dict(_STATE.installed)}


def project_files(doc: dict[str, dict] | None) -> tuple[str, ...]:
    """The project's own files among a document's inputs (relative paths)."""
    if not doc:
        return ()
    return tuple(sorted(p for p in doc["files"] if not os.path.isabs(p)))


_MODULE_INPUTS: dict[str, tuple[str, str] | None] = {}  # __file__ -> what keys it, per process


def _keep_module(name: str, files: dict[str, str | None]) -> None:
    """A loaded module as an input; how each `__file__` is keyed is worked out once (a build
    with transformers holds thousands of modules, every model keys them all)."""
    if name not in _MODULE_INPUTS:
        source = _source_of(name)
        found: dict[str, str | None] = {}
        if source is not None:
            _keep(source, found)
        _MODULE_INPUTS[name] = next(iter(found.items()), None) if len(found) == 1 else None
        files.update(found)
        return
    known = _MODULE_INPUTS[name]
    if known is not None:
        path, digest = known
        files.setdefault(path, digest if path.endswith("RECORD") else _STATE.first.get(path, digest))


def _source_of(name: str) -> str | None:
    if not os.path.isabs(name):
        return None  # a built-in, a namespace, or torch.ops' made-up "_ops.py"
    path = os.path.abspath(name)
    if path.endswith((".pyc", ".pyo")) and "__pycache__" in path:
        try:
            from importlib.util import source_from_cache
            path = source_from_cache(path)
        except (ValueError, NotImplementedError):
            return None
    return None if _ignored(path) or in_stdlib(path) else path


def _keep(path: str, files: dict[str, str | None]) -> None:
    """A file as an input: itself, or the RECORD of the distribution that installed it."""
    if _ignored(path) or in_stdlib(path):
        return
    site_dir = site_of(path)
    if site_dir is not None:
        record = record_of(path)
        if record is not None:
            if record not in files:
                files[record] = inputs.digest(record)
            # the installed folder itself: replaced wholesale by a reinstall that leaves an
            # old RECORD behind (pip install --target --upgrade)
            top = os.path.join(site_dir, path[len(site_dir):].split(os.sep, 1)[0])
            _STATE.installed.setdefault(top, inputs.stat_fingerprint(top))
            return
    if path not in _STATE.first:
        _STATE.first[path] = inputs.digest(path)
    files[path] = _STATE.first[path]


@functools.lru_cache(maxsize=None)
def _name(path: str, root: str) -> str:
    inside = relative(path, root)
    return path if os.path.isabs(inside) or inside.startswith("..") else inside


def reset() -> None:
    """Forget what earlier builds of this process read (a fresh child starts clean anyway)."""
    global _STATE
    hooked_state = _STATE
    _STATE = _State()
    hooked_state.active = False
    _MODULE_INPUTS.clear()
