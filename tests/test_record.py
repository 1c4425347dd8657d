"""`@record` behaves as `@dataclass(frozen=True, slots=True)` does, class by class.

Each class below is made twice from the same body, once by each decorator, and every
behaviour ckptlint or a user of its records relies on is compared between the two.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import subprocess
import sys

import pytest

from ckptlint.core import record as records_module
from ckptlint.core.record import FrozenInstanceError, asdict, field_names, record, replace


def _both(body: str, order: bool = False) -> tuple[type, type]:
    """The class `C` defined by `body`, made by dataclasses and by `record`."""
    made = []
    for decorate, field in ((dataclasses.dataclass(frozen=True, slots=True, order=order),
                             dataclasses.field),
                            (record(order=order), records_module.field)):
        namespace = {"field": field, "__name__": __name__}  # pickle finds C here
        exec("from __future__ import annotations\nclass C:\n" + body, namespace)
        made.append(decorate(namespace["C"]))
    return made[0], made[1]


_BODIES = {
    "plain": "    a: int\n    b: str\n",
    "defaults": "    a: int\n    b: str = 'x'\n    c: tuple = ()\n    d: int | None = None\n",
    "factory": "    a: int\n    m: dict = field(default_factory=dict)\n"
               "    l: list = field(default_factory=list)\n",
    "not compared": "    a: int\n    s: tuple = field(default=(), compare=False, repr=False)\n",
    "own methods": "    a: int\n    def __str__(self):\n        return f'<{self.a}>'\n"
                   "    @property\n    def twice(self):\n        return 2 * self.a\n",
    "empty": "    '''no fields'''\n",
}
_VALUES = {
    "plain": [(1, "a"), (1, "b"), (2, "a")],
    "defaults": [(1,), (1, "y"), (1, "x", (2,)), (1, "x", (), 3)],
    "factory": [(1,), (1, {"k": 1}), (1, {}, [1])],
    "not compared": [(1,), (1, ("line",)), (2, ("line",))],
    "own methods": [(1,), (2,)],
    "empty": [()],
}


@pytest.mark.parametrize("kind", sorted(_BODIES))
def test_a_record_is_a_frozen_slotted_dataclass(kind):
    theirs, ours = _both(_BODIES[kind])
    assert ours.__match_args__ == theirs.__match_args__ == field_names(ours)
    assert ours.__slots__ == theirs.__slots__
    assert str(inspect.signature(ours)) == str(inspect.signature(theirs))
    for args in _VALUES[kind]:
        a, b = theirs(*args), ours(*args)
        assert repr(b).replace(ours.__qualname__, "X") == repr(a).replace(theirs.__qualname__, "X")
        assert str(b).replace(ours.__qualname__, "X") == str(a).replace(theirs.__qualname__, "X")
        assert not hasattr(b, "__dict__")
        assert b == ours(*args) and b != a  # a different class is never equal
        if kind != "factory":  # a dict field is unhashable in both
            assert hash(b) == hash(ours(*args)) == hash(a)
        for other in _VALUES[kind]:
            assert (b == ours(*other)) == (a == theirs(*other))
        globals()["C"] = ours
        assert pickle.loads(pickle.dumps(b)) == b
        assert asdict(b) == dataclasses.asdict(a) == dataclasses.asdict(b)
        for name in ours.__match_args__:
            with pytest.raises(AttributeError) as caught:
                setattr(b, name, 0)
            assert isinstance(caught.value, FrozenInstanceError)
            with pytest.raises(AttributeError):
                delattr(b, name)
            assert replace(b, **{name: getattr(b, name)}) == b
            assert dataclasses.replace(b, **{name: getattr(b, name)}) == b
    assert dataclasses.is_dataclass(ours)
    assert [f.name for f in dataclasses.fields(ours)] == [f.name for f in dataclasses.fields(theirs)]


def test_defaults_factories_and_errors_are_those_of_dataclasses():
    theirs, ours = _both(_BODIES["factory"])
    assert ours(1).m is not ours(1).m  # a fresh dict per instance
    assert ours(1, {"k": 2}).m == {"k": 2}
    for cls in (theirs, ours):
        with pytest.raises(TypeError):
            cls()  # a required field missing
        with pytest.raises(TypeError):
            cls(1, {}, [], 4)  # one too many
    with pytest.raises(TypeError, match="no field 'z'"):
        replace(ours(1), z=1)
    with pytest.raises(TypeError, match="non-default argument"):
        _both("    a: int = 0\n    b: int\n")
    with pytest.raises(ValueError, match="mutable default"):
        record(type("C", (), {"__annotations__": {"a": "list"}, "a": []}))


def test_order_compares_as_dataclasses_does():
    theirs, ours = _both("    a: int\n    b: str = ''\n", order=True)
    values = [(2, "a"), (1, "b"), (1, "a"), (3, "")]
    assert [tuple(asdict(x).values()) for x in sorted(ours(*v) for v in values)] == \
        [tuple(dataclasses.asdict(x).values()) for x in sorted(theirs(*v) for v in values)]
    with pytest.raises(TypeError):
        ours(1) < theirs(1)  # noqa: B015 -- only records of one class compare


def test_nested_records_convert_as_asdict_does():
    inner_theirs, inner_ours = _both(_BODIES["plain"])
    outer_theirs, outer_ours = _both("    items: tuple\n    by: dict\n")
    a = outer_theirs((inner_theirs(1, "a"),), {"k": [inner_theirs(2, "b")]})
    b = outer_ours((inner_ours(1, "a"),), {"k": [inner_ours(2, "b")]})
    assert asdict(b) == dataclasses.asdict(a)


def test_the_cold_path_never_imports_dataclasses(tmp_path):
    """What the records exist for: `inspect` of a file, with every record it uses, loads
    neither `dataclasses` nor `inspect` (the descriptor imports it only when asked)."""
    probe = ("import sys, ckptlint.core.records, ckptlint.run.fit, ckptlint.commands.setup\n"
             "print('dataclasses' in sys.modules, 'inspect' in sys.modules)\n"
             "import dataclasses\n"
             "from ckptlint.core.records import TensorSpec\n"
             "print([f.name for f in dataclasses.fields(TensorSpec)])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "False False"
    assert out[1] == "['dtype', 'shape', 'role']"
