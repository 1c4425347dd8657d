"""What the restricted unpickler hands back: inert records of tensors, storages, dtypes and
objects it may not build, and the errors that refuse a pickle."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, ClassVar

from ckptlint.core.dtypes import ITEMSIZE
from ckptlint.core.record import field, record


class PickleRefused(Exception):
    """The pickle names or calls `name`, which ckptlint will not run."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class PickleInvalid(Exception):
    """The pickle is corrupt, truncated, or not a shape ckptlint can read inertly."""


@record
class DType:
    """A `torch.<dtype>` global, by its canonical name."""

    name: str


@record
class StorageType:
    """A `torch.<Name>Storage` class global; dtype None for `UntypedStorage` (bytes)."""

    dtype: str | None


@record
class StorageRef:
    """A storage a tensor points into: torch.save's persistent id, never its bytes."""

    key: str
    dtype: str
    numel: int
    untyped: bool = False

    @property
    def nbytes(self) -> int:
        return self.numel if self.untyped else self.numel * ITEMSIZE[self.dtype]


@record
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


@record
class Known:
    """An allowlisted callable global, mapped to an inert function of this module."""

    name: str
    fn: Callable[..., Any]
    tensor: bool = False  # a tensor rebuilder, which `_rebuild_from_type_v2` may wrap
    container: str = ""  # built by the unpickler itself, key by checked key ("dict", "set")


@record
class Unpickled:
    """What one pickle holds, and every storage record it points to (key -> what it declares)."""

    value: Any
    storages: dict[str, StorageRef] = field(default_factory=dict)
    # storage keys a legacy pickle reads through a storage view (pre-1.0 torch wrote them;
    # the signature does not depend on them, a reader of the bytes must apply their offset)
    viewed: frozenset[str] = frozenset()
