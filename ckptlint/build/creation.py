"""Witness the build: record where each submodule, parameter and buffer is created.

While a model is built, `nn.Module.__setattr__`, `register_buffer`, `register_parameter` and
`add_module` note the innermost frame of the user's project that led to the call. That line,
widened to its statement by libcst later, is the most reliable answer to "which line created
this layer": it sees through helpers, loops, `setattr(self, f"layer{i}", ...)` and base classes.
The outer project frames are kept too (the parent's statement, a helper's caller), and what was
assigned: a tensor already held elsewhere is a tie, None an emptied slot
(`self.pooler = Pooler() if flag else None`). Part of the build step: imports torch.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from threading import get_ident
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Iterator

from ckptlint.build.tracking import untracked
from ckptlint.core.paths import PACKAGE_DIR, is_project_file, relative
from ckptlint.core.records import CREATED, EMPTIED, TIED, ModuleInfo, Site

_OWN_PACKAGE = str(PACKAGE_DIR)
# project frames kept per site beyond the innermost: a model's __init__ chain is rarely deeper
# (Llama: MLP, decoder layer, list comprehension, model, causal-LM wrapper, factory)
MAX_STACK = 16
_NOTHING = object()  # a registration whose value the call does not show
# the keyword naming the registered object, for each registration method patched
_VALUE_KEYWORDS = {"register_buffer": "tensor", "register_parameter": "param",
                   "add_module": "module"}


class CreationRecorder:
    """Collects (module object, attribute name) -> Site while patched methods run."""

    def __init__(self, root: str, outside: Any = None):
        self.root = root
        # the frame that started the build: it and its callers are ckptlint's (or a program
        # calling ckptlint's API), never the model's, and are not walked for each site
        self.outside = outside
        self._records: dict[int, tuple[Any, dict[str, Site]]] = {}
        # the first (module, name) each tensor or module object was noted under, kept alive so
        # that an id() is never reused mid-build: a second name for the same object is a tie
        self._owners: dict[int, tuple[Any, int, str]] = {}
        self._sites: dict[tuple, Site] = {}  # identical sites (one per repeated layer) shared
        self._chain = _Chain()
        # resolving a path costs syscalls; a build notes thousands of sites from a few files.
        # (The caches hold the root, not the recorder: a cycle through the recorder would keep
        # the model it saw alive until a full collection.)
        self._project_file = lru_cache(maxsize=None)(partial(_is_project, root))
        self._relative = lru_cache(maxsize=None)(partial(_relative_to, root))

    def note(self, module: Any, name: str, value: Any = _NOTHING) -> None:
        frames = self._project_frames(sys._getframe(2))
        if not frames:
            return
        key = id(module)  # (id() is an audited call: once per site, not once per use)
        via = self._via(key, name, value)
        site = self._sites.get((frames, via))
        if site is None:  # each repeated layer's tensors are created at the same sites
            site = self._sites[(frames, via)] = Site(frames[0][0], frames[0][1], via, frames[1:])
        # keep the module alive so its id() cannot be reused by another object mid-build
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = (module, {})
        record[1][name] = site

    def _project_frames(self, frame: Any) -> tuple[tuple[str, int], ...]:
        """(file, line) of the project frames on the stack, innermost first, repeats merged
        (a list comprehension runs in a frame of its own on the same line), at most
        `MAX_STACK + 1`.

        A frame whose module (its globals' `__file__`) lies outside the project is passed
        without reading its code object: reading `f_code` is an audited event, which costs a
        call into the build's audit hook, and torch's frames are most of every stack. The
        assumption: such a frame runs code of that module. Project source executed with an
        installed module's globals would be missed (a location left out, never a verdict);
        code generated into a project module (a dataclass `__init__`, whose file is
        "<string>") is still told apart by its code's own file.

        The walk stops at the first frame it met on the previous walk that is a plain function
        (`_Chain`): what lies outside such a frame cannot have changed since.
        """
        chain = self._chain if get_ident() == self._chain.thread else _Chain()
        links = chain.links
        walked: list[tuple[Any, tuple[str, int] | None]] = []
        outside, distinct, last = self.outside, 0, None
        while frame is not None and frame is not outside:
            link = links.get(frame)
            if link is not None and (link[3] if link[3] is not None else chain.reusable(frame)):
                break
            entry = self._entry(frame)
            walked.append((frame, entry))
            if entry is not None and entry != last:
                distinct, last = distinct + 1, entry
                if distinct > MAX_STACK:  # cut short: what lies outside is not known
                    chain.forget()
                    found: tuple[tuple[str, int], ...] = ()
                    for _, entry in reversed(walked):
                        found = _prepended(entry, found)
                    return found
            frame = frame.f_back
        else:
            frame = None
        return chain.extend(frame, walked)

    def _entry(self, frame: Any) -> tuple[str, int] | None:
        """(file, line) of a project frame, else None."""
        module_file = frame.f_globals.get("__file__")
        if module_file.__class__ is str and not self._project_file(module_file):
            return None
        filename = frame.f_code.co_filename
        if not self._project_file(filename):
            return None
        return self._relative(filename), frame.f_lineno

    def _via(self, module_key: int, name: str, value: Any) -> str:
        if value is None:
            return EMPTIED
        if value is _NOTHING:
            return CREATED
        owner = self._owners.setdefault(id(value), (value, module_key, name))
        return CREATED if owner[1:] == (module_key, name) else TIED

    def sites(self, model: Any) -> dict[str, Site]:
        """Sites by module path and state-dict key, for every module reachable from `model`."""
        found: dict[str, Site] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            for name, site in self._records.get(id(module), (None, {}))[1].items():
                found[f"{path}.{name}" if path else name] = site
        return found


class _Chain:
    """The frames of the last walk, outermost first, each with the project entries outside it,
    so that the next walk stops where the stacks meet.

    The assumption: a frame of a plain function (not a generator or coroutine) that is on the
    stack at two walks stayed on it in between, suspended in the same call, so the frames
    outside it are the same objects at the same lines. Only its own line may have moved on,
    and it is read afresh. A generator's frame is resumed from wherever `next` is called, so
    the walk never stops at one. The chain holds its frames, so an identity check cannot
    meet a new frame at a reused address; the build's end clears it. Walks on other threads
    do not use it (tests/test_creation.py builds each case with and without it).
    """

    def __init__(self) -> None:
        self.thread = get_ident()
        self.frames: list[Any] = []
        # frame -> [position in frames, project file or None, entries outside, plain or None]
        self.links: dict[Any, list] = {}

    def reusable(self, frame: Any) -> bool:
        link = self.links.get(frame)
        if link is None:
            return False
        if link[3] is None:  # read once per frame: `f_code` is an audited event
            link[3] = not frame.f_code.co_flags & _RESUMABLE
        return link[3]

    def extend(self, met: Any, walked: list[tuple[Any, tuple[str, int] | None]]
               ) -> tuple[tuple[str, int], ...]:
        """The entries from the innermost walked frame outwards, after a walk that met the
        chain at frame `met` (None: it reached the outside); the walked frames join it."""
        if met is None:
            self.forget()
            outside: tuple[tuple[str, int], ...] = ()
        else:
            position, file, outside, _ = self.links[met]
            for gone in self.frames[position + 1:]:
                del self.links[gone]
            del self.frames[position + 1:]
            if file is not None:
                outside = _prepended((file, met.f_lineno), outside)
        for frame, entry in reversed(walked):
            self.links[frame] = [len(self.frames), entry and entry[0], outside, None]
            self.frames.append(frame)
            outside = _prepended(entry, outside)
        return outside

    def forget(self) -> None:
        self.frames.clear()
        self.links.clear()


# code flags of frames that can be suspended and resumed from another caller
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _prepended(entry: tuple[str, int] | None,
               outside: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """A frame's entry before those outside it: repeats merged, at most `MAX_STACK + 1`."""
    if entry is None or (outside and outside[0] == entry):
        return outside
    return ((entry,) + outside)[:MAX_STACK + 1]


def _is_project(root: str, filename: str) -> bool:
    with untracked():  # resolving the path is ckptlint's own reading, not the model's
        resolved = str(Path(filename).resolve())  # the worker imports ckptlint via a symlink
        return not resolved.startswith(_OWN_PACKAGE) and is_project_file(resolved, root)


def _relative_to(root: str, filename: str) -> str:
    with untracked():
        return relative(filename, root)


@contextlib.contextmanager
def recording(root: str, outside: Any = None) -> Iterator[CreationRecorder]:
    """Patch nn.Module's attribute and registration paths for the duration of a build.

    `outside` is the frame building the model: the walk for each site stops there.
    """
    from torch import Tensor, nn

    recorder = CreationRecorder(root, outside)
    originals = {name: getattr(nn.Module, name) for name in ("__setattr__", *_VALUE_KEYWORDS)}

    # the (module, name) being set: `Module.__setattr__` of a Parameter calls
    # `register_parameter` with the same two, whose site the setattr has just noted
    setting: list[tuple[Any, str]] = []

    def setattr_(self: Any, name: str, value: Any) -> None:
        if value is None or isinstance(value, (nn.Module, Tensor)):
            recorder.note(self, name, value)
            setting.append((self, name))
            try:
                originals["__setattr__"](self, name, value)
            finally:
                setting.pop()
            return
        originals["__setattr__"](self, name, value)

    def registrar(original: Any, keyword: str) -> Any:
        def register(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            if setting and setting[-1][0] is self and setting[-1][1] == name:
                return original(self, name, *args, **kwargs)
            value = args[0] if args else kwargs.get(keyword, _NOTHING)
            recorder.note(self, name, value if value is None or isinstance(
                value, (nn.Module, Tensor)) else _NOTHING)
            return original(self, name, *args, **kwargs)
        return register

    patched = {"__setattr__": setattr_, **{n: registrar(originals[n], keyword)
                                            for n, keyword in _VALUE_KEYWORDS.items()}}
    for name, function in patched.items():
        setattr(nn.Module, name, function)
    try:
        yield recorder
    finally:
        for name, function in originals.items():
            setattr(nn.Module, name, function)
        recorder._chain.forget()  # the frames it holds, and through them the build's locals


def describe_modules(model: Any, root: str) -> dict[str, ModuleInfo]:
    """Every submodule by path, with the project classes of its MRO (for the static search)."""
    return {path: _info(type(module), root) for path, module in model.named_modules()}


@lru_cache(maxsize=None)
def _info(cls: type, root: str) -> ModuleInfo:
    classes = []
    for klass in cls.__mro__:
        try:
            source = inspect.getsourcefile(klass)
        except (TypeError, OSError):
            continue
        if source and is_project_file(source, root):
            classes.append((relative(source, root), klass.__qualname__))
    return ModuleInfo(cls.__name__, tuple(classes))
