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
import time
from typing import IO, Any, Callable, Literal

from ckptlint.readers.allowlist import (CONTAINERS, SAFE_CALLS, TENSOR_REBUILDERS, class_like,
                                        denied, torch_value)
from ckptlint.readers.opcodes import Opcodes
from ckptlint.readers.pickled import (Known, Opaque, PickledDict, PickleInvalid, PickleRefused,
                                      StorageRef, StorageType, Unpickled)

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


KNOWN: dict[str, Known] = {
    **{name: Known(name, fn, tensor=True) for name, fn in TENSOR_REBUILDERS.items()},
    **{name: Known(name, fn, container=CONTAINERS.get(name, "")) for name, fn
       in SAFE_CALLS.items()},
}


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


class RestrictedUnpickler(Opcodes, pickle._Unpickler):
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
        value = torch_value(module, name)
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
