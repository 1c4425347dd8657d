"""Which globals a checkpoint's pickle may name: the callables rebuilt as inert records, the data
constructors, and the modules and names that are always refused."""

from __future__ import annotations

from typing import Any

from ckptlint.core.dtypes import MAX_DIMS, STORAGE_DTYPES, torch_dtype
from ckptlint.readers.pickled import (DType, Known, Opaque, PickleInvalid, StorageRef, StorageType,
                                      TensorRecord)


def _int(value: Any) -> int:
    if type(value) is not int:
        raise PickleInvalid(f"expected an integer, found {type(value).__name__}")
    return value


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise PickleInvalid(f"expected a tuple of integers, found {type(value).__name__}")
    if len(value) > MAX_DIMS:
        raise PickleInvalid(f"a tensor has {len(value)} dimensions (at most {MAX_DIMS})")
    return tuple(_int(v) for v in value)


def _view(ref: StorageRef, dtype: str, size: Any, offset: Any, stride: Any) -> TensorRecord:
    shape, strides = _shape(size), _ints(stride)
    if len(strides) != len(shape):
        raise PickleInvalid(f"a tensor's stride {strides} does not match its shape {shape}")
    if any(s < 0 for s in strides):  # torch.load refuses them ("Storage size calculation")
        raise PickleInvalid(f"a tensor has a negative stride {strides}, which torch refuses")
    return TensorRecord(dtype, shape, ref, _int(offset), strides)


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
    return _view(ref, ref.dtype, size, offset, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, _grad: Any,
                       _hooks: Any, dtype: Any, *_rest: Any) -> TensorRecord:
    return _view(_storage(storage), _dtype(dtype), size, offset, stride)


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


def _unused(*_args: Any) -> Any:  # a container Known: RestrictedUnpickler.build makes it
    raise AssertionError("containers are built by the unpickler")


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


TENSOR_REBUILDERS = {
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


CONTAINERS = {
    "collections.OrderedDict": "dict",
    "builtins.set": "set",
    "builtins.frozenset": "frozenset",
}


SAFE_CALLS = {
    **dict.fromkeys(CONTAINERS, _unused),
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


# Modules no checkpoint has a reason to name: naming them at all is refused. Besides the obvious
# ones, those whose classes run code, touch files or the network when built (the "class"
# gadgets of published pickle-scanner bypasses: a capitalised name is otherwise inert here,
# but torch.load(weights_only=False) would construct it for real).
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "importlib", "imp",
    "runpy", "shutil", "socket", "pty", "ctypes", "pickle", "_pickle", "cPickle", "marshal",
    "types", "code", "codeop", "commands", "signal", "multiprocessing", "threading", "_thread",
    "asyncio", "webbrowser", "http", "urllib", "urllib2", "requests", "tempfile", "io", "_io",
    "operator", "_operator", "inspect", "pdb", "bdb", "timeit", "trace", "profile", "cProfile",
    "site", "sysconfig", "zipimport", "pkgutil", "glob", "ftplib", "smtplib", "telnetlib",
    "_posixsubprocess", "_winapi", "msvcrt", "winreg", "platform",
    "socketserver", "smtpd", "asyncore", "asynchat", "xmlrpc", "wsgiref", "logging", "pydoc",
    "idlelib", "lib2to3", "distutils", "setuptools", "pip", "ensurepip", "venv", "doctest",
    "unittest", "zipfile", "tarfile", "shelve", "dbm", "sqlite3", "poplib", "imaplib",
    "nntplib", "ssl", "select", "selectors", "mmap", "fcntl", "readline", "tkinter", "turtle",
    "antigravity", "atexit", "gc", "concurrent", "sched", "cmd", "pstats", "_io",
    "_ctypes", "_socket", "_ssl", "_sqlite3", "_lzma", "_bz2", "_signal", "_multiprocessing",
    "_winreg", "cffi", "dill", "cloudpickle", "joblib", "IPython", "jinja2", "mako", "yaml",
})


# Parts of allowed packages that compile, load or run code (module prefixes).
DENIED_PREFIXES = (
    "torch.jit", "torch._dynamo", "torch._inductor", "torch.fx", "torch.hub", "torch.package",
    "torch.utils.cpp_extension", "torch.utils.bottleneck", "torch.utils.collect_env",
    "torch.utils.data", "torch._C", "torch.ops", "torch.classes", "torch.library",
    "torch.testing", "torch.compiler", "torch.export", "torch.onnx", "torch.multiprocessing",
    "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.ctypeslib", "numpy.lib.format",
)


DENIED_NAMES = frozenset({
    "eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr",
    "globals", "locals", "vars", "open", "input", "breakpoint", "system", "popen", "Popen",
    "spawn", "fork", "execv", "execve", "execl", "execvp", "apply", "__builtins__",
})


_SAFE_BUILTINS = frozenset(n.partition(".")[2] for n in (*SAFE_CALLS, *DATA_CONSTRUCTORS)
                           if n.startswith("builtins."))


def denied(module: str, name: str) -> bool:
    root = module.partition(".")[0]
    if root in ("builtins", "__builtin__"):
        return name not in _SAFE_BUILTINS
    dotted = f"{module}.{name}"
    return (root in DENIED_MODULES or any(part in DENIED_NAMES for part in name.split("."))
            or any(dotted == p or dotted.startswith(p + ".") for p in DENIED_PREFIXES))


def class_like(global_name: str) -> bool:
    """Whether a global is a class by naming convention (or a known data constructor)."""
    last = global_name.rpartition(".")[2].lstrip("_")
    return global_name in DATA_CONSTRUCTORS or last[:1].isupper()


def torch_value(module: str, name: str) -> DType | StorageType | None:
    if module == "torch" and torch_dtype(name):
        return DType(torch_dtype(name) or name)
    if module.partition(".")[0] == "torch":
        if name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if name == "UntypedStorage":
            return StorageType(None)
    return None
