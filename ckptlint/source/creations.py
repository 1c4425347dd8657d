"""Where a class's code creates each attribute: `self.x = ...`, `add_module`, `register_buffer`,
`setattr` and registry writes, found statement by statement in its methods."""

from __future__ import annotations

import re
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.source.containers import dotted_name, last_part, name_of, starred
from ckptlint.source.spans import Hit, Parsed, Via


# nn.Module methods that create a named child, and the keyword naming the created object
_REGISTRARS = {
    "add_module": "module",
    "register_module": "module",
    "register_buffer": "tensor",
    "register_parameter": "param",
}


# the dicts nn.Module keeps its children in: `self._modules["x"] = m` creates `x`
_REGISTRIES = frozenset({"_modules", "_parameters", "_buffers"})


def class_hits(parsed: Parsed, qualname: str) -> list[Hit]:
    return [hit for node in parsed.classes_named(qualname)
            for method, self_name in methods_of(node)
            for hit in _method_hits(method, self_name)]


def choose(hits: Sequence[Hit], attr: str) -> tuple[Hit | None, list[Hit]]:
    """The best hit for `attr` and the other literal ones; placeholders (`None`,
    `nn.Identity()`) that a later branch replaces lose to real values."""
    literal = [hit for hit in hits if hit.name == attr]
    if literal:
        best = min(literal, key=lambda hit: _is_placeholder(hit.value))
        return best, [hit for hit in literal if hit is not best]
    dynamic = [hit for hit in hits if not isinstance(hit.name, str) and _may_be(hit.name, attr)]
    return (dynamic[0] if dynamic else None), []


def methods_of(node: cst.ClassDef) -> list[tuple[cst.FunctionDef, str]]:
    """The class's methods with the name of their first parameter, `__init__` first."""
    finder = _Defs()
    node.body.visit(finder)
    methods = [(f, _first_param(f)) for f in finder.found if not _is_static(f)]
    named = [(f, name) for f, name in methods if name is not None]
    return sorted(named, key=lambda m: m[0].name.value != "__init__")  # type: ignore[return-value]


class _Defs(cst.CSTVisitor):
    """Function definitions directly in a class body (also under `if`/`try`), in order."""

    def __init__(self) -> None:
        self.found: list[cst.FunctionDef] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.found.append(node)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False


def _first_param(node: cst.FunctionDef) -> str | None:
    params = [*node.params.posonly_params, *node.params.params]
    return params[0].name.value if params else None


def _is_static(node: cst.FunctionDef) -> bool:
    names = {dotted_name(d.decorator) for d in node.decorators}
    return bool(names & {"staticmethod", "classmethod"})


def _method_hits(method: cst.FunctionDef, self_name: str) -> list[Hit]:
    finder = _Statements()
    method.body.visit(finder)
    return [hit for statement in finder.found for hit in _statement_hits(statement, self_name)]


class _Statements(cst.CSTVisitor):
    """Simple statements in source order, including nested functions (closures see `self`)
    but not nested classes (their own qualname)."""

    def __init__(self) -> None:
        self.found: list[cst.BaseSmallStatement] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.BaseSmallStatement):
            self.found.append(node)
            return False
        return not isinstance(node, cst.ClassDef)


def _statement_hits(statement: cst.BaseSmallStatement, self_name: str) -> Iterator[Hit]:
    if isinstance(statement, cst.Assign):
        for target in statement.targets:
            yield from _target_hits(statement, target.target, statement.value, self_name)
    elif isinstance(statement, cst.AnnAssign) and statement.value is not None:
        yield from _target_hits(statement, statement.target, statement.value, self_name)
    calls = _Calls()
    statement.visit(calls)
    for call in calls.found:
        yield from _call_hits(statement, call, self_name)


def _target_hits(statement: cst.BaseSmallStatement, target: cst.BaseExpression,
                 value: cst.BaseExpression | None, self_name: str) -> Iterator[Hit]:
    if isinstance(target, (cst.Tuple, cst.List)):
        values = _unpacked(value, len(target.elements))
        for element, item in zip(target.elements, values):
            inner = element.value
            yield from _target_hits(statement, inner, None if starred(element) else item,
                                    self_name)
    elif isinstance(target, cst.Attribute) and _is_name(target.value, self_name):
        yield Hit(statement, Via.ASSIGN, target.attr.value, value)
    elif isinstance(target, cst.Subscript) and _is_registry(target.value, self_name):
        key = target.slice[0].slice if len(target.slice) == 1 else None
        if isinstance(key, cst.Index):
            yield Hit(statement, Via.REGISTRY, name_of(key.value), value)


def _unpacked(value: cst.BaseExpression | None, count: int) -> list[cst.BaseExpression | None]:
    # only a literal tuple of the same length without starred items maps element to element
    if (isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == count
            and not any(starred(e) for e in value.elements)):
        return [e.value for e in value.elements]
    return [None] * count


class _Calls(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found: list[cst.Call] = []

    def visit_Call(self, node: cst.Call) -> None:
        self.found.append(node)


def _call_hits(statement: cst.BaseSmallStatement, call: cst.Call,
               self_name: str) -> Iterator[Hit]:
    func = call.func
    if dotted_name(func) == "setattr" and _is_name(_arg(call, 0, "obj"), self_name):
        name, value = _arg(call, 1, "name"), _arg(call, 2, "value")
        if name is not None:
            yield Hit(statement, Via.SETATTR, name_of(name), value)
    elif isinstance(func, cst.Attribute) and _is_name(func.value, self_name):
        method = func.attr.value
        name = _arg(call, 0, "name")
        if method in _REGISTRARS and name is not None:
            yield Hit(statement, Via(method), name_of(name), _arg(call, 1, _REGISTRARS[method]))
        elif method == "__setattr__" and name is not None:
            yield Hit(statement, Via.SETATTR, name_of(name), _arg(call, 1, "value"))


def _arg(call: cst.Call, position: int, keyword: str) -> cst.BaseExpression | None:
    """The argument at `position` or passed as `keyword`; None when `*args` hide it."""
    positional = []
    for arg in call.args:
        if arg.keyword is not None:
            if arg.keyword.value == keyword:
                return arg.value
        elif arg.star:
            break
        else:
            positional.append(arg.value)
    return positional[position] if position < len(positional) else None


def _may_be(expr: cst.BaseExpression, attr: str) -> bool:
    """Whether a computed name could be `attr`: an f-string must match around its holes."""
    if isinstance(expr, cst.FormattedString):
        return re.fullmatch(_fstring_pattern(expr), attr) is not None
    if isinstance(expr, (cst.SimpleString, cst.ConcatenatedString, cst.Integer, cst.Float)):
        return False  # bytes or numbers: never a valid attribute name
    return True


def _fstring_pattern(expr: cst.FormattedString) -> str:
    if "r" in expr.prefix.lower() or any("\\" in part.value for part in expr.parts
                                         if isinstance(part, cst.FormattedStringText)):
        return ".*"  # escapes make the literal text uncertain: accept anything
    return "".join(re.escape(part.value) if isinstance(part, cst.FormattedStringText) else ".*"
                   for part in expr.parts)


def _is_placeholder(value: cst.BaseExpression | None) -> bool:
    if isinstance(value, cst.Name):
        return value.value == "None"
    return isinstance(value, cst.Call) and last_part(dotted_name(value.func)) == "Identity"


def _is_name(expr: cst.BaseExpression | None, name: str) -> bool:
    return isinstance(expr, cst.Name) and expr.value == name


def _is_registry(expr: cst.BaseExpression, self_name: str) -> bool:
    return (isinstance(expr, cst.Attribute) and _is_name(expr.value, self_name)
            and expr.attr.value in _REGISTRIES)
