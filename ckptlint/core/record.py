"""`@record`: a frozen, slotted dataclass, made without the `dataclasses` module.

Python 3.11's `dataclasses` costs about 10 ms to import (it imports `inspect`, `ast`, `dis`)
and 1.2 ms per class (one `exec` per method, then a second class for the slots); the 30
records `ckptlint inspect` loads cost 40 ms of the 120 ms it may take. `@record` makes, with
one `exec` per class, what `@dataclass(frozen=True, slots=True)` makes (`order=True` too):
`__init__` with defaults and `field(default_factory=...)`, `__repr__`, `__eq__` and `__hash__`
over the fields in order, `__match_args__`, `__slots__`, assignment and deletion refused, and
pickling. Methods the class defines itself are kept, as dataclasses keeps them.

The class is a dataclass to the `dataclasses` module too: `__dataclass_fields__` is made on
first use (importing `dataclasses` then), so `dataclasses.replace`, `fields`, `asdict` and
`is_dataclass` work on it. ckptlint's own code uses this module's `replace`, `field_names` and
`asdict`, which need no import. tests/test_record.py holds each class made both ways side by
side and compares them.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "MISSING"})()
# the default `__init__` shows for a field with a default_factory, as in dataclasses
_FACTORY: Any = type("_Factory", (), {"__repr__": lambda self: "<factory>"})()


class FrozenInstanceError(AttributeError):
    """Raised on assignment to (or deletion of) a record's field, as `dataclasses` does."""


class _Field:
    __slots__ = ("default", "default_factory", "compare", "repr", "annotation")

    def __init__(self, default: Any = _MISSING, default_factory: Any = _MISSING,
                 compare: bool = True, repr: bool = True) -> None:
        self.default, self.default_factory = default, default_factory
        self.compare, self.repr = compare, repr
        self.annotation: Any = None  # the class's annotation, set when the record is made


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING,
          compare: bool = True, repr: bool = True) -> Any:
    """A field's default, or the factory that makes a fresh one per instance; `compare=False`
    leaves it out of `==` and the hash, `repr=False` out of the repr."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("a field takes a default or a default_factory, not both")
    return _Field(default, default_factory, compare, repr)


def record(cls: type | None = None, /, *, order: bool = False) -> Any:
    """`@record` or `@record(order=True)` on a class whose annotations are its fields."""
    if cls is None:
        return lambda cls: _make(cls, order)
    return _make(cls, order)


def field_names(obj: Any) -> tuple[str, ...]:
    """The fields of a record (or record class), in order."""
    return obj.__match_args__


def replace(obj: Any, /, **changes: Any) -> Any:
    """A copy of a record with some fields changed (`dataclasses.replace`)."""
    unknown = set(changes) - set(obj.__match_args__)
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r}")
    for name in obj.__match_args__:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)


def asdict(obj: Any) -> Any:
    """A record as a dict, records, lists, tuples and dicts inside it converted too.

    Like `dataclasses.asdict`, except that other values are shared, not deep-copied (records
    hold strings, numbers, tuples and mappings of them).
    """
    if hasattr(type(obj), "__record_fields__"):
        return {name: asdict(getattr(obj, name)) for name in obj.__match_args__}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(asdict(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((asdict(k), asdict(v)) for k, v in obj.items())
    return obj


class _DataclassFields:
    """`__dataclass_fields__`, made on first use so that `dataclasses` loads only then."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type) -> Any:
        import dataclasses

        made = {}
        for name, spec in owner.__record_fields__.items():
            kwargs = {k: v for k, v in (("default", spec.default),
                                        ("default_factory", spec.default_factory))
                      if v is not _MISSING}
            made[name] = f = dataclasses.field(**kwargs, compare=spec.compare, repr=spec.repr)
            f.name, f.type, f._field_type = name, spec.annotation, dataclasses._FIELD
        type.__setattr__(owner, self.name, made)  # the plain dict from now on
        return made


_ORDER = (("__lt__", operator.lt), ("__le__", operator.le), ("__gt__", operator.gt),
          ("__ge__", operator.ge))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__
                      if self.__record_fields__[name].repr)
    return f"{type(self).__qualname__}({shown})"


def _refuse_assignment(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list:
    return [getattr(self, name) for name in self.__match_args__]


def _setstate(self: Any, state: list) -> None:
    for name, value in zip(self.__match_args__, state):
        object.__setattr__(self, name, value)


# the same for every record: they read the fields from `__match_args__`
_SHARED = {"__repr__": _repr, "__setattr__": _refuse_assignment, "__delattr__": _refuse_deletion,
           "__getstate__": _getstate, "__setstate__": _setstate}


def _key(names: list[str]) -> Callable[[Any], tuple]:
    """The tuple of a record's compared fields, which `==`, the hash and the order use."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        get = operator.attrgetter(names[0])
        return lambda record: (get(record),)
    return lambda record: ()


def _comparisons(key: Callable[[Any], tuple], order: bool) -> dict[str, Any]:
    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(key(self))

    made = {"__eq__": __eq__, "__hash__": __hash__}
    for name, compare in _ORDER if order else ():
        made[name] = _ordering(key, compare)
    return made


def _ordering(key: Callable[[Any], tuple], compare: Callable[[Any, Any], bool]) -> Any:
    def ordered(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return compare(key(self), key(other))
        return NotImplemented

    return ordered


def _make(cls: type, order: bool) -> type:
    namespace = dict(cls.__dict__)
    annotations = namespace.get("__annotations__", {})
    specs: dict[str, _Field] = {}
    for name, annotation in annotations.items():
        if "ClassVar" in str(annotation):
            continue
        value = namespace.pop(name, _MISSING)
        spec = value if isinstance(value, _Field) else \
            _Field() if value is _MISSING else _Field(value)
        if spec.default is not _MISSING and type(spec.default).__hash__ is None:
            raise ValueError(f"mutable default {type(spec.default).__name__} for field {name} "
                             "is not allowed: use default_factory")
        spec.annotation = annotation
        specs[name] = spec
    for name in ("__setattr__", "__delattr__") + tuple(n for n, _ in _ORDER if order):
        if name in namespace:
            raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
    if namespace.get("__hash__", _MISSING) is None and "__eq__" in namespace:
        del namespace["__hash__"]  # Python's None for a class with its own __eq__: made here
    names = tuple(specs)
    namespace.update(_methods(cls.__qualname__, names, specs, order, keep=namespace))

    namespace["__slots__"] = names
    namespace["__match_args__"] = names
    namespace["__record_fields__"] = specs
    namespace["__dataclass_fields__"] = _DataclassFields()
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    return type(cls)(cls.__name__, cls.__bases__, namespace)


def _methods(qualname: str, names: tuple[str, ...], specs: dict[str, _Field],
             order: bool, keep: dict) -> dict[str, Any]:
    """`__init__`, which names each field (fast to call), compiled; the comparisons, over
    `operator.attrgetter` of the fields; and the methods every record shares."""
    env: dict[str, Any] = {"_setattr": object.__setattr__, "_FACTORY": _FACTORY}
    params, body, seen_default = [], [], False
    for name in names:
        spec = specs[name]
        if spec.default is _MISSING and spec.default_factory is _MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {name!r} follows default argument")
            params.append(name)
            body.append(f"_setattr(self, {name!r}, {name})")
        elif spec.default_factory is not _MISSING:
            seen_default = True
            env[f"_factory_{name}"] = spec.default_factory
            params.append(f"{name}=_FACTORY")
            body.append(f"_setattr(self, {name!r}, _factory_{name}() if {name} is _FACTORY "
                        f"else {name})")
        else:
            seen_default = True
            env[f"_default_{name}"] = spec.default
            params.append(f"{name}=_default_{name}")
            body.append(f"_setattr(self, {name!r}, {name})")
    source = [f"def __init__(self, {', '.join(params)}):",
              *(f"    {line}" for line in body or ["pass"])]
    exec("\n".join(source), env)  # noqa: S102 -- source built above from field names only
    env["__init__"].__annotations__ = {  # what help() and inspect.signature show
        **{name: specs[name].annotation for name in names}, "return": None}
    made = {"__init__": env["__init__"],
            **_comparisons(_key([n for n in names if specs[n].compare]), order)}
    for name, function in made.items():
        function.__qualname__ = f"{qualname}.{name}"
    made.update(_SHARED)
    # what the class defines itself wins, as with dataclasses (the frozen pair excepted)
    return {name: function for name, function in made.items()
            if name not in keep or name in ("__setattr__", "__delattr__")}
