"""Stand-ins that keep a meta build from paying for what it does not use: `torch._dynamo`, sympy
and torch's symbolic-shape machinery answered by small modules while the model is built (each
assumption is stated beside its stand-in; the init skip is in `metadevice`)."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from typing import Any, Iterator



class _DynamoStandIn(types.ModuleType):
    """Stands in for `torch._dynamo` while a model is built on meta.

    torch's Python meta kernels are wrapped in `torch._disable_dynamo`, whose first call imports
    torch._dynamo (~1 s here) only to wrap the kernel in a no-op when nothing is being compiled.
    The stand-in answers `disable` with the kernel itself, remembers what it answered so the
    caches can be undone afterwards, and hands any other attribute to the real module.
    """

    def __init__(self) -> None:
        super().__init__("torch._dynamo")
        self.answered: list[Any] = []

    def disable(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.answered.append(fn)
        return fn

    def __getattr__(self, name: str) -> Any:
        _remove_standin(self)
        return getattr(importlib.import_module("torch._dynamo"), name)


def _remove_standin(standin: _DynamoStandIn) -> None:
    torch = sys.modules["torch"]
    if sys.modules.get("torch._dynamo") is standin:
        del sys.modules["torch._dynamo"]
    if torch.__dict__.get("_dynamo") is standin:
        delattr(torch, "_dynamo")


@contextlib.contextmanager
def no_dynamo_import() -> Iterator[None]:
    if "torch._dynamo" in sys.modules:
        yield
        return
    standin = _DynamoStandIn()
    sys.modules["torch._dynamo"] = standin
    try:
        yield
    finally:
        _remove_standin(standin)
        for fn in standin.answered:  # leave the process as if we had never been here
            with contextlib.suppress(AttributeError):
                delattr(fn, "__dynamo_disable")


_UNKNOWN = object()


def _plain(*values: Any) -> bool:
    """Plain Python bools and ints, also inside lists and tuples (sym_eq compares shapes)."""
    return all(_plain(*v) if isinstance(v, (list, tuple)) else type(v) in (bool, int)
               for v in values)


def _if_bool(answer: Any) -> Any:
    return lambda a, *rest: answer(a) if type(a) is bool and not rest else _UNKNOWN


# What `torch.fx.experimental.symbolic_shapes` answers for plain Python bools and ints (read
# from its source: each returns the value, True, False or the plain combination, without
# touching sympy). Anything symbolic goes to the real module.
_PLAIN_ANSWERS = {
    "expect_true": _if_bool(lambda a: a),
    "guard_or_false": _if_bool(lambda a: a),
    "guard_or_true": _if_bool(lambda a: a),
    "guard_size_oblivious": _if_bool(lambda a: a),
    "statically_known_true": _if_bool(lambda a: a),
    "sym_and": lambda *v: all(v) if v and all(type(x) is bool for x in v) else _UNKNOWN,
    "sym_or": lambda *v: any(v) if v and all(type(x) is bool for x in v) else _UNKNOWN,
    "sym_eq": lambda x, y: (list(x) == list(y) if isinstance(x, (list, tuple)) else x == y)
    if _plain(x, y) and isinstance(x, (list, tuple)) == isinstance(y, (list, tuple))
    else _UNKNOWN,
    "guarding_hint_or_throw": lambda a: a if _plain(a) and type(a) in (bool, int) else _UNKNOWN,
    "guard_int": lambda a: a if type(a) is int else _UNKNOWN,
    "has_guarding_hint": lambda a: True if _plain(a) and type(a) in (bool, int) else _UNKNOWN,
    "is_nested_int": lambda a: False if type(a) in (bool, int, float) else _UNKNOWN,
}


class _SymbolicShapesStandIn(types.ModuleType):
    """Stands in for `torch.fx.experimental.symbolic_shapes` while a model is built on meta.

    torch's Python meta kernels (`tril`, broadcasting, `torch._check`: the masks and rotary
    tables of `__init__`s) import that module, and with it sympy (~0.3 s here), to ask
    questions whose answer for plain Python values is the value itself (`_PLAIN_ANSWERS`). The
    stand-in answers those; any other name, or a symbolic argument, imports the real module
    and hands over to it. A build that fails on meta is retried without the stand-ins before
    anything falls back to the CPU (`build_module`), so they can cost time, never a result.
    """

    _NAME = "torch.fx.experimental.symbolic_shapes"

    def __init__(self) -> None:
        super().__init__(self._NAME)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # the import system asking about __spec__, __path__…
            raise AttributeError(name)
        if name in _PLAIN_ANSWERS:
            return partial_answer(self, name)
        return getattr(self._real(), name)

    def _real(self) -> Any:
        if sys.modules.get(self._NAME) is self:
            del sys.modules[self._NAME]
        return importlib.import_module(self._NAME)


def partial_answer(standin: _SymbolicShapesStandIn, name: str) -> Any:
    def answer(*args: Any, **kwargs: Any) -> Any:
        if not kwargs:
            try:
                known = _PLAIN_ANSWERS[name](*args)
            except TypeError:  # another arity than the plain case
                known = _UNKNOWN
            if known is not _UNKNOWN:
                return known
        return getattr(standin._real(), name)(*args, **kwargs)

    return answer


class _SympyStandIn(types.ModuleType):
    """Stands in for `sympy` while a model is built on meta, for torch's type promotion.

    `torch._prims_common.elementwise_dtypes` (every elementwise meta kernel) imports sympy only
    to ask `isinstance(x, sympy.Basic)`. While sympy has never been imported no object can be
    a sympy expression, so a class nothing is an instance of answers the same. Any other name,
    or `Basic` once the real sympy is loaded, comes from the real sympy.
    """

    class _NothingIsThis:
        pass

    def __init__(self) -> None:
        super().__init__("sympy")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        real = sys.modules.get("sympy")
        if name == "Basic" and (real is None or real is self):
            return self._NothingIsThis
        if real is self:
            del sys.modules["sympy"]
        return getattr(importlib.import_module("sympy"), name)


@contextlib.contextmanager
def no_sympy_import() -> Iterator[None]:
    """Both stand-ins, each only where the real module is not loaded yet; undone after."""
    placed = {}
    for standin in (_SymbolicShapesStandIn(), _SympyStandIn()):
        if standin.__name__ not in sys.modules:
            sys.modules[standin.__name__] = placed[standin.__name__] = standin
    try:
        yield
    finally:
        for name, standin in placed.items():
            if sys.modules.get(name) is standin:
                del sys.modules[name]
