"""The source index's records: a statement's span, how a layer was created (`Via`), a creation
site, and a parsed file (its module, lines and comments)."""

from __future__ import annotations

import enum
import os
from typing import Mapping, Sequence, Union

import libcst as cst
from libcst.metadata import CodeRange

from ckptlint.core.record import record
from ckptlint.core.records import Location


PathLike = Union[str, "os.PathLike[str]"]


Index = Union[int, str, Sequence[Union[int, str]]]


@record
class Span:
    """A region of one file: 1-based line and column, `end_column` exclusive.

    A caret underline for a one-line span is `end_column - column` carets starting under
    `column`; a multi-line span starts at (line, column) and stops before (end_line, end_column).
    """

    line: int
    column: int
    end_line: int
    end_column: int

    def location(self, file: str, note: str = "") -> Location:
        return Location(file, self.line, self.column, self.end_line, self.end_column, note)


class Via(str, enum.Enum):
    """How a statement creates a named attribute of a module."""

    ASSIGN = "assignment"
    ADD_MODULE = "add_module"
    REGISTER_MODULE = "register_module"
    REGISTER_BUFFER = "register_buffer"
    REGISTER_PARAMETER = "register_parameter"
    SETATTR = "setattr"
    REGISTRY = "registry"  # self._modules["x"] = …


@record
class Creation:
    """The statement creating an attribute inside one class.

    `value` is the created object's expression when the statement shows it (the right-hand side,
    or the matching element of a tuple assignment). `dynamic` means the name is computed at run
    time (`setattr(self, f"layer{i}", …)`): the statement may create the attribute, so a report
    should say so. `others` are further statements of the class that also assign the name.
    """

    span: Span
    via: Via
    value: Span | None = None
    dynamic: bool = False
    others: tuple[Span, ...] = ()


@record
class Hit:
    """A statement that may create an attribute: `name` is the literal name, or the expression
    computing it."""

    statement: cst.BaseSmallStatement
    via: Via
    name: str | cst.BaseExpression
    value: cst.BaseExpression | None


@record
class Parsed:
    """One parsed file and what every query needs from it, computed in one pass."""

    module: cst.Module
    positions: Mapping[cst.CSTNode, CodeRange]
    lines: tuple[str, ...]
    classes: tuple[tuple[str, cst.ClassDef], ...]
    statements: tuple[Span, ...]
    headers: tuple[Span, ...]
    comments: Mapping[int, tuple[tuple[int, str], ...]]
    # every function: (header from `def` to the colon, the whole definition), in source order
    functions: tuple[tuple[Span, Span], ...] = ()

    def span(self, node: cst.CSTNode) -> Span:
        return span_of(self.positions[node])

    def classes_named(self, qualname: str) -> list[cst.ClassDef]:
        return [node for name, node in self.classes if name == qualname]


def span_of(rng: CodeRange) -> Span:
    # libcst columns are 0-based with an exclusive end: shift both by one
    return Span(rng.start.line, rng.start.column + 1, rng.end.line, rng.end.column + 1)
