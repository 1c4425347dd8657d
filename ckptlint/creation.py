"""Witness the build: record where each submodule, parameter and buffer is created.

While a model is built, `nn.Module.__setattr__`, `register_buffer`, `register_parameter` and
`add_module` note the innermost frame of the user's project that led to the call. That line,
widened to its statement by libcst later, is the most reliable answer to "which line created
this layer": it sees through helpers, loops, `setattr(self, f"layer{i}", ...)` and base classes.
Part of the build step: imports torch.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ckptlint.ftypes import ModuleInfo, Site
from ckptlint.paths import is_project_file, relative
from ckptlint.tracking import untracked

_OWN_PACKAGE = str(Path(__file__).resolve().parent)


class CreationRecorder:
    """Collects (module object, attribute name) -> Site while patched methods run."""

    def __init__(self, root: str):
        self.root = root
        self._records: dict[int, tuple[Any, dict[str, Site]]] = {}
        self._project_file = lru_cache(maxsize=None)(self._is_project)
        # resolving a path costs syscalls; a build notes thousands of sites from a few files
        self._relative = lru_cache(maxsize=None)(lambda filename: relative(filename, root))

    def _is_project(self, filename: str) -> bool:
        resolved = str(Path(filename).resolve())  # the worker imports ckptlint via a symlink
        return not resolved.startswith(_OWN_PACKAGE) and is_project_file(resolved, self.root)

    def note(self, module: Any, name: str) -> None:
        frame = sys._getframe(2)
        with untracked():
            while frame is not None and not self._project_file(frame.f_code.co_filename):
                frame = frame.f_back
        if frame is None:
            return
        site = Site(self._relative(frame.f_code.co_filename), frame.f_lineno)
        # keep the module alive so its id() cannot be reused by another object mid-build
        self._records.setdefault(id(module), (module, {}))[1][name] = site

    def sites(self, model: Any) -> dict[str, Site]:
        """Sites by module path and state-dict key, for every module reachable from `model`."""
        found: dict[str, Site] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            for name, site in self._records.get(id(module), (None, {}))[1].items():
                found[f"{path}.{name}" if path else name] = site
        return found


@contextlib.contextmanager
def recording(root: str) -> Iterator[CreationRecorder]:
    """Patch nn.Module's attribute and registration paths for the duration of a build."""
    from torch import Tensor, nn

    recorder = CreationRecorder(root)
    originals = {name: getattr(nn.Module, name)
                 for name in ("__setattr__", "register_buffer", "register_parameter", "add_module")}

    def setattr_(self: Any, name: str, value: Any) -> None:
        if isinstance(value, (nn.Module, Tensor)):
            recorder.note(self, name)
        originals["__setattr__"](self, name, value)

    def registrar(original: Any) -> Any:
        def register(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
            recorder.note(self, name)
            return original(self, name, *args, **kwargs)
        return register

    patched = {"__setattr__": setattr_, **{n: registrar(originals[n]) for n in originals
                                            if n != "__setattr__"}}
    for name, function in patched.items():
        setattr(nn.Module, name, function)
    try:
        yield recorder
    finally:
        for name, function in originals.items():
            setattr(nn.Module, name, function)


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
