"""Build registered models on the meta device and read their state-dict signatures.

This module and the checkpoint readers are the only places that import torch. Everything it
returns is plain data (`BuildResult`), so the rest of ckptlint never touches a live model.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import traceback
import types
import warnings
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from ckptlint.config import entry_location
from ckptlint.build.creation import describe_modules, recording
from ckptlint.core.errors import TorchMissingError
from ckptlint.core.records import BuildResult, Config, LoadReport, Location, ModelSpec, Signature, TensorSpec
from ckptlint.core.keys import ancestors, natural_sorted
from ckptlint.build.tracking import document, fresh_bytecode, project_files, tracking, untracked
from ckptlint.core.paths import PACKAGE_DIR, is_project_file, relative

_SIZE_MISMATCH = "size mismatch for "
_TORCH_LOAD_ERROR = "Error(s) in loading state_dict"


def import_torch() -> Any:
    # torch warns on import when NumPy is absent ("Failed to initialize NumPy: No module named
    # 'numpy'"). ckptlint never converts a tensor to NumPy (it builds on meta and reads file
    # headers itself), so that one warning is noise to its users; every other warning shows.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy",
                                category=UserWarning)
        try:
            import torch
        except ImportError:
            raise TorchMissingError() from None
    return torch


class BuildFailure(Exception):
    """A model could not be built; carries the one-sentence reason and where to point."""

    def __init__(self, message: str, location: Location | None = None):
        super().__init__(message)
        self.location = location


@contextlib.contextmanager
def project_on_path(config: Config) -> Iterator[None]:
    """Put the project root and its `pythonpath` entries first on sys.path while building."""
    root = Path(config.root)
    entries = [str((root / p).resolve()) for p in config.pythonpath] + [str(root)]
    added = [e for e in entries if e not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def resolve_target(target: str) -> Any:
    """Import `package.module:attr.sub` and return the object."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def instantiate(value: Any) -> Any:
    """Build `_target_` tables depth first (the Hydra convention); other values pass through."""
    if isinstance(value, dict):
        built = {k: instantiate(v) for k, v in value.items() if k != "_target_"}
        if "_target_" in value:
            return resolve_target(value["_target_"])(**built)
        return built
    if isinstance(value, list):
        return [instantiate(v) for v in value]
    return value


@contextlib.contextmanager
def on_meta(stand_ins: bool = True) -> Iterator[None]:
    """Everything a meta build needs: the meta device, no pointless init, and (unless asked
    not to) no dynamo or sympy import for what plain values answer."""
    torch = import_torch()
    with torch.device("meta"), _skip_meta_init(), _no_dynamo_import(), \
            (_no_sympy_import() if stand_ins else contextlib.nullcontext()):
        yield


def build_module(spec: ModelSpec,
                 config: Config) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    """Instantiate the model on meta; raise `BuildFailure`.

    Returns the module, notes, and the per-operation fallbacks' notes. When an operation has
    no meta kernel (whisper's `alignment_heads.to_sparse()`), the build is run on meta again
    with only such operations run on the CPU (`cpu_fallback`); when that fails too, the whole
    model is built on the CPU, with a note (it allocates every weight).
    """
    factory = _factory(spec, config)
    first: Exception | None = None
    for stand_ins in (True, False):  # without the sympy stand-ins, in case they were the cause
        for per_op in (False, True):
            if per_op and not _lacks_meta_kernel(error):
                continue
            fallback = cpu_fallback(config.root) if per_op else None
            try:
                with on_meta(stand_ins), \
                        fallback if fallback is not None else contextlib.nullcontext():
                    module = _checked(factory(**instantiate(spec.kwargs)), spec, config)
                return module, (), () if fallback is None else (fallback.note(spec.name),)
            except BuildFailure:
                raise
            except Exception as exc:
                error = exc
                first = first or exc
    return _on_cpu(factory, spec, config), (_cpu_note(spec, first),), ()


def _on_cpu(factory: Any, spec: ModelSpec, config: Config) -> Any:
    try:
        return _checked(factory(**instantiate(spec.kwargs)), spec, config)
    except BuildFailure:
        raise
    except Exception as exc:
        raise _failure(exc, f"building `{spec.target}` raised", spec, config) from None


def _cpu_note(spec: ModelSpec, meta_error: BaseException) -> str:
    # torch's message for a missing kernel runs to ~600 characters of compile advice: its
    # first sentence says what failed
    text = f"{type(meta_error).__name__}: {meta_error}".splitlines()[0]
    reason = text.split(". ", 1)[0].rstrip(".")[:_REASON_CHARS]
    return (f"{spec.name}: construction on the meta device failed ({reason}); "
            "built on the CPU instead, which allocates its weights")


_REASON_CHARS = 200


def _lacks_meta_kernel(exc: BaseException | None) -> bool:
    """Whether an operation without a meta kernel is behind the failure (torch raises
    NotImplementedError for it; user code may have wrapped it in another exception)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, NotImplementedError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _factory(spec: ModelSpec, config: Config) -> Any:
    try:
        factory = resolve_target(spec.target)
    except Exception as exc:
        raise _failure(exc, f"cannot import `{spec.target}`:", spec, config) from None
    if not callable(factory):
        raise BuildFailure(
            f"tool.ckptlint.models[{spec.index}].target `{spec.target}` is not callable "
            f"(it is {type(factory).__name__!s}); name a class or a function returning an "
            "nn.Module", entry_location(config, spec, "target"))
    return factory


def _checked(module: Any, spec: ModelSpec, config: Config) -> Any:
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise BuildFailure(
            f"tool.ckptlint.models[{spec.index}].target `{spec.target}` returned "
            f"{type(module).__name__}, not a torch.nn.Module",
            entry_location(config, spec, "target"))
    return module


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_")
_RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_",
                   "log_normal_", "cauchy_")


_OWN_PACKAGE = str(PACKAGE_DIR)
# three fillings of the stand-ins: an output whose shape follows the values (a count of
# nonzero, of distinct, the largest value) differs between them
_STAND_IN_FILLS = ("zeros", "ones", "arange")


def cpu_fallback(root: str) -> Any:
    """A dispatch mode that runs an operation without a meta kernel on CPU stand-ins.

    Assumption: such an operation's output shape, dtype and layout follow from its inputs'
    shapes, dtypes and strides, not from their values. Then running it for real on CPU tensors
    of the same shape (filled with zeros) and moving the result to meta gives exactly the
    meta result torch would have given, had it a meta kernel: shapes and dtypes are right, and
    values mean nothing, as everywhere on meta. Guards, each of which leaves the operation's
    NotImplementedError standing (and the whole model is then built on the CPU): an operation
    torch tags as value-dependent (`nonzero`, `unique`, `masked_select`), one that writes to or
    aliases its inputs, one with a meta input that is not a plain strided tensor or an output
    that is not a tensor (a Python number is a value), and one whose outputs differ between three
    fillings of its inputs (zeros, ones, 0, 1, 2, …): an untagged operation whose shape follows
    the values. Limit: an untagged operation whose shape follows the values in a way none of
    the three fillings shows (a threshold on their sum) would be handed a wrong shape.
    Memory: only that operation's inputs and outputs exist on the CPU, for its duration.
    tests/test_meta_fallback.py tries to break this.
    """
    torch = import_torch()
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

    value_dependent = {torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output}

    def stand_in(t: Any, fill: str) -> Any:
        out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu")
        if fill != "arange":
            return out.fill_(0 if fill == "zeros" else 1)
        values = torch.arange(out.numel()).reshape(out.shape)  # bool: alternating False/True
        return out.copy_(values % 2 if t.dtype == torch.bool else values)

    def layout_of(out: Any) -> tuple | None:
        leaves = tree_flatten(out)[0]
        if not all(isinstance(t, torch.Tensor) for t in leaves):
            return None
        return tuple((t.dtype, tuple(t.shape), t.layout,
                      tuple(t.stride()) if t.layout == torch.strided else ()) for t in leaves)

    def replayed(func: Any, args: tuple, kwargs: dict) -> Any:
        schema = func._schema
        if set(func.tags) & value_dependent or schema.is_mutable or any(
                r.alias_info is not None for r in schema.returns):
            return None
        flat, tree = tree_flatten((args, kwargs))
        metas = [a for a in flat if isinstance(a, torch.Tensor) and a.is_meta]
        if not metas or any(t.layout != torch.strided for t in metas):
            return None
        try:
            outs = []
            for fill in _STAND_IN_FILLS:
                cpu_args, cpu_kwargs = tree_unflatten(
                    [stand_in(a, fill) if any(a is t for t in metas) else a for a in flat], tree)
                outs.append(func(*cpu_args, **cpu_kwargs))
            layouts = {layout_of(out) for out in outs}
            if len(layouts) != 1 or None in layouts:
                return None
            return tree_map(lambda t: t.to("meta"), outs[0])
        except Exception:  # the stand-ins cannot stand in (a dtype fill_ refuses, …): no reply
            return None

    class CpuFallback(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ran: dict[str, list[str]] = {}  # operator -> where the user's code called it

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            try:
                return func(*args, **(kwargs or {}))
            except NotImplementedError:
                result = replayed(func, args, kwargs or {})
                if result is None:
                    raise
                sites = self.ran.setdefault(func._schema.name, [])
                site = _user_site(root)
                if site not in sites:
                    sites.append(site)
                return result

        def note(self, model: str) -> str:
            ran = [f"`{op}` (called at {', '.join(sites[:3])})" for op, sites in self.ran.items()]
            return (f"{model}: {' and '.join(ran)} has no meta kernel, so it ran on CPU tensors "
                    "of the same shape and its result went back to meta; everything else was "
                    "built on meta (shapes and dtypes are exact, values mean nothing, as on meta)")

    return CpuFallback()


def _user_site(root: str) -> str:
    """`file:line` of the innermost frame of the project's own code (not ckptlint's)."""
    frame = sys._getframe(1)
    with untracked():  # ckptlint's own look at the stack is no input of the build
        while frame is not None:
            name = frame.f_code.co_filename
            if not name.startswith(_OWN_PACKAGE) and is_project_file(name, root):
                return f"{relative(name, root)}:{frame.f_lineno}"
            frame = frame.f_back
    return "code outside the project"


def _skip_meta_init() -> Any:
    """A torch-function mode in which random initialisation of a meta tensor returns it as is.

    Initialising a tensor that has no data changes nothing, but its first call drags in torch's
    Python kernels and their imports (about a second here). Tensors with data still initialise.
    """
    torch = import_torch()
    from torch.overrides import TorchFunctionMode

    skipped = {getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS if hasattr(torch.nn.init, n)}
    skipped |= {getattr(torch.Tensor, n) for n in _RANDOM_METHODS}

    class SkipMetaInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func in skipped and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipMetaInit()


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
def _no_dynamo_import() -> Iterator[None]:
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
def _no_sympy_import() -> Iterator[None]:
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


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # user code that prints while building must not corrupt machine-readable stdout
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _failure(exc: BaseException, doing: str, spec: ModelSpec, config: Config) -> BuildFailure:
    detail = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    location = _project_frame(exc, config) or entry_location(config, spec, "kwargs" if isinstance(exc, TypeError) else "target")
    return BuildFailure(f"{doing} {detail}", location)


def _project_frame(exc: BaseException, config: Config) -> Location | None:
    if isinstance(exc, SyntaxError) and exc.filename and is_project_file(exc.filename, config.root):
        return Location(relative(exc.filename, config.root), exc.lineno or 1, exc.offset or 1)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if is_project_file(frame.filename, config.root):
            return Location(relative(frame.filename, config.root), frame.lineno or 1)
    return None


def signature_of(module: Any, name: str = "", target: str = "") -> Signature:
    """The state-dict signature of a live module: keys, specs, `_version`s and tied keys."""
    torch = import_torch()
    state = module.state_dict(keep_vars=True)
    tensors: dict[str, TensorSpec] = {}
    owners: dict[int, list[str]] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            role = "parameter" if isinstance(value, torch.nn.Parameter) else "buffer"
            tensors[key] = TensorSpec(str(value.dtype).removeprefix("torch."),
                                      tuple(value.shape), role)
            owners.setdefault(id(value), []).append(key)
        else:
            tensors[key] = TensorSpec("object", ())
    metadata = getattr(state, "_metadata", None) or {}
    versions = {prefix: meta["version"] for prefix, meta in metadata.items()
                if isinstance(meta, dict) and meta.get("version") not in (None, 1)}
    return Signature(tensors=tensors, versions=versions, aliases=_aliases(owners.values()),
                     has_metadata=bool(metadata), model=name, target=target,
                     torch_version=torch.__version__.split("+")[0], source="code")


def _aliases(groups: Any) -> dict[str, str]:
    """Each tied key -> the naturally first key of its group (independent of statement order)."""
    aliases: dict[str, str] = {}
    for group in groups:
        first, *rest = natural_sorted(group)
        aliases.update(dict.fromkeys(rest, first))
    return aliases


def meta_state_dict(sig: Signature) -> Any:
    """Meta tensors shaped like a signature, with `_metadata`, ready for `load_state_dict`."""
    torch = import_torch()
    state: OrderedDict = OrderedDict()
    for key in natural_sorted(sig.tensors):
        spec = sig.tensors[key]
        dtype = getattr(torch, spec.dtype, None)
        if isinstance(dtype, torch.dtype):
            state[key] = torch.empty(spec.shape, dtype=dtype, device="meta")
    for key, first in sig.aliases.items():
        if key in state and first in state:
            state[key] = state[first]
    if sig.has_metadata:
        prefixes = {p for key in sig.tensors for p in ancestors(key)}
        state._metadata = OrderedDict(  # type: ignore[attr-defined]
            (p, {"version": sig.versions.get(p, 1)}) for p in natural_sorted(prefixes))
    return state


def dry_run_load(module: Any, sig: Signature, current: Signature | None = None) -> LoadReport:
    """Run torch's own `load_state_dict` with meta tensors, so the model's load hooks apply.

    torch is the verdict, with one blind spot watched for: keys under a submodule slot that
    holds None (`nn.ModuleList([None])`, `add_module(name, None)`, `self.attn = None`) are
    dropped without an error, because the unexpected-key check asks only whether the first
    name is in `_modules`, and `load()` then skips None children. Each module's
    `_load_from_state_dict` is watched to see which keys it hands on to such a slot, and which
    keys its own pre-hooks removed or added (a rename or a drop on purpose, the only silence).
    """
    if current is not None and _verdict_is_known(module, sig, current):
        return LoadReport()
    seen: dict[str, list[str]] = {}

    def capture(_module: Any, incompatible: Any) -> None:
        seen["missing"] = list(incompatible.missing_keys)
        seen["unexpected"] = list(incompatible.unexpected_keys)

    watch = _LoadWatch()
    handle = module.register_load_state_dict_post_hook(capture)
    errors: list[str] = []
    hook_errors: list[str] = []
    try:
        with watch.watching(module):
            module.load_state_dict(meta_state_dict(sig), strict=False, assign=True)
    except RuntimeError as exc:
        if str(exc).startswith(_TORCH_LOAD_ERROR):
            errors = _torch_errors(str(exc))
        else:  # raised inside a load hook, not by torch's own checks
            hook_errors = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
    except Exception as exc:  # a load hook that needs real values raises on meta
        hook_errors = [f"{type(exc).__name__}: {exc}".splitlines()[0]]
    finally:
        handle.remove()
    mismatched = [e[len(_SIZE_MISMATCH):].partition(":")[0] for e in errors
                  if e.startswith(_SIZE_MISMATCH)]
    return LoadReport(
        missing=tuple(seen.get("missing", ())),
        unexpected=tuple(seen.get("unexpected", ())),
        mismatched=tuple(mismatched),
        errors=tuple(e for e in errors if not e.startswith(_SIZE_MISMATCH)),
        hook_errors=tuple(hook_errors),
        dropped=tuple(natural_sorted(watch.dropped)),
        none_slots=tuple(natural_sorted(set(watch.dropped.values()))),
        consumed=tuple(natural_sorted(watch.removed)),
        added=tuple(natural_sorted(watch.added)),
    )


def _verdict_is_known(module: Any, sig: Signature, current: Signature) -> bool:
    """Whether torch's dry run could only say "loads", so it need not run.

    torch's `load()` filters the whole state dict once per child at every level, which is
    quadratic in practice (50,000 keys: over a minute). Its verdict is decided by the keys and
    shapes alone when no module can intervene: the same keys with the same shapes and real
    dtypes on both sides, and no module with a load hook, an overridden `_load_from_state_dict`
    (BatchNorm's version upgrade) or extra state. Then missing, unexpected and size mismatch
    are all empty, which is exactly what the full dry run would report (tests/test_build.py
    compares the two on the hook cases). Anything else runs torch's loader.
    """
    torch = import_torch()
    ours, theirs = current.tensors, sig.tensors
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        return False
    if not all(isinstance(getattr(torch, theirs[k].dtype, None), torch.dtype) for k in theirs):
        return False
    base = torch.nn.Module
    return not any(
        type(sub)._load_from_state_dict is not base._load_from_state_dict
        or "_load_from_state_dict" in vars(sub)
        or getattr(type(sub), "set_extra_state", base.set_extra_state) is not base.set_extra_state
        or sub._load_state_dict_pre_hooks or sub._load_state_dict_post_hooks
        for sub in module.modules())


class _LoadWatch:
    """Wraps every module's `_load_from_state_dict` for one dry run (restored afterwards)."""

    def __init__(self) -> None:
        self.dropped: dict[str, str] = {}  # key -> the None slot it fell under
        self.removed: set[str] = set()     # keys a module's own hooks took out of the dict
        self.added: set[str] = set()       # keys they put in (the new name of a rename)

    @contextlib.contextmanager
    def watching(self, model: Any) -> Iterator[None]:
        wrapped = []
        for sub in model.modules():
            had_own = "_load_from_state_dict" in vars(sub)
            sub._load_from_state_dict = self._wrap(sub, sub._load_from_state_dict)
            wrapped.append((sub, had_own))
        try:
            yield
        finally:
            for sub, had_own in wrapped:
                if had_own:
                    sub._load_from_state_dict = sub._load_from_state_dict.__wrapped__
                else:
                    del sub._load_from_state_dict

    def _wrap(self, sub: Any, original: Any) -> Any:
        def watched(state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> Any:
            before = {k for k in state_dict if k.startswith(prefix)}
            result = original(state_dict, prefix, *args, **kwargs)
            after = {k for k in state_dict if k.startswith(prefix)}
            self.removed |= before - after
            self.added |= after - before
            for key in after:  # what torch's load() hands on to the children next
                head, dot, _ = key[len(prefix):].partition(".")
                if dot and head in sub._modules and sub._modules[head] is None:
                    self.dropped[key] = prefix + head
            return result

        watched.__wrapped__ = original  # type: ignore[attr-defined]
        return watched


def _torch_errors(text: str) -> list[str]:
    head, sep, body = text.partition(":\n\t")
    if not sep:
        return [text.splitlines()[0] if text else "RuntimeError"]
    return [line.strip() for line in body.split("\n\t") if line.strip()]


def forget_project_modules(config: Config) -> None:
    """Drop imports of the project's own modules so the next build imports them afresh.

    Done before every model: a run sees the code as it is now (also when `main()` runs
    repeatedly in one process), and the modules a model needs appear in `sys.modules` during
    its own build, which is what `tracking` keys its cache entry on.
    """
    root = Path(config.root)
    names = set()
    for directory in [root / p for p in config.pythonpath] + [root]:
        if directory.is_dir():
            names |= {p.stem if p.suffix == ".py" else p.name for p in directory.iterdir()
                      if p.suffix == ".py" or (p.is_dir() and p.name.isidentifier())}
    names.discard(__name__.partition(".")[0])  # never ckptlint itself, e.g. in its own repo
    for name in [n for n in sys.modules if n.partition(".")[0] in names]:
        del sys.modules[name]
    importlib.invalidate_caches()  # finders list folders again, so the listings are recorded


def build_all(specs: Sequence[ModelSpec], config: Config,
              references: Sequence[Signature | None]) -> list[BuildResult]:
    """Build every model in this process, in order (see `isolate` for builds in a child)."""
    import_torch()  # one clear sentence when torch is missing, before anything touches it
    return [build(spec, config, ref) for spec, ref in zip(specs, references)]


def build(spec: ModelSpec, config: Config, reference: Signature | None = None) -> BuildResult:
    """Build one model and, given its committed signature, torch's verdict on loading it.

    Never raises for a problem of the model itself, `sys.exit` included: that becomes
    `BuildResult.error`. Everything user code runs (import, `__init__`, state-dict and load
    hooks) runs with stdout sent to stderr and `sys.argv` holding only the target's module.
    """
    import_torch()  # before tracking: torch is keyed by its version, not by what it reads
    forget_project_modules(config)
    with project_on_path(config), _as_program(spec), _stdout_to_stderr():
        with fresh_bytecode(), tracking(config.root):
            result = _built(spec, config, reference)
        inputs = document(config.root) if result.signature is not None else None
    return replace(result, inputs=inputs, files=project_files(inputs) or result.files)


def _built(spec: ModelSpec, config: Config, reference: Signature | None) -> BuildResult:
    try:
        with recording(config.root) as recorder:
            module, notes, fallbacks = build_module(spec, config)
        signature = signature_of(module, spec.name, spec.target)
        load = dry_run_load(module, _unwrapped(reference, signature), signature) \
            if reference is not None else None
        return BuildResult(spec.name, signature=signature, load=load, notes=notes,
                           fallbacks=fallbacks,
                           sites=recorder.sites(module),
                           modules=describe_modules(module, config.root),
                           nonpersistent=nonpersistent_buffers(module))
    except BuildFailure as failure:
        return BuildResult(spec.name, error=str(failure), error_location=failure.location)
    except SystemExit as exc:  # a model must not end the run; the other models go on
        location = _project_frame(exc, config) or entry_location(config, spec, "target")
        return BuildResult(spec.name, error=f"building `{spec.target}` called "
                           f"sys.exit({exc.code!r}), which would end the process",
                           error_location=location)
    except Exception as exc:  # state_dict(), a state-dict hook, named_modules… of user code
        failure = _failure(exc, f"reading the state dict of `{spec.target}` raised", spec,
                           config)
        return BuildResult(spec.name, error=str(failure), error_location=failure.location)


@contextlib.contextmanager
def _as_program(spec: ModelSpec) -> Iterator[None]:
    """`sys.argv` is the target's, not ckptlint's: a model module that parses arguments at
    import sees none, instead of ckptlint's own (`check`, `--format`, …)."""
    saved = sys.argv
    sys.argv = [spec.target.partition(":")[0]]
    try:
        yield
    finally:
        sys.argv = saved


def _unwrapped(reference: Signature, signature: Signature) -> Signature:
    """The reference re-keyed past a wrapper prefix, as `diff.compare` will read it."""
    from ckptlint.compare import prefix

    wrapper = prefix.detect(reference, signature)
    return wrapper.apply(reference) if wrapper else reference


def nonpersistent_buffers(module: Any) -> tuple[str, ...]:
    """State-dict names of the buffers registered with persistent=False."""
    return tuple(natural_sorted(f"{path}.{name}" if path else name
                                for path, sub in module.named_modules()
                                for name in getattr(sub, "_non_persistent_buffers_set", ())))
