"""The restricted unpickler: reads torch's pickles as inert records, never running their code.

Every global a pickle names goes through `find_class`, which imports nothing: torch's tensor
rebuilders map to functions here that return `TensorRecord`s (dtype, shape, storage key, view),
dtypes and storage classes to small values, a few containers to safe constructors, known-dangerous
names (`os.system`, `builtins.eval`, ...) are refused, and every other class becomes an `Opaque`
placeholder that only remembers its arguments and state. A pickle that *calls* a function
ckptlint does not know is refused too. Opcodes that touch the interpreter (REDUCE, NEWOBJ, BUILD,
EXT*) are re-implemented so that nothing but these inert objects is ever called.

Work is bounded on every input: each opcode, hashed key and copied element is charged to a
budget that grows with the bytes read (linear, whatever the pickle shares through its memo),
the clock is looked at inside long single operations, a container whose keys collide is
refused before probing turns quadratic, and tuples may not nest deeper than C's hash can
recurse. Storage records the pickle points to are collected for the reader to check.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import IO, Any, Callable, ClassVar, Literal

from ckptlint.core.dtypes import ITEMSIZE, MAX_DIMS, STORAGE_DTYPES, torch_dtype

PICKLE_SECONDS = 30.0  # a backstop: the work budget below ends a hostile pickle long before
_CHECK_EVERY = 4096  # units of work between two looks at the clock
# Work a pickle may cost: every opcode, hashed key (by its size) and copied element is a unit.
# An honest pickle spends about one unit per byte (torch.save state dicts, optimizer state,
# whole modules, hparams: 0.5 to 1.0 measured); only sharing through the memo (one big object
# referenced a million times) spends more, so more than this is a hostile pickle.
WORK_PER_BYTE = 4
WORK_BASE = 100_000
# Tuples are hashed by C code that recurses without a guard: 2,000,000 nested tuples crash the
# interpreter. No checkpoint nests tuples in tuples more than a few levels.
MAX_NESTING = 1000
MAX_COLLISIONS = 16  # distinct keys of one container with one hash value (real files: 1)
MAX_INT_BYTES = 4096  # an integer in a checkpoint is a count or a seed, not 32 KiB of digits
MAX_MEMO_INDEX = 2**32  # what the binary memo opcodes can name; also keeps memo hashes apart


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
    container: str = ""  # built by the unpickler itself, key by checked key ("dict", "set")


@dataclass(frozen=True, slots=True)
class Unpickled:
    """What one pickle holds, and every storage record it points to (key -> what it declares)."""

    value: Any
    storages: dict[str, StorageRef] = field(default_factory=dict)
    # storage keys a legacy pickle reads through a storage view (pre-1.0 torch wrote them;
    # the signature does not depend on them, a reader of the bytes must apply their offset)
    viewed: frozenset[str] = frozenset()


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
_CONTAINERS = {
    "collections.OrderedDict": "dict",
    "builtins.set": "set",
    "builtins.frozenset": "frozenset",
}
_SAFE_CALLS = {
    **dict.fromkeys(_CONTAINERS, _unused),
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
    **{name: Known(name, fn, container=_CONTAINERS.get(name, "")) for name, fn
       in _SAFE_CALLS.items()},
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
_SAFE_BUILTINS = frozenset(n.partition(".")[2] for n in (*_SAFE_CALLS, *DATA_CONSTRUCTORS)
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


def _torch_value(module: str, name: str) -> DType | StorageType | None:
    if module == "torch" and torch_dtype(name):
        return DType(torch_dtype(name) or name)
    if module.partition(".")[0] == "torch":
        if name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if name == "UntypedStorage":
            return StorageType(None)
    return None


class _Counted:
    """The pickle's file, counting the bytes read: the work budget grows with them."""

    def __init__(self, file: IO[bytes]):
        self._file, self.read_bytes = file, 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.read_bytes += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._file.readline(size)
        self.read_bytes += len(data)
        return data


Ids = Literal["zip", "legacy", "none"]


class RestrictedUnpickler(pickle._Unpickler):
    """pickle's reference unpickler with every call, import and attribute write replaced.

    The pure-Python unpickler is the base on purpose: its memo is a dict, where the C one
    preallocates an array for the largest memo index a (hostile) pickle names. `ids` says which
    persistent ids are torch's: those of the zip format, of the legacy format (which also
    names whole modules), or none at all.
    """

    def __init__(self, file: IO[bytes], *, ids: Ids, seconds: float = PICKLE_SECONDS,
                 size: int | None = None):
        # the budget grows with the bytes read; when the whole pickle is at hand its size is
        # known, and the file is read directly (a counting wrapper costs a call per read)
        self._counted = _Counted(file) if size is None else None
        self._size = size
        super().__init__(self._counted or file, encoding="latin1")
        self._ids = ids
        self._deadline = time.monotonic() + seconds
        self._work, self._next_look = 0, _CHECK_EVERY
        self._opaque: dict[str, type[Opaque]] = {}
        self._tuples: dict[int, tuple[tuple, int, int]] = {}  # id -> (tuple, depth, weight)
        self._hashes: dict[int, tuple[Any, dict[int, int]]] = {}  # id -> (container, counts)
        self.storages: dict[str, StorageRef] = {}
        self.viewed: set[str] = set()

    # -- the budget ---------------------------------------------------------------------------

    def tick(self, cost: int = 1) -> None:
        self._work += cost
        if self._work < self._next_look:
            return
        self._next_look = self._work + _CHECK_EVERY
        read = self._counted.read_bytes if self._counted else self._size or 0
        if self._work > WORK_BASE + WORK_PER_BYTE * read:
            raise PickleInvalid("does far more work than a pickle of its size can need (it "
                                "references one large object over and over: a hostile pickle)")
        if time.monotonic() > self._deadline:
            raise PickleInvalid("takes too long to read (a hostile or enormous pickle)")

    def weight(self, value: Any) -> int:
        """What hashing `value` costs: 1, or a tuple's elements counted through nested tuples."""
        known = self._tuples.get(id(value))
        if known is not None and known[0] is value:
            return known[2]
        if isinstance(value, (tuple, frozenset)):
            return 1 + len(value)  # built elsewhere (a shape) or a frozenset (hashes cached)
        return 1

    # -- containers: built key by key, so the budget and collision count see every one --------

    def make_tuple(self, items: list | tuple) -> tuple:
        depth, weight = 1, 1 + len(items)
        for item in items:
            known = self._tuples.get(id(item))
            if known is not None and known[0] is item:
                depth = max(depth, known[1] + 1)
                weight += known[2]
        if depth > MAX_NESTING:
            raise PickleInvalid(f"nests tuples more than {MAX_NESTING} deep (a hostile pickle: "
                                "hashing it would crash the interpreter)")
        made = tuple(items)
        # saturate: memo sharing can double the weight at every level
        self._tuples[id(made)] = (made, depth, min(weight, 1 << 62))
        self.tick(len(made))
        return made

    def checked(self, container: Any, key: Any) -> None:
        """Charge hashing `key` and refuse the key that makes one hash value too common.

        Only keys whose hash an attacker can choose (numbers and their tuples) are counted;
        str and bytes hashes are randomised per process, placeholders hash by identity.
        """
        cost = self.weight(key)
        self.tick(cost)
        if isinstance(key, (str, bytes, Opaque)) or key is None:
            return
        try:
            value = hash(key)
            new = key not in container
        except TypeError:
            raise PickleInvalid(f"uses an unhashable {type(key).__name__} as a key") from None
        if not new:
            return
        entry = self._hashes.setdefault(id(container), (container, {}))
        counts = entry[1]
        counts[value] = counts.get(value, 0) + 1
        if counts[value] > MAX_COLLISIONS:
            raise PickleInvalid("has many keys with one hash value (hash flooding: building it "
                                "would take quadratic time)")
        self.tick(cost * counts[value])  # each probe compares the keys that share the hash

    def set_items(self, target: Any, items: list | tuple) -> None:
        mapping = target.items if isinstance(target, Opaque) else target
        if not isinstance(mapping, dict):
            raise PickleInvalid(f"sets items on a {type(target).__name__}")
        if len(items) % 2:
            raise PickleInvalid("sets a key without a value")
        for i in range(0, len(items), 2):
            self.checked(mapping, items[i])
            mapping[items[i]] = items[i + 1]

    def add_items(self, target: set, items: Any) -> None:
        for item in items:
            self.checked(target, item)
            target.add(item)

    def build(self, kind: str, args: tuple) -> Any:
        """`OrderedDict(items)`, `set(items)`, `frozenset(items)`, element by element."""
        if len(args) > 1:
            raise PickleInvalid(f"builds a {kind} from {len(args)} arguments")
        items = args[0] if args else ()
        if kind == "dict":
            made = PickledDict()
            pairs = list(items.items()) if isinstance(items, dict) else items
            if not isinstance(pairs, (list, tuple)):
                raise PickleInvalid("an OrderedDict is built from something that is not a list")
            for pair in pairs:
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise PickleInvalid("an OrderedDict is built from items that are not pairs")
                self.set_items(made, pair)
            return made
        if not isinstance(items, (list, tuple, set, frozenset)):
            raise PickleInvalid(f"a {kind} is built from something that is not a list")
        found: set = set()
        self.add_items(found, items)
        return found if kind == "set" else frozenset(found)

    # -- globals and persistent ids ------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise PickleInvalid("names a global that is not text")
        self.tick(len(module) + len(name))
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
        # torch.load's zip reader unpacks exactly (type, key, location, numel); the legacy one
        # that and a view tuple, and it also names whole modules
        sizes = {"zip": (5,), "legacy": (6,)}.get(self._ids, ())
        if kind == "storage" and len(pid) in sizes:
            ref = self._storage_ref(pid[1:5])
            if len(pid) == 6 and pid[5] is not None:
                self.viewed.add(ref.key)
            return ref
        if kind == "module" and self._ids == "legacy" and len(pid) == 4:
            return pid[1]
        raise PickleInvalid(f"has a persistent id of unknown kind {kind!r}")

    def _storage_ref(self, fields: tuple) -> StorageRef:
        storage_type, key, _location, numel = fields
        if not isinstance(storage_type, StorageType):
            raise PickleInvalid("names a storage whose type is not a torch storage class")
        if not isinstance(key, (str, int)) or type(numel) is not int or numel < 0:
            raise PickleInvalid("has a malformed storage record")
        untyped = storage_type.dtype is None
        ref = StorageRef(str(key), storage_type.dtype or "uint8", numel, untyped)
        # torch.load keeps the first storage it loads under a key: another declaration of
        # that key would give ckptlint and torch different dtypes or sizes
        first = self.storages.setdefault(ref.key, ref)
        if first != ref:
            raise PickleInvalid(f"declares storage `{ref.key}` twice, differently ({first.dtype}"
                                f" x {first.numel}, then {ref.dtype} x {ref.numel})")
        return ref

    # -- calls ---------------------------------------------------------------------------------

    def call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        if not isinstance(args, tuple) or not isinstance(kwargs or {}, dict):
            raise PickleInvalid("calls something with arguments that are not a tuple")
        if isinstance(func, Known):
            if func.container:
                return self.build(func.container, args)  # charges each element itself
            if not func.tensor:  # bytes(), complex(), ...: charged for what they copy
                self.tick(sum(len(a) if isinstance(a, (str, bytes, bytearray, list, tuple))
                              else 1 for a in args))
            return func.fn(*args, **(kwargs or {}))
        if isinstance(func, type) and issubclass(func, Opaque):
            if not class_like(func.global_name):
                raise PickleRefused(func.global_name)
            return func.make(args, kwargs)
        raise PickleInvalid(f"calls a {type(func).__name__}, which is not callable")

    def new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if isinstance(cls, type) and issubclass(cls, Opaque) and isinstance(args, tuple):
            return cls.make(args, kwargs if isinstance(kwargs, dict) else None)
        if isinstance(cls, Known) and cls.container == "dict":
            return PickledDict()
        raise PickleInvalid("creates an instance of something that is not a class")

    # -- opcodes -------------------------------------------------------------------------------

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
        self.append(self.call(klass, self.make_tuple(args)))

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

    def load_tuple(self) -> None:
        items = self.pop_mark()  # first: it rebinds self.append to the outer stack
        self.append(self.make_tuple(items))

    def load_empty_tuple(self) -> None:
        self.append(())

    def load_tuple1(self) -> None:
        self.stack[-1] = self.make_tuple(self.stack[-1:])

    def load_tuple2(self) -> None:
        self.stack[-2:] = [self.make_tuple(self.stack[-2:])]

    def load_tuple3(self) -> None:
        self.stack[-3:] = [self.make_tuple(self.stack[-3:])]

    def load_dict(self) -> None:
        items, made = self.pop_mark(), {}
        self.set_items(made, items)
        self.append(made)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self.set_items(self.stack[-1], (key, value))

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self.set_items(self.stack[-1], items)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._append_items(self.stack[-1], [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._append_items(self.stack[-1], items)

    def _append_items(self, target: Any, items: list) -> None:
        if not isinstance(target, (list, Opaque)):
            raise PickleInvalid(f"appends to a {type(target).__name__}")
        self.tick(len(items))
        target.extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise PickleInvalid(f"adds set items to a {type(target).__name__}")
        self.add_items(target, items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.append(self.build("frozenset", (items,)))

    def load_put(self) -> None:
        self.memo[self._memo_index()] = self.stack[-1]

    def load_get(self) -> None:
        index = self._memo_index()
        if index not in self.memo:
            raise PickleInvalid(f"refers to memo entry {index}, which it never stored")
        self.append(self.memo[index])

    def _memo_index(self) -> int:
        line = self.readline()[:-1]
        if not (line.isdigit() and len(line) <= 10 and int(line) < MAX_MEMO_INDEX):
            raise PickleInvalid("names a memo entry that is not a small non-negative integer")
        return int(line)

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # never allocates more than the pickle holds
        if len(data) != size:
            raise PickleInvalid("ends inside a byte array")
        self.append(bytearray(data))

    def load_int(self) -> None:
        pickle._Unpickler.load_int(self)
        self._small_int(self.stack[-1])

    def load_long(self) -> None:
        pickle._Unpickler.load_long(self)
        self._small_int(self.stack[-1])

    def load_long4(self) -> None:
        (size,) = struct.unpack("<i", self.read(4))
        if not 0 <= size <= MAX_INT_BYTES:
            raise PickleInvalid(f"holds a {size}-byte integer (at most {MAX_INT_BYTES})")
        self.append(pickle.decode_long(self.read(size)))

    @staticmethod
    def _small_int(value: Any) -> None:
        if isinstance(value, int) and value.bit_length() > 8 * MAX_INT_BYTES:
            raise PickleInvalid(f"holds an integer of more than {MAX_INT_BYTES} bytes")


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
    pickle.TUPLE: RestrictedUnpickler.load_tuple,
    pickle.EMPTY_TUPLE: RestrictedUnpickler.load_empty_tuple,
    pickle.TUPLE1: RestrictedUnpickler.load_tuple1,
    pickle.TUPLE2: RestrictedUnpickler.load_tuple2,
    pickle.TUPLE3: RestrictedUnpickler.load_tuple3,
    pickle.DICT: RestrictedUnpickler.load_dict,
    pickle.SETITEM: RestrictedUnpickler.load_setitem,
    pickle.SETITEMS: RestrictedUnpickler.load_setitems,
    pickle.APPEND: RestrictedUnpickler.load_append,
    pickle.APPENDS: RestrictedUnpickler.load_appends,
    pickle.ADDITEMS: RestrictedUnpickler.load_additems,
    pickle.FROZENSET: RestrictedUnpickler.load_frozenset,
    pickle.PUT: RestrictedUnpickler.load_put,
    pickle.GET: RestrictedUnpickler.load_get,
    pickle.BYTEARRAY8: RestrictedUnpickler.load_bytearray8,
    pickle.INT: RestrictedUnpickler.load_int,
    pickle.LONG: RestrictedUnpickler.load_long,
    pickle.LONG4: RestrictedUnpickler.load_long4,
}
RestrictedUnpickler.dispatch = {
    code: _budgeted(_OVERRIDES.get(bytes([code]), step))
    for code, step in pickle._Unpickler.dispatch.items()
}


def load(file: IO[bytes], *, ids: Ids = "zip", seconds: float = PICKLE_SECONDS,
         size: int | None = None) -> Unpickled:
    """Unpickle one pickle from `file` inertly; raise `PickleRefused` or `PickleInvalid`.

    `size` is the pickle's length when known (else the bytes read are counted).
    """
    unpickler = RestrictedUnpickler(file, ids=ids, seconds=seconds, size=size)
    try:
        return Unpickled(unpickler.load(), unpickler.storages, frozenset(unpickler.viewed))
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


def loads(data: bytes, *, ids: Ids = "zip", seconds: float = PICKLE_SECONDS) -> Unpickled:
    return load(io.BytesIO(data), ids=ids, seconds=seconds, size=len(data))
