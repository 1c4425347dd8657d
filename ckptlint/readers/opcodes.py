"""The pickle opcodes the restricted unpickler re-implements: every one that would call, build,
or grow something goes through the unpickler's own checked `call`, `new`, `make_tuple`,
`set_items` and budget (`RestrictedUnpickler` mixes this class in before `pickle._Unpickler`,
so these win)."""

from __future__ import annotations

import pickle
import struct
from typing import Any

from ckptlint.readers.pickled import Opaque, PickledDict, PickleInvalid

MAX_INT_BYTES = 4096  # an integer in a checkpoint is a count or a seed, not 32 KiB of digits
MAX_MEMO_INDEX = 2**32  # what the binary memo opcodes can name; also keeps memo hashes apart


class Opcodes:
    """Opcode handlers for `RestrictedUnpickler`; `self` is that unpickler."""

    stack: list
    memo: dict
    append: Any
    read: Any
    readline: Any
    pop_mark: Any
    call: Any
    new: Any
    make_tuple: Any
    set_items: Any
    add_items: Any
    build: Any
    tick: Any

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
