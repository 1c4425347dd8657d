"""The meta device for a build, in which random init of a meta tensor is skipped (each
assumption is stated beside its shortcut). Part of the build step: imports torch."""

from __future__ import annotations

import contextlib
import math
from types import FunctionType
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

    `nn.init._calculate_fan_in_and_fan_out` (torch's private helper, which `reset_parameters`
    of Linear and Conv call beside their init) runs with torch functions disabled: it only reads
    shapes, and through the mode each `dim()` and `size()` in it cost a Python call. The public
    `nn.init` functions are left as they are: they are compared by identity (transformers'
    sets of init functions, user modes), pickled, and imported by name during a build. What
    they call when a mode is on, `torch.overrides.handle_torch_function`, asks the skip at
    once when this mode is alone on the stack (`_init_at_once`).

    A skip once vouched for is remembered by the call's exact arguments and their types (so
    `a=True`, which torch refuses, is never taken for `a=1`) with all that `_validated` reads
    of the tensor (dtype, shape, requires_grad, inference) and whether grad mode is on. Only a
    skip is remembered, so a remembered answer never hides an error.
    """
    torch = import_torch()
    from torch.utils._device import DeviceContext, _device_constructors

    skipped = {getattr(torch.nn.init, n): f"init.{n}" for n in _INIT_FUNCTIONS
               if hasattr(torch.nn.init, n)}
    skipped.update({getattr(torch.Tensor, n): f"Tensor.{n}" for n in _RANDOM_METHODS})
    constructors = _device_constructors()
    meta = torch.device("meta")
    plain = (torch.Tensor, torch.nn.Parameter)
    vouched: set[tuple] = set()
    grad_enabled = torch.is_grad_enabled

    def skip(name: str, tensor: Any, args: tuple, kwargs: dict) -> bool:
        if type(tensor) not in plain or not tensor.is_meta:
            return False  # a subclass's own __torch_function__ has its say on the real path
        rest = args[1:]  # the tensor itself is not part of the question: its dtype and shape are
        named = tuple([(k, v, type(v)) for k, v in kwargs.items() if k != "tensor"])
        call: tuple | None = (name, tensor.dtype, tensor.shape, tensor.requires_grad,
                              tensor.is_inference(), grad_enabled(), rest,
                              tuple(map(type, rest)), named)
        try:
            if call in vouched:
                return True
        except Exception:  # noqa: BLE001 - an argument that cannot be hashed: asked each time
            call = None
        if not _validated(torch, name, tensor, rest, kwargs):
            return False
        if call is not None:
            vouched.add(call)
        return True

    class MetaDevice(DeviceContext):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            kwargs = kwargs or {}
            name = skipped.get(func)
            if name is not None:
                tensor = args[0] if args else kwargs.get("tensor")
                if skip(name, tensor, args, kwargs):
                    return tensor
            elif func in constructors and kwargs.get("device") is None:
                kwargs["device"] = meta
            return func(*args, **kwargs)

    mode = MetaDevice(meta)
    init, overrides = torch.nn.init, torch.overrides
    fan, handle = getattr(init, _FAN, None), getattr(overrides, _HANDLE, None)
    with mode, _replaced(init, _FAN, lambda: _shapes_only(torch, fan, mode)), \
            _replaced(overrides, _HANDLE,
                      lambda: _init_at_once(torch, handle, mode, skipped, skip)):
        yield


_FAN = "_calculate_fan_in_and_fan_out"
_HANDLE = "handle_torch_function"


@contextlib.contextmanager
def _replaced(module: Any, name: str, make: Callable[[], Any]) -> Iterator[None]:
    """`module.name` is `make()` for the block, when it is torch's own function; put back
    only if it is still ours (the model's code may replace or delete it)."""
    original = getattr(module, name, None)
    if not _plain_function_of(module, original):
        yield
        return
    replacement = make()
    setattr(module, name, replacement)
    try:
        yield
    finally:
        if getattr(module, name, None) is replacement:
            setattr(module, name, original)


def _plain_function_of(module: Any, function: Any) -> bool:
    """A plain function of `module`'s own source (not a user's replacement, nor a partial)."""
    code = getattr(function, "__code__", None)
    return callable(function) and code is not None and \
        getattr(function, "__module__", None) == module.__name__ and \
        code.co_filename == getattr(module, "__file__", None)


def _init_at_once(torch: Any, original: Any, mode: Any, skipped: dict,
                  skip: Callable[[str, Any, tuple, dict], bool]) -> Any:
    """`torch.overrides.handle_torch_function` (which each `nn.init` function calls, by that
    attribute, when a mode is on), answering a skip at once when `mode` is alone on the stack.

    torch's own would collect the overloaded types, pop the mode in a context manager and
    call its `__torch_function__`, which asks `skip`: about 3 µs of each init call, a third of
    it. With `mode` alone and torch functions enabled it does exactly that and nothing else
    (the mode never answers NotImplemented, so the types are never used), so popping the mode
    and asking `skip` directly gives the same answer; any other call, or a skip refused, goes
    to torch's own (tests/test_standins.py answers each case with and without a second mode
    on top, where every call takes torch's way)."""
    import functools

    alone = _alone(torch, mode)
    pop, push = torch._C._pop_torch_function_stack, torch._C._push_on_torch_function_stack
    enabled = torch._C._is_torch_function_mode_enabled

    @functools.wraps(original)
    def handle_torch_function(public_api: Any, relevant_args: Any, *args: Any,
                              **kwargs: Any) -> Any:
        name = skipped.get(public_api) if type(public_api) is FunctionType else None
        tensor = kwargs.get("tensor")
        if name is not None and not args and type(relevant_args) is tuple and \
                len(relevant_args) == 1 and relevant_args[0] is tensor and alone() and \
                enabled():
            pop()
            try:
                done = skip(name, tensor, args, kwargs)
            finally:
                push(mode)
            if done:
                return tensor
        return original(public_api, relevant_args, *args, **kwargs)

    return handle_torch_function


def _alone(torch: Any, mode: Any) -> Callable[[], bool]:
    """Whether `mode` is the only torch-function mode on the stack: the condition of both
    shortcuts, under which it alone sees each call inside them."""
    depth, mode_at = torch._C._len_torch_function_stack, torch._C._get_function_stack_at
    return lambda: depth() == 1 and mode_at(0) is mode


def _shapes_only(torch: Any, original: Any, mode: Any) -> Any:
    """`original`, which reads only shapes, with torch functions disabled when `mode` is alone
    on the stack and the tensor is plain: the mode would pass each call in it through
    unchanged (no constructor, no random op), and its answer and its errors are the same
    (tests/test_standins.py runs each case with and without a second mode on top)."""
    import functools

    plain = (torch.Tensor, torch.nn.Parameter)
    disabled = torch._C.DisableTorchFunction
    alone = _alone(torch, mode)

    @functools.wraps(original)
    def shapes_only(*args: Any, **kwargs: Any) -> Any:
        tensor = args[0] if args else kwargs.get("tensor")
        if type(tensor) in plain and alone():
            with disabled():
                return original(*args, **kwargs)
        return original(*args, **kwargs)

    return shapes_only


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
    if tensor.is_inference() or (kind == "Tensor" and tensor.requires_grad
                                 and torch.is_grad_enabled()):
        return False  # an in-place fill autograd or inference mode refuses (nn.init's own
        # functions run under no_grad)
    if kind == "Tensor":
        params = _METHOD_PARAMS.get(op)
        if params is None or len(args) > len(params):
            return False
        values = {**dict(zip(params, args)), **kwargs}
    else:
        values = dict(kwargs)
    numbers = [v for k, v in values.items() if k not in _NOT_NUMBERS]
    if values.get("generator") is not None or not all(type(v) in (int, float) for v in numbers):
        return False
    try:
        if not all(math.isfinite(float(v)) or type(v) is float for v in numbers):
            return False  # not an int a double holds (torch raises OverflowError)
    except OverflowError:
        return False
    init = torch.nn.init
    try:
        if op.startswith("kaiming_"):
            init._calculate_correct_fan(tensor, values.get("mode", "fan_in"))
            gain = init.calculate_gain(values.get("nonlinearity", "leaky_relu"),
                                       values.get("a", 0))
        elif op.startswith("xavier_"):
            init._calculate_fan_in_and_fan_out(tensor)
            gain = values.get("gain", 1.0)
        else:
            gain = 1.0
    except Exception:  # noqa: BLE001 - torch's own check failed: the real call raises it
        return False
    if not (math.isfinite(gain) and gain >= 0):
        return False  # the std (or bound) torch computes from it is one it refuses
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
