"""The restricted unpickler: reads torch's pickles as inert records, never running their code.

Every global a pickle names goes through `find_class`, which imports nothing: torch's tensor
rebuilders map to functions here that return `TensorRecord`s (dtype, shape, storage key, view),
dtypes and storage classes to small values, a few containers to safe constructors, known-dangerous
names (`os.system`, `builtins.eval`, ...) are refused, and every other class becomes an `Opaque`
placeholder that only remembers its arguments and state. A pickle that *calls* a function
ckptlint does not know is refused too. Opcodes that touch the interpreter (REDUCE, NEWOBJ, BUILD,
EXT*) are re-implemented so that nothing but these inert objects is ever called, and work is
bounded by a deadline (a hash-flooding pickle must not hang the linter).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any, Callable, ClassVar

from ckptlint.readers.dtypes import ITEMSIZE, STORAGE_DTYPES, torch_dtype

PICKLE_SECONDS = 30.0
_CHECK_EVERY = 4096  # opcodes (or container items) between two looks at the clock


class PickleRefused(Exception):
    """The pickle names or calls `name`, which ckptlint will not run."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class PickleInvalid(Exception):
    """The pickle is corrupt, truncated, or not a shape ckptlint can read inertly."""


@dataclass(frozen=True, slots=True)
class DType:
    """A `torch.<dtype>` global, by its canonical name."""

    name: str


@dataclass(frozen=True, slots=True)
class StorageType:
    """A `torch.<Name>Storage` class global; dtype None for `UntypedStorage` (bytes)."""

    dtype: str | None


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage a tensor points into: torch.save's persistent id, never its bytes."""

    key: str
    dtype: str
    numel: int
    untyped: bool = False

    @property
    def nbytes(self) -> int:
        return self.numel if self.untyped else self.numel * ITEMSIZE[self.dtype]


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """What a tensor rebuilder would have built, as data: dtype, shape, and where it lives."""

    dtype: str
    shape: tuple[int, ...]
    storage: StorageRef | None = None
    offset: int = 0
    stride: tuple[int, ...] = ()

    def fits(self) -> bool:
        """Whether the view stays inside its storage (a lying pickle may say otherwise)."""
        if self.storage is None or any(d == 0 for d in self.shape):
            return True
        itemsize = ITEMSIZE[self.dtype]
        last = self.offset + sum((d - 1) * s for d, s in zip(self.shape, self.stride))
        return self.offset >= 0 and (last + 1) * itemsize <= self.storage.nbytes

    @property
    def view(self) -> tuple:
        """Equal for two tensors that alias one another (same storage, offset, shape, stride)."""
        key = self.storage.key if self.storage else None
        return (key, self.offset, self.shape, self.stride, self.dtype)


class Opaque:
    """An object of a class ckptlint does not load: it keeps its arguments and state, inertly."""

    __slots__ = ("args", "kwargs", "state", "items", "elements")
    global_name: ClassVar[str] = "object"

    @classmethod
    def make(cls, args: tuple = (), kwargs: dict | None = None) -> Opaque:
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs or {}, None
        obj.items, obj.elements = {}, []
        return obj

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<{self.global_name}>"


class PickledDict(OrderedDict):
    """An `OrderedDict` from a pickle; `metadata` is torch's `_metadata` attribute when saved."""

    metadata: Any = None


@dataclass(frozen=True, slots=True)
class Known:
    """An allowlisted callable global, mapped to an inert function of this module."""

    name: str
    fn: Callable[..., Any]
    tensor: bool = False  # a tensor rebuilder, which `_rebuild_from_type_v2` may wrap


def _int(value: Any) -> int:
    if type(value) is not int:
        raise PickleInvalid(f"expected an integer, found {type(value).__name__}")
    return value


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise PickleInvalid(f"expected a tuple of integers, found {type(value).__name__}")
    return tuple(_int(v) for v in value)


def _shape(value: Any) -> tuple[int, ...]:
    shape = _ints(value)
    if any(d < 0 for d in shape):
        raise PickleInvalid(f"a tensor has a negative size {shape}")
    return shape


def _dtype(value: Any) -> str:
    if not isinstance(value, DType):
        raise PickleInvalid("a tensor's dtype is not a torch dtype")
    return value.name


def _storage(value: Any) -> StorageRef:
    if not isinstance(value, StorageRef):
        raise PickleInvalid("a tensor's storage is not a torch.save storage record")
    return value


def _tensor(value: Any) -> TensorRecord:
    if not isinstance(value, TensorRecord):
        raise PickleInvalid("a parameter wraps something that is not a tensor")
    return value


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> TensorRecord:
    ref = _storage(storage)
    return TensorRecord(ref.dtype, _shape(size), ref, _int(offset), _ints(stride))


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, _grad: Any,
                       _hooks: Any, dtype: Any, *_rest: Any) -> TensorRecord:
    ref = _storage(storage)
    return TensorRecord(_dtype(dtype), _shape(size), ref, _int(offset), _ints(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> TensorRecord:
    return _tensor(data)


def _rebuild_meta(dtype: Any, size: Any, stride: Any, *_rest: Any) -> TensorRecord:
    return TensorRecord(_dtype(dtype), _shape(size), None, 0, _ints(stride))


def _rebuild_wrapper_subclass(_cls: Any, dtype: Any, size: Any, stride: Any, offset: Any,
                              *_rest: Any) -> TensorRecord:
    return TensorRecord(_dtype(dtype), _shape(size), None, _int(offset), _ints(stride))


def _rebuild_from_type_v2(func: Any, _new_type: Any, args: Any, _state: Any) -> TensorRecord:
    # torch wraps tensor subclasses (Parameter among them) around one of its rebuilders
    if not (isinstance(func, Known) and func.tensor and isinstance(args, tuple)):
        raise PickleInvalid("a tensor subclass is rebuilt by something that is not a tensor")
    return _tensor(func.fn(*args))


def _ordered_dict(items: Any = ()) -> PickledDict:
    if not isinstance(items, (list, tuple, dict)):
        raise PickleInvalid("an OrderedDict is built from something that is not a list")
    return PickledDict(items)


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise PickleInvalid("a set is built from something that is not a list")
    return set(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


def _bytes(data: Any = b"", encoding: Any = "latin1") -> bytes:
    # protocol 2 pickles bytes as `_codecs.encode(text, "latin1")`; an int (a size) is refused
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise PickleInvalid("bytes are built from something that is not text or bytes")


def _bytearray(data: Any = b"", encoding: Any = "latin1") -> bytearray:
    return bytearray(_bytes(data, encoding))


def _complex(real: Any = 0, imag: Any = 0) -> complex:
    if not all(type(v) in (int, float) for v in (real, imag)):
        raise PickleInvalid("a complex number is built from something that is not a number")
    return complex(real, imag)


def _slice(*args: Any) -> slice:
    if len(args) > 3 or not all(v is None or type(v) is int for v in args):
        raise PickleInvalid("a slice is built from something that is not integers")
    return slice(*args)


def _size(dims: Any = ()) -> tuple[int, ...]:
    return _ints(dims)


def _device(*args: Any) -> str:
    return ":".join(str(a) for a in args if type(a) in (str, int))


def _layout(name: Any) -> str:
    return str(name) if isinstance(name, str) else "layout"


def _reconstructor(cls: Any, _base: Any = None, _state: Any = None) -> Opaque:
    if not (isinstance(cls, type) and issubclass(cls, Opaque)):
        raise PickleInvalid("copyreg._reconstructor is asked to build something that is no class")
    return cls.make()


def _newobj(cls: Any, *args: Any) -> Opaque:
    if not (isinstance(cls, type) and issubclass(cls, Opaque)):
        raise PickleInvalid("copyreg.__newobj__ is asked to build something that is no class")
    return cls.make(args)


_TENSOR_REBUILDERS = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_qtensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
    "torch._utils._rebuild_wrapper_subclass": _rebuild_wrapper_subclass,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
}
_SAFE_CALLS = {
    "collections.OrderedDict": _ordered_dict,
    "builtins.set": _set,
    "builtins.frozenset": _frozenset,
    "builtins.bytes": _bytes,
    "builtins.bytearray": _bytearray,
    "builtins.complex": _complex,
    "builtins.slice": _slice,
    "_codecs.encode": _bytes,
    "torch.Size": _size,
    "torch.device": _device,
    "torch.serialization._get_layout": _layout,
    "copyreg._reconstructor": _reconstructor,
    "copyreg.__newobj__": _newobj,
}
KNOWN: dict[str, Known] = {
    **{name: Known(name, fn, tensor=True) for name, fn in _TENSOR_REBUILDERS.items()},
    **{name: Known(name, fn) for name, fn in _SAFE_CALLS.items()},
}

# Plain-data constructors whose names are not capitalised: calling their placeholder is fine.
DATA_CONSTRUCTORS = frozenset({
    "collections.defaultdict", "collections.deque", "collections.Counter",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "functools.partial",
    "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct", "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor", "numpy.random._pickle.__generator_ctor",
    "builtins.object", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.int",
    "builtins.float", "builtins.str", "builtins.bool", "builtins.range",
})
# Modules no checkpoint has a reason to name: naming them at all is refused.
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "importlib", "imp",
    "runpy", "shutil", "socket", "pty", "ctypes", "pickle", "_pickle", "cPickle", "marshal",
    "types", "code", "codeop", "commands", "signal", "multiprocessing", "threading", "_thread",
    "asyncio", "webbrowser", "http", "urllib", "urllib2", "requests", "tempfile", "io", "_io",
    "operator", "_operator", "inspect", "pdb", "bdb", "timeit", "trace", "profile", "cProfile",
    "site", "sysconfig", "zipimport", "pkgutil", "glob", "ftplib", "smtplib", "telnetlib",
    "_posixsubprocess", "_winapi", "msvcrt", "winreg", "platform",
})
DENIED_NAMES = frozenset({
    "eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr",
    "globals", "locals", "vars", "open", "input", "breakpoint", "system", "popen", "Popen",
    "spawn", "fork", "execv", "execve", "execl", "execvp", "apply", "__builtins__",
})
_SAFE_BUILTINS = frozenset(n.partition(".")[2] for n in (*_SAFE_CALLS, *DATA_CONSTRUCTORS)
                           if n.startswith("builtins."))


def denied(module: str, name: str) -> bool:
    root = module.partition(".")[0]
    if root in ("builtins", "__builtin__"):
        return name not in _SAFE_BUILTINS
    return root in DENIED_MODULES or any(part in DENIED_NAMES for part in name.split("."))


def class_like(global_name: str) -> bool:
    """Whether a global is a class by naming convention (or a known data constructor)."""
    last = global_name.rpartition(".")[2].lstrip("_")
    return global_name in DATA_CONSTRUCTORS or last[:1].isupper()


def _torch_value(module: str, name: str) -> DType | StorageType | None:
    if module == "torch" and torch_dtype(name):
        return DType(torch_dtype(name) or name)
    if module.partition(".")[0] == "torch":
        if name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if name == "UntypedStorage":
            return StorageType(None)
    return None


class RestrictedUnpickler(pickle._Unpickler):
    """pickle's reference unpickler with every call, import and attribute write replaced.

    The pure-Python unpickler is the base on purpose: its memo is a dict, where the C one
    preallocates an array for the largest memo index a (hostile) pickle names.
    """

    def __init__(self, file: IO[bytes], *, storages: bool, seconds: float = PICKLE_SECONDS):
        super().__init__(file, encoding="latin1")
        self._storages = storages
        self._deadline = time.monotonic() + seconds
        self._ops = 0
        self._opaque: dict[str, type[Opaque]] = {}

    def tick(self) -> None:
        self._ops += 1
        if self._ops % _CHECK_EVERY == 0 and time.monotonic() > self._deadline:
            raise PickleInvalid("takes too long to read (a hostile or enormous pickle)")

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full in KNOWN:
            return KNOWN[full]
        value = _torch_value(module, name)
        if value is not None:
            return value
        if denied(module, name):
            raise PickleRefused(full)
        if full not in self._opaque:
            self._opaque[full] = type(full, (Opaque,), {"__slots__": (), "global_name": full})
        return self._opaque[full]

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise PickleInvalid("has a persistent id that is not a torch.save record")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "storage" and self._storages and len(pid) in (5, 6):
            return self._storage_ref(pid[1:5])
        if kind == "module" and self._storages and len(pid) == 4:
            return pid[1]  # a legacy save of a whole nn.Module names its class this way
        raise PickleInvalid(f"has a persistent id of unknown kind {kind!r}")

    @staticmethod
    def _storage_ref(fields: tuple) -> StorageRef:
        storage_type, key, _location, numel = fields
        if not isinstance(storage_type, StorageType):
            raise PickleInvalid("names a storage whose type is not a torch storage class")
        if not isinstance(key, (str, int)) or type(numel) is not int or numel < 0:
            raise PickleInvalid("has a malformed storage record")
        untyped = storage_type.dtype is None
        return StorageRef(str(key), storage_type.dtype or "uint8", numel, untyped)

    def call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        if not isinstance(args, tuple) or not isinstance(kwargs or {}, dict):
            raise PickleInvalid("calls something with arguments that are not a tuple")
        if isinstance(func, Known):
            return func.fn(*args, **(kwargs or {}))
        if isinstance(func, type) and issubclass(func, Opaque):
            if not class_like(func.global_name):
                raise PickleRefused(func.global_name)
            return func.make(args, kwargs)
        raise PickleInvalid(f"calls a {type(func).__name__}, which is not callable")

    def new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if isinstance(cls, type) and issubclass(cls, Opaque) and isinstance(args, tuple):
            return cls.make(args, kwargs if isinstance(kwargs, dict) else None)
        if isinstance(cls, Known) and cls.fn is _ordered_dict:
            return PickledDict()
        raise PickleInvalid("creates an instance of something that is not a class")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.new(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self.new(self.stack[-1], args, kwargs)

    def _instantiate(self, klass: Any, args: list) -> None:
        self.append(self.call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Opaque):
            inst.state = state
        elif isinstance(inst, PickledDict):
            attrs = state[0] if isinstance(state, tuple) and len(state) == 2 else state
            if isinstance(attrs, dict):
                inst.metadata = attrs.get("_metadata")
        # any other object keeps no state: nothing of the pickle's is ever set on it

    def load_ext(self) -> None:
        raise PickleInvalid("uses the copyreg extension registry, which no checkpoint needs")

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    def _set_items(self, target: Any, items: list) -> None:
        if not isinstance(target, (dict, Opaque)):
            raise PickleInvalid(f"sets items on a {type(target).__name__}")
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]
            if i % _CHECK_EVERY == 0:
                self.tick()

    def load_append(self) -> None:
        value = self.stack.pop()
        self._append_items(self.stack[-1], [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._append_items(self.stack[-1], items)

    def _append_items(self, target: Any, items: list) -> None:
        if not isinstance(target, (list, Opaque)):
            raise PickleInvalid(f"appends to a {type(target).__name__}")
        target.extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise PickleInvalid(f"adds set items to a {type(target).__name__}")
        target.update(items)


def _budgeted(step: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: RestrictedUnpickler) -> None:
        self.tick()
        step(self)
    return run


_OVERRIDES = {
    pickle.REDUCE: RestrictedUnpickler.load_reduce,
    pickle.NEWOBJ: RestrictedUnpickler.load_newobj,
    pickle.NEWOBJ_EX: RestrictedUnpickler.load_newobj_ex,
    pickle.BUILD: RestrictedUnpickler.load_build,
    pickle.EXT1: RestrictedUnpickler.load_ext,
    pickle.EXT2: RestrictedUnpickler.load_ext,
    pickle.EXT4: RestrictedUnpickler.load_ext,
    pickle.SETITEM: RestrictedUnpickler.load_setitem,
    pickle.SETITEMS: RestrictedUnpickler.load_setitems,
    pickle.APPEND: RestrictedUnpickler.load_append,
    pickle.APPENDS: RestrictedUnpickler.load_appends,
    pickle.ADDITEMS: RestrictedUnpickler.load_additems,
}
RestrictedUnpickler.dispatch = {
    code: _budgeted(_OVERRIDES.get(bytes([code]), step))
    for code, step in pickle._Unpickler.dispatch.items()
}


def load(file: IO[bytes], *, storages: bool = True, seconds: float = PICKLE_SECONDS) -> Any:
    """Unpickle one pickle from `file` inertly; raise `PickleRefused` or `PickleInvalid`."""
    try:
        return RestrictedUnpickler(file, storages=storages, seconds=seconds).load()
    except (PickleRefused, PickleInvalid):
        raise
    except RecursionError:
        raise PickleInvalid("nests too deeply") from None
    except MemoryError:
        raise PickleInvalid("needs more memory than it can have") from None
    except Exception as exc:  # any failure of hostile bytes is "not a valid pickle"
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200] if str(exc) else (
            type(exc).__name__)
        raise PickleInvalid(f"is not a valid pickle ({detail})") from None


def loads(data: bytes, *, storages: bool = True, seconds: float = PICKLE_SECONDS) -> Any:
    return load(io.BytesIO(data), storages=storages, seconds=seconds)
