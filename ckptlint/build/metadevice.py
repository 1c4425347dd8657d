"""The meta device for a build, in which random init of a meta tensor is skipped (each
assumption is stated beside its shortcut). Part of the build step: imports torch."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ckptlint.build.loadtorch import import_torch

_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_")


_RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_",
                   "log_normal_", "cauchy_")


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """`torch.device("meta")` as a context, in which random init of a meta tensor is skipped.

    Filling a tensor that has no data changes nothing, but each fill runs torch's Python
    decomposition of the random op (about 40 µs: half of building an `nn.Linear` on meta, two
    seconds for a model of 50,000 tensors). Tensors with data still initialise.

    torch's own argument checks still run, so a model that would fail to build still does
    (`kaiming_uniform_(w, nonlinearity="gelu")`, `orthogonal_` of a vector, a negative or
    None std): `_validated` vouches only for plain numbers in range and asks torch's own
    helpers, and runs the real function whenever it cannot tell (tests/test_standins.py
    builds each case both ways).

    It is torch's own device context (`torch.utils._device.DeviceContext`, what
    `torch.device(...).__enter__` pushes) with the skip added, rather than a second
    torch-function mode above it: every torch call of a build passes through each mode's
    Python `__torch_function__`, so one mode instead of two saves a Python call per
    operation. The device is set exactly as `torch.device("meta")` sets it, and a
    `with torch.device(...)` in user code replaces it for its block, as it would the original.
    `nn.init` functions reach a torch-function mode with the tensor as the keyword `tensor`
    (they call `handle_torch_function(f, (tensor,), tensor=tensor, …)`); Tensor methods with
    it as the first argument.

    `nn.init`'s own functions are also answered directly while the build runs (`_direct`):
    the trip through the mode (torch's Python `handle_torch_function`, then the mode's Python
    `__torch_function__` for each `dim()` and `size()` inside) cost more than the rest of
    building an `nn.Linear`.
    """
    torch = import_torch()
    from torch.utils._device import DeviceContext, _device_constructors

    init = torch.nn.init
    originals = {n: _original(getattr(init, n)) for n in (*_INIT_FUNCTIONS, *_PASSED_THROUGH)
                 if hasattr(init, n)}
    skipped = {originals[n]: f"init.{n}" for n in _INIT_FUNCTIONS if n in originals}
    skipped.update({getattr(torch.Tensor, n): f"Tensor.{n}" for n in _RANDOM_METHODS})
    constructors = _device_constructors()
    meta = torch.device("meta")

    class MetaDevice(DeviceContext):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            name = skipped.get(func)
            if name is not None:
                tensor = args[0] if args else kwargs.get("tensor")
                if isinstance(tensor, torch.Tensor) and tensor.is_meta and \
                        _validated(torch, name, tensor, args[1:], kwargs):
                    return tensor
            elif func in constructors and kwargs.get("device") is None:
                kwargs["device"] = meta
            return func(*args, **kwargs)

    mode = MetaDevice(meta)
    direct = {n: _direct(torch, n, f, mode) for n, f in originals.items()}
    # the real function hands the module's current global (the direct one) to the mode
    skipped.update({direct[n]: f"init.{n}" for n in _INIT_FUNCTIONS if n in direct})
    with mode:
        for name, function in direct.items():
            setattr(init, name, function)
        try:
            yield
        finally:
            for name, function in direct.items():
                if getattr(init, name) is function:  # not if the model's code replaced it
                    setattr(init, name, originals[name])


# `nn.init` functions that only read shapes or fill constants: no constructor and no random op
# in them, so the mode would pass every call inside them through unchanged
_PASSED_THROUGH = ("_calculate_fan_in_and_fan_out", "ones_", "zeros_")


def _original(function: Any) -> Any:
    return getattr(function, "_meta_direct_of", function)


def _direct(torch: Any, name: str, original: Any, mode: Any) -> Any:
    """`original` as the mode would answer it, without the trip through the mode.

    The assumption: with `mode` alone on the torch-function stack and a plain tensor (no
    `__torch_function__` of its own), the only things the mode changes are the device of a
    constructor and the fill it skips. So a function that calls neither runs the same with
    torch functions disabled, and a skipped fill is vouched for by the same `_validated`, given
    the arguments by name with defaults filled, as `handle_torch_function` hands them to the
    mode. A call Python would refuse (an unknown keyword, too many arguments), another mode on
    top, or a tensor subclass takes the real path (tests/test_standins.py runs every case
    with and without these).

    A skip once vouched for is remembered by the call's exact arguments and their types (so
    `a=True`, which torch refuses, is never taken for `a=1`) with the tensor's dtype and shape,
    all that `_validated` reads. Only a skip is remembered, so a remembered answer never hides
    an error; layers repeated a thousand times ask the same question a thousand times.
    """
    code = original.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = dict(zip(names[len(names) - len(original.__defaults__ or ()):],
                        original.__defaults__ or ()))
    plain = (torch.Tensor, torch.nn.Parameter)
    disabled = torch._C.DisableTorchFunction
    depth, mode_at = torch._C._len_torch_function_stack, torch._C._get_function_stack_at
    skip = f"init.{name}" if name in _INIT_FUNCTIONS else None
    vouched: set[tuple] = set()

    def direct(*args: Any, **kwargs: Any) -> Any:
        tensor = args[0] if args else kwargs.get("tensor")
        if type(tensor) in plain and depth() == 1 and mode_at(0) is mode:
            with disabled():
                if skip is None:
                    return original(*args, **kwargs)
                if tensor.is_meta and skipped(tensor, args, kwargs):
                    return tensor
        return original(*args, **kwargs)

    def skipped(tensor: Any, args: tuple, kwargs: dict[str, Any]) -> bool:
        call: tuple | None = (tensor.dtype, tensor.shape, args[1:], tuple(map(type, args[1:])),
                              tuple(kwargs.items()), tuple(map(type, kwargs.values())))
        try:
            if call in vouched:
                return True
        except TypeError:  # an unhashable argument: asked every time
            call = None
        values = _bound(names, defaults, args, kwargs)
        if values is None or not _validated(torch, skip, tensor, (), values):
            return False
        if call is not None:
            vouched.add(call)
        return True

    direct.__name__, direct.__qualname__, direct.__doc__ = name, name, original.__doc__
    direct._meta_direct_of = original  # type: ignore[attr-defined]
    return direct


def _bound(names: tuple[str, ...], defaults: dict[str, Any], args: tuple,
           kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The arguments by name as Python binds them, defaults filled; None if Python would
    refuse the call."""
    if len(args) > len(names):
        return None
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in values or key not in names:
            return None
        values[key] = value
    for key, value in defaults.items():
        values.setdefault(key, value)
    return values if len(values) == len(names) else None


# the parameters after the tensor, by position, of the Tensor methods whose fill is skipped
_METHOD_PARAMS = {"normal_": ("mean", "std"), "uniform_": ("from", "to"), "bernoulli_": ("p",),
                  "exponential_": ("lambd",), "geometric_": ("p",),
                  "log_normal_": ("mean", "std"), "cauchy_": ("median", "sigma")}
_NOT_NUMBERS = frozenset({"tensor", "mode", "nonlinearity", "generator"})


def _validated(torch: Any, name: str, tensor: Any, args: tuple, kwargs: dict) -> bool:
    """Whether torch would accept these arguments, so the fill may be skipped. It vouches only
    for a floating-point tensor, plain int or float numbers, no generator and each op's own
    range checks (and torch's helpers for kaiming and xavier); anything else (None, a string,
    a tensor as a number, an integer tensor, a `random_`) runs the real call, which raises
    whatever torch would raise. `name` is "init.<function>" or "Tensor.<method>"."""
    kind, _, op = name.partition(".")
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return False  # a no-op torch warns about, or a dtype it may refuse: let it run
    if kind == "Tensor":
        params = _METHOD_PARAMS.get(op)
        if params is None or len(args) > len(params):
            return False
        values = {**dict(zip(params, args)), **kwargs}
    else:
        values = dict(kwargs)
    if values.get("generator") is not None or not all(
            type(v) in (int, float) for k, v in values.items() if k not in _NOT_NUMBERS):
        return False
    init = torch.nn.init
    try:
        if op.startswith("kaiming_"):
            init._calculate_correct_fan(tensor, values.get("mode", "fan_in"))
            init.calculate_gain(values.get("nonlinearity", "leaky_relu"), values.get("a", 0))
        elif op.startswith("xavier_"):
            init._calculate_fan_in_and_fan_out(tensor)
    except Exception:  # noqa: BLE001 - torch's own check failed: the real call raises it
        return False
    in_range = _IN_RANGE.get(op)
    return in_range is None or in_range(tensor, values)


# each op's own range check on its (already plain-number) arguments, by its defaults
_IN_RANGE: dict[str, Callable[[Any, dict], bool]] = {
    "orthogonal_": lambda t, v: t.dim() >= 2,
    "sparse_": lambda t, v: t.dim() == 2,
    "normal_": lambda t, v: v.get("std", 1.0) >= 0,
    "log_normal_": lambda t, v: v.get("std", 2.0) > 0,
    "uniform_": lambda t, v: v.get("a", v.get("from", 0)) <= v.get("b", v.get("to", 1)),
    "bernoulli_": lambda t, v: 0 <= v.get("p", 0.5) <= 1,
    "exponential_": lambda t, v: v.get("lambd", 1.0) > 0,
    "geometric_": lambda t, v: 0 < v.get("p", 0.5) < 1,
    "cauchy_": lambda t, v: v.get("sigma", 1.0) > 0,
}
