"""Writing the remap hook into the model's source with libcst, every other byte kept.

`with_hook` adds the hook function at module level, just above the model's class, and
registers it in the class's `__init__` right after `super().__init__(...)` (so an early
`return` cannot skip it). Run again it changes nothing; a hook it wrote before (its docstring
says so) is replaced in place, and an existing registration is kept. Pure text in, text out:
the caller writes the file, rebuilds the model and reverts when the proof fails.
"""

from __future__ import annotations

import ast
import difflib
from typing import Callable

import libcst as cst

from ckptlint.compare.mapping import MARKER, Rules
from ckptlint.core.errors import CkptlintError
from ckptlint.core.record import record

_REGISTER = ("_register_load_state_dict_pre_hook", "register_load_state_dict_pre_hook")
_COMMENT = "# checkpoints saved before the refactor load through this hook (ckptlint remap)"


class ApplyError(CkptlintError):
    """The source cannot be edited safely; the sentence names the file and what is in the way."""

    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")


@record
class Edit:
    """One file before and after the edit."""

    file: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.before.splitlines(keepends=True),
                                            self.after.splitlines(keepends=True),
                                            f"a/{self.file}", f"b/{self.file}"))


def with_hook(file: str, source: str, qualname: str, name: str, function: str,
              registration: str) -> Edit:
    """`source` with the hook `function` (named `name`) above the class `qualname`, and
    `registration` (its `self.` form) in the class's `__init__`."""
    module = _parse(file, source)
    top, cls = _class(file, module, qualname)
    new = cst.parse_module(function).body[0]
    body = list(module.body)
    at = next((i for i, s in enumerate(body) if _is_hook(s, name)), None)
    if at is None and any(_defines(s, name) for s in body):
        raise ApplyError(file, f"already defines `{name}`, which ckptlint did not write: rename "
                               "it, or remove it, and run again")
    if at is not None:  # update the hook in place
        body[at] = new.with_changes(leading_lines=body[at].leading_lines)
    index = next(i for i, s in enumerate(body) if s is top)
    edited = _registered(file, cls, name, registration)
    if edited is not cls:
        body[index] = top.deep_replace(cls, edited)
    if at is None:
        body[index:index + 1] = [*_above(new, body[index]), _below(body[index])]
    return Edit(file, source, module.with_changes(body=body).code)


def existing_rules(file: str, source: str, name: str) -> Rules | None:
    """The rules of the hook `name` that ckptlint wrote into `source` before, if any."""
    module = _parse(file, source)
    hook = next((s for s in module.body if _is_hook(s, name)), None)
    if hook is None:
        return None
    tables: dict[str, object] = {}
    for statement in _statements(hook):
        for small in statement.body:
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(
                    small.targets[0].target, cst.Name):
                try:
                    tables[small.targets[0].target.value] = ast.literal_eval(
                        module.code_for_node(small.value))
                except (ValueError, SyntaxError):
                    pass
    renames, drops = tables.get("renames"), tables.get("dropped", [])
    if not (_pairs(renames) and isinstance(drops, list)
            and all(isinstance(d, str) for d in drops)):
        raise ApplyError(file, f"has a `{name}` whose rules ckptlint cannot read (edited by "
                               "hand?): remove it, or fix it, and run again")
    return Rules(tuple(tuple(p) for p in renames), tuple(drops))  # type: ignore[misc]


def is_registered(file: str, source: str, qualname: str, name: str) -> bool:
    """Whether the class's `__init__` registers the hook `name`."""
    _, cls = _class(file, _parse(file, source), qualname)
    init = _init(cls)
    return init is not None and _registers(init, name)


def _parse(file: str, source: str) -> cst.Module:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise ApplyError(file, f"cannot be parsed (line {exc.raw_line}): fix the syntax "
                               "first") from None


def _pairs(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)
        for p in value)


def _class(file: str, module: cst.Module, qualname: str) -> tuple[cst.CSTNode, cst.ClassDef]:
    """The module-level statement holding class `qualname` (dotted for a nested class)."""
    if "<locals>" in qualname:
        raise ApplyError(file, f"defines `{qualname}` inside a function, where a hook cannot "
                               "be registered from outside: register it yourself")
    scope: list[cst.CSTNode] = list(module.body)
    top: cst.CSTNode | None = None
    found: cst.ClassDef | None = None
    for part in qualname.split("."):
        matches = [s for s in scope if isinstance(s, cst.ClassDef) and s.name.value == part]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise ApplyError(file, f"has {what} class `{qualname}` at module level (defined in a "
                                   "branch or twice?): register the hook yourself")
        found = matches[0]
        top = top or found
        scope = list(found.body.body) if isinstance(found.body, cst.IndentedBlock) else []
    assert top is not None and found is not None
    return top, found


def _init(cls: cst.ClassDef) -> cst.FunctionDef | None:
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    inits = [s for s in body if isinstance(s, cst.FunctionDef) and s.name.value == "__init__"]
    return inits[-1] if inits else None  # the last definition is the one Python keeps


def _registered(file: str, cls: cst.ClassDef, name: str, registration: str) -> cst.ClassDef:
    """The class with the registration in its `__init__` (added one when it has none)."""
    if not isinstance(cls.body, cst.IndentedBlock):
        raise ApplyError(file, f"defines class `{cls.name.value}` on one line: put its body on "
                               "lines of its own first")
    init = _init(cls)
    if init is None:
        made = cst.parse_statement(
            f"def __init__(self, *args, **kwargs):\n    super().__init__(*args, **kwargs)\n"
            f"    {_COMMENT}\n    {registration}\n")
        body = list(cls.body.body)
        at = 1 if body and _is_docstring(body[0]) else 0
        return cls.with_changes(body=cls.body.with_changes(body=[*body[:at], made, *body[at:]]))
    if _registers(init, name):
        return cls
    if not isinstance(init.body, cst.IndentedBlock):
        raise ApplyError(file, f"defines `{cls.name.value}.__init__` on one line: put its body "
                               "on lines of its own first")
    self_name = _self(init)
    if self_name is None:
        raise ApplyError(file, f"`{cls.name.value}.__init__` takes no `self` argument")
    statement = cst.parse_statement(
        f"{_COMMENT}\n{registration.replace('self.', self_name + '.', 1)}\n")
    body = list(init.body.body)
    at = _after_super(body)
    new_init = init.with_changes(body=init.body.with_changes(
        body=[*body[:at], statement, *body[at:]]))
    return cls.deep_replace(init, new_init)


def _self(init: cst.FunctionDef) -> str | None:
    params = init.params.posonly_params or init.params.params
    return params[0].name.value if params else None


def _after_super(body: list[cst.BaseStatement]) -> int:
    """Just after the statement calling `super().__init__` (or `Base.__init__(self)`); failing
    that, at the end, before a closing `return`."""
    for i, statement in enumerate(body):
        if _calls_init(statement):
            return i + 1
    last = body[-1] if body else None
    ends_in_return = isinstance(last, cst.SimpleStatementLine) and any(
        isinstance(s, cst.Return) for s in last.body)
    return len(body) - 1 if ends_in_return else len(body)


class _Finder(cst.CSTVisitor):
    """Whether any call below a node passes `test`."""

    def __init__(self, test: Callable[[cst.Call], bool]) -> None:
        self.test, self.found = test, False

    def visit_Call(self, node: cst.Call) -> bool:
        self.found = self.found or self.test(node)
        return not self.found


def _visit(node: cst.CSTNode, test: Callable[[cst.Call], bool]) -> bool:
    finder = _Finder(test)
    node.visit(finder)
    return finder.found


def _calls_init(statement: cst.CSTNode) -> bool:
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    return _visit(statement, lambda call: isinstance(call.func, cst.Attribute)
                  and call.func.attr.value == "__init__")


def _registers(init: cst.FunctionDef, name: str) -> bool:
    return _visit(init, lambda call: isinstance(call.func, cst.Attribute)
                  and call.func.attr.value in _REGISTER and bool(call.args)
                  and isinstance(call.args[0].value, cst.Name)
                  and call.args[0].value.value == name)


def _is_hook(statement: cst.CSTNode, name: str) -> bool:
    """A module-level function `name` whose docstring says ckptlint wrote it."""
    if not (isinstance(statement, cst.FunctionDef) and statement.name.value == name):
        return False
    doc = statement.get_docstring(clean=False)
    return bool(doc) and doc.startswith(MARKER)


def _defines(statement: cst.CSTNode, name: str) -> bool:
    return isinstance(statement, (cst.FunctionDef, cst.ClassDef)) and statement.name.value == name


def _statements(function: cst.FunctionDef) -> list[cst.SimpleStatementLine]:
    body = function.body.body if isinstance(function.body, cst.IndentedBlock) else ()
    return [s for s in body if isinstance(s, cst.SimpleStatementLine)]


def _is_docstring(statement: cst.CSTNode) -> bool:
    return isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1 and \
        isinstance(statement.body[0], cst.Expr) and isinstance(
            statement.body[0].value, (cst.SimpleString, cst.ConcatenatedString))


def _above(function: cst.FunctionDef, cls: cst.CSTNode) -> list[cst.CSTNode]:
    """The hook, taking the blank lines above the class (its comments stay with the class)."""
    lines = list(getattr(cls, "leading_lines", ()))
    blank = 0
    while blank < len(lines) and lines[blank].comment is None:
        blank += 1
    return [function.with_changes(leading_lines=lines[:blank])]


def _below(cls: cst.CSTNode) -> cst.CSTNode:
    """The class after the hook: two blank lines, then its own comments."""
    lines = list(getattr(cls, "leading_lines", ()))
    while lines and lines[0].comment is None:
        lines.pop(0)
    return cls.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine(), *lines])
