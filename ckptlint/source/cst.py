"""Static answers about Python source files, for pointing findings at code: statement spans,
the statement that creates a module attribute, literal container elements, class headers and
suppression comments. (What `ckptlint init` proposes is found by `ckptlint.source.discover`.)

Owns all libcst use; never imports torch. Each file is parsed at most once per `SourceIndex`.
Spans are 1-based lines and columns (columns count characters); `end_column` is exclusive,
as in `ckptlint.core.records.Location` and SARIF.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence, Union

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from ckptlint.core.records import Location

PathLike = Union[str, "os.PathLike[str]"]
Index = Union[int, str, Sequence[Union[int, str]]]

# nn.Module methods that create a named child, and the keyword naming the created object
_REGISTRARS = {
    "add_module": "module",
    "register_module": "module",
    "register_buffer": "tensor",
    "register_parameter": "param",
}
_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict", "ParameterList",
                         "ParameterDict"})
_DICT_BUILDERS = frozenset({"OrderedDict", "dict"})
# the dicts nn.Module keeps its children in: `self._modules["x"] = m` creates `x`
_REGISTRIES = frozenset({"_modules", "_parameters", "_buffers"})
_IGNORE = re.compile(r"ckptlint:\s*ignore\b(?:\[([^\]]*)\])?")
_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class _Hit:
    """A statement that may create an attribute: `name` is the literal name, or the expression
    computing it."""

    statement: cst.BaseSmallStatement
    via: Via
    name: str | cst.BaseExpression
    value: cst.BaseExpression | None


@dataclass(frozen=True, slots=True)
class _Parsed:
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
        return _span(self.positions[node])

    def classes_named(self, qualname: str) -> list[cst.ClassDef]:
        return [node for name, node in self.classes if name == qualname]


class SourceIndex:
    """Per-run cache of parsed files, keyed by absolute path; answers the static questions.

    A file that cannot be read or parsed answers None (or nothing) to every question, and is
    not retried. `parses` counts parse attempts, so tests can check nothing is parsed twice.
    """

    def __init__(self) -> None:
        self._files: dict[str, _Parsed | None] = {}
        # a report asks about many keys of one class: walk each class once
        self._hits: dict[tuple[str, str], list[_Hit]] = {}
        self._at: dict[tuple[int, int], Span | None] = {}
        self.parses = 0

    def parsed(self, path: PathLike) -> _Parsed | None:
        """The parsed file (its `.lines` are the source lines, for code frames), or None."""
        key = _key(path) if os.fspath(path) not in self._files else os.fspath(path)
        if key not in self._files:
            self.parses += 1
            self._files[key] = _parse(key)
        return self._files[key]

    def remember(self, name: str, text: str) -> str:
        """Parse `text` (a file as it was in a commit) once; `name` then works as its path.

        Names must not look like files of the work tree (`git:<commit>:<path>` does not)."""
        if name not in self._files:
            self.parses += 1
            try:  # git's bytes that were not UTF-8 come back as they were
                data = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                data = b"\0"  # parses to nothing: no answer from this text
            self._files[name] = _parse_text(data)
        return name

    def _choose(self, path: PathLike, qualname: str, attr: str,
                ) -> tuple[_Parsed | None, _Hit | None, list[_Hit]]:
        parsed = self.parsed(path)
        if parsed is None:
            return None, None, []
        key = (_key(path) if os.fspath(path) not in self._files else os.fspath(path), qualname)
        if key not in self._hits:
            self._hits[key] = _class_hits(parsed, qualname)
        return (parsed, *_choose(self._hits[key], attr))

    def statement_at(self, path: PathLike, line: int) -> Span | None:
        """The whole simple statement containing `line` (the first, if several share the line);
        failing that the header of the innermost compound statement (or decorator) on it."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        # every key of every layer asks about the same few lines: answer each once
        key = (id(parsed), line)
        if key not in self._at:
            self._at[key] = _statement_at(parsed, line)
        return self._at[key]


    def next_statement(self, path: PathLike, line: int) -> Span | None:
        """The first simple statement that starts below `line`."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        return next((s for s in parsed.statements if s.line > line), None)

    def find_creation(self, path: PathLike, class_qualname: str, attr: str) -> Creation | None:
        """The statement that creates `attr` inside the class `class_qualname` (its exact
        `__qualname__`), searching `__init__` first, then the other methods in source order.

        A literal name wins; otherwise a statement whose computed name could be `attr` is
        returned with `dynamic=True`. None when the class (not its bases) creates no such name.
        """
        parsed, hit, others = self._choose(path, class_qualname, attr)
        if parsed is None or hit is None:
            return None
        value = parsed.span(hit.value) if hit.value is not None else None
        return Creation(parsed.span(hit.statement), hit.via, value, not isinstance(hit.name, str),
                        tuple(parsed.span(o.statement) for o in others))

    def find_element(self, path: PathLike, class_qualname: str, attr: str,
                     index: Index) -> Span | None:
        """The element expression `index` of the container `attr` when built from literals:
        `nn.Sequential(a, b)`, `nn.ModuleList([a, b])`, `nn.ModuleDict({"k": v})`,
        `nn.Sequential(OrderedDict([("k", v)]))`. `index` is a position or key (digits as str
        work too), or a sequence of them for nested literal containers. None when not literal."""
        parsed, hit, _ = self._choose(path, class_qualname, attr)
        if parsed is None or hit is None or not isinstance(hit.name, str) or hit.value is None:
            return None
        node: cst.BaseExpression | None = hit.value
        for key in _keys(index):
            node = _element(node, key) if node is not None else None
        return parsed.span(node) if node is not None else None

    def class_span(self, path: PathLike, class_qualname: str) -> Span | None:
        """The header of the class `class_qualname`: from `class` to its colon, without
        decorators. The first definition wins when a file defines the name twice."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        found = parsed.classes_named(class_qualname)
        return _header(parsed, found[0]) if found else None

    def method_header(self, path: PathLike, class_qualname: str,
                      name: str = "__init__") -> Span | None:
        """The `def` header of method `name` directly in the class `class_qualname`."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        for node in parsed.classes_named(class_qualname):
            for method, _ in _methods(node):
                if method.name.value == name:
                    return _header(parsed, method)
        return None

    def function_at(self, path: PathLike, line: int) -> tuple[Span, Span] | None:
        """The innermost function around `line`: (its `def` header, the whole definition)."""
        parsed = self.parsed(path)
        if parsed is None:
            return None
        around = [f for f in parsed.functions if f[1].line <= line <= f[1].end_line]
        return max(around, key=lambda f: f[1].line, default=None)

    def text(self, path: PathLike, span: Span) -> str:
        """The source text of `span` (lines joined with newlines), or "" if unreadable."""
        parsed = self.parsed(path)
        if parsed is None or span.end_line > len(parsed.lines):
            return ""
        lines = list(parsed.lines[span.line - 1:span.end_line])
        lines[-1] = lines[-1][:span.end_column - 1]
        lines[0] = lines[0][span.column - 1:]
        return "\n".join(lines)

    def suppressions(self, path: PathLike, span: Span) -> frozenset[str]:
        """Codes from `# ckptlint: ignore[CKL101, CKL103]` comments on any line of `span`, or
        on a comment-only line just above it; a bare `# ckptlint: ignore` gives {"*"}.
        Empty brackets suppress nothing."""
        parsed = self.parsed(path)
        if parsed is None:
            return frozenset()
        codes: set[str] = set()
        for line in range(span.line - 1, span.end_line + 1):
            for column, text in parsed.comments.get(line, ()):
                if line >= span.line or not parsed.lines[line - 1][:column].strip():
                    codes |= _ignored(text)
        return frozenset(codes)


# -- parsing -------------------------------------------------------------------------------


def _statement_at(parsed: _Parsed, line: int) -> Span | None:
    for span in parsed.statements:
        if span.line <= line <= span.end_line:
            return span
    headers = [s for s in parsed.headers if s.line <= line <= s.end_line]
    return max(headers, key=lambda s: (s.line, s.column), default=None)


def _key(path: PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _parse(path: str) -> _Parsed | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return _parse_text(data)


def _parse_text(data: bytes) -> _Parsed | None:
    try:
        module = cst.parse_module(data)
    # undecodable text or a bad coding cookie surface as SyntaxError / LookupError
    except (SyntaxError, LookupError, UnicodeDecodeError, cst.ParserSyntaxError,
            RecursionError):
        return None
    # skip libcst's defensive deep copy: the tree is never mutated
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    collector = _Collector(positions)
    module.visit(collector)
    return _Parsed(module, positions, tuple(_NEWLINE.split(module.code)),
                   tuple(collector.classes), tuple(collector.statements),
                   tuple(collector.headers),
                   {line: tuple(found) for line, found in collector.comments.items()},
                   tuple(collector.functions))


def _span(rng: CodeRange) -> Span:
    # libcst columns are 0-based with an exclusive end: shift both by one
    return Span(rng.start.line, rng.start.column + 1, rng.end.line, rng.end.column + 1)


class _Collector(cst.CSTVisitor):
    """Collects class qualnames, simple statements, compound headers and comments."""

    def __init__(self, positions: Mapping[cst.CSTNode, CodeRange]) -> None:
        self.positions = positions
        self.scope: list[str] = []
        self.classes: list[tuple[str, cst.ClassDef]] = []
        self.statements: list[Span] = []
        self.headers: list[Span] = []
        self.comments: dict[int, list[tuple[int, str]]] = {}
        self.functions: list[tuple[Span, Span]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.BaseSmallStatement):
            self.statements.append(_span(self.positions[node]))
        elif isinstance(node, cst.Decorator):
            self.headers.append(_span(self.positions[node]))
        elif isinstance(getattr(node, "body", None), cst.BaseSuite):
            self.headers.append(self._header(node))
        elif isinstance(node, cst.Comment):
            start = self.positions[node].start
            self.comments.setdefault(start.line, []).append((start.column, node.value))
        return super().on_visit(node)  # dispatches to visit_ClassDef / visit_FunctionDef

    def _header(self, node: cst.CSTNode) -> Span:
        """From the keyword to the colon, inclusive."""
        start, body = self.positions[node].start, node.body  # type: ignore[attr-defined]
        if isinstance(body, cst.IndentedBlock):
            # the block's header whitespace starts right after the colon
            end = self.positions[body.header].start
            return Span(start.line, start.column + 1, end.line, end.column + 1)
        end = self.positions[body].start  # `class A: ...`: step back over the space
        space = body.leading_whitespace.value  # type: ignore[attr-defined]
        return Span(start.line, start.column + 1, end.line, end.column + 1 - len(space))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append((".".join([*self.scope, node.name.value]), node))
        self.scope.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.scope.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.scope += [node.name.value, "<locals>"]
        self.functions.append((self.headers[-1], _span(self.positions[node])))

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        del self.scope[-2:]


def _header(parsed: _Parsed, node: cst.CSTNode) -> Span:
    start = parsed.span(node)
    for span in parsed.headers:
        if (span.line, span.column) == (start.line, start.column):
            return span
    return start


# -- creation sites ------------------------------------------------------------------------


def _class_hits(parsed: _Parsed, qualname: str) -> list[_Hit]:
    return [hit for node in parsed.classes_named(qualname)
            for method, self_name in _methods(node)
            for hit in _method_hits(method, self_name)]


def _choose(hits: Sequence[_Hit], attr: str) -> tuple[_Hit | None, list[_Hit]]:
    """The best hit for `attr` and the other literal ones; placeholders (`None`,
    `nn.Identity()`) that a later branch replaces lose to real values."""
    literal = [hit for hit in hits if hit.name == attr]
    if literal:
        best = min(literal, key=lambda hit: _is_placeholder(hit.value))
        return best, [hit for hit in literal if hit is not best]
    dynamic = [hit for hit in hits if not isinstance(hit.name, str) and _may_be(hit.name, attr)]
    return (dynamic[0] if dynamic else None), []


def _methods(node: cst.ClassDef) -> list[tuple[cst.FunctionDef, str]]:
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
    names = {_dotted(d.decorator) for d in node.decorators}
    return bool(names & {"staticmethod", "classmethod"})


def _method_hits(method: cst.FunctionDef, self_name: str) -> list[_Hit]:
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


def _statement_hits(statement: cst.BaseSmallStatement, self_name: str) -> Iterator[_Hit]:
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
                 value: cst.BaseExpression | None, self_name: str) -> Iterator[_Hit]:
    if isinstance(target, (cst.Tuple, cst.List)):
        values = _unpacked(value, len(target.elements))
        for element, item in zip(target.elements, values):
            inner = element.value
            yield from _target_hits(statement, inner, None if _starred(element) else item,
                                    self_name)
    elif isinstance(target, cst.Attribute) and _is_name(target.value, self_name):
        yield _Hit(statement, Via.ASSIGN, target.attr.value, value)
    elif isinstance(target, cst.Subscript) and _is_registry(target.value, self_name):
        key = target.slice[0].slice if len(target.slice) == 1 else None
        if isinstance(key, cst.Index):
            yield _Hit(statement, Via.REGISTRY, _name(key.value), value)


def _unpacked(value: cst.BaseExpression | None, count: int) -> list[cst.BaseExpression | None]:
    # only a literal tuple of the same length without starred items maps element to element
    if (isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == count
            and not any(_starred(e) for e in value.elements)):
        return [e.value for e in value.elements]
    return [None] * count


def _starred(element: cst.BaseElement | cst.BaseDictElement) -> bool:
    return isinstance(element, (cst.StarredElement, cst.StarredDictElement))


class _Calls(cst.CSTVisitor):
    def __init__(self) -> None:
        self.found: list[cst.Call] = []

    def visit_Call(self, node: cst.Call) -> None:
        self.found.append(node)


def _call_hits(statement: cst.BaseSmallStatement, call: cst.Call,
               self_name: str) -> Iterator[_Hit]:
    func = call.func
    if _dotted(func) == "setattr" and _is_name(_arg(call, 0, "obj"), self_name):
        name, value = _arg(call, 1, "name"), _arg(call, 2, "value")
        if name is not None:
            yield _Hit(statement, Via.SETATTR, _name(name), value)
    elif isinstance(func, cst.Attribute) and _is_name(func.value, self_name):
        method = func.attr.value
        name = _arg(call, 0, "name")
        if method in _REGISTRARS and name is not None:
            yield _Hit(statement, Via(method), _name(name), _arg(call, 1, _REGISTRARS[method]))
        elif method == "__setattr__" and name is not None:
            yield _Hit(statement, Via.SETATTR, _name(name), _arg(call, 1, "value"))


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


def _name(expr: cst.BaseExpression) -> str | cst.BaseExpression:
    """The literal string an expression always evaluates to, else the expression itself."""
    if isinstance(expr, (cst.SimpleString, cst.ConcatenatedString)):
        value = expr.evaluated_value
        if isinstance(value, str):
            return value
    return expr


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
    return isinstance(value, cst.Call) and _last(_dotted(value.func)) == "Identity"


def _is_name(expr: cst.BaseExpression | None, name: str) -> bool:
    return isinstance(expr, cst.Name) and expr.value == name


def _is_registry(expr: cst.BaseExpression, self_name: str) -> bool:
    return (isinstance(expr, cst.Attribute) and _is_name(expr.value, self_name)
            and expr.attr.value in _REGISTRIES)


def _dotted(expr: cst.BaseExpression) -> str | None:
    """`a.b.c` for a chain of names, else None."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        head = _dotted(expr.value)
        return f"{head}.{expr.attr.value}" if head is not None else None
    return None


def _last(dotted: str | None) -> str | None:
    return dotted.rpartition(".")[2] if dotted is not None else None


# -- container elements --------------------------------------------------------------------


def _keys(index: Index) -> list[str]:
    if isinstance(index, (int, str)):
        return [str(index)]
    return [str(key) for key in index]


def _element(node: cst.BaseExpression, key: str) -> cst.BaseExpression | None:
    kind = _last(_dotted(node.func)) if isinstance(node, cst.Call) else None
    if kind not in _CONTAINERS:
        return None
    args = node.args  # type: ignore[attr-defined]
    items = _sequential_items(args) if kind == "Sequential" else _iterable_items(args)
    return items.get(key) if items is not None else None


def _sequential_items(args: Sequence[cst.Arg]) -> dict[str, cst.BaseExpression] | None:
    """`Sequential(a, b)` by position, or `Sequential(OrderedDict(...))` by key."""
    if any(arg.keyword is not None for arg in args):
        return None
    if len(args) == 1 and not args[0].star and not _is_module_call(args[0].value):
        value = args[0].value
        # a lone non-module argument is an ordered dict; from a variable it is unknown
        if isinstance(value, cst.Call) and _last(_dotted(value.func)) in _DICT_BUILDERS:
            return _builder_items(value)
        return None
    return _positional([arg.value for arg in args], [bool(arg.star) for arg in args])


def _iterable_items(args: Sequence[cst.Arg]) -> dict[str, cst.BaseExpression] | None:
    """`ModuleList([...])`, `ModuleDict({...})` and the parameter twins take one iterable."""
    if not args:
        return {}
    if len(args) != 1 or args[0].star:
        return None
    return _items(args[0].value)


def _is_module_call(expr: cst.BaseExpression) -> bool:
    name = _last(_dotted(expr.func)) if isinstance(expr, cst.Call) else None
    return name is not None and name[:1].isupper() and name not in _DICT_BUILDERS


def _positional(values: Sequence[cst.BaseExpression], stars: Sequence[bool],
                ) -> dict[str, cst.BaseExpression]:
    # a starred item shifts every later position: only the ones before it are known
    known: dict[str, cst.BaseExpression] = {}
    for position, (value, star) in enumerate(zip(values, stars)):
        if star:
            break
        known[str(position)] = value
    return known


def _items(expr: cst.BaseExpression) -> dict[str, cst.BaseExpression] | None:
    """Key -> element of a literal list, dict, list of pairs or `OrderedDict(...)`."""
    if isinstance(expr, cst.Dict):
        return _pairs([(e.key, e.value) if isinstance(e, cst.DictElement) else None
                       for e in expr.elements])
    if isinstance(expr, (cst.List, cst.Tuple)):
        elements = expr.elements
        if any(_pair(e.value) is not None for e in elements if not _starred(e)):
            return _pairs([_pair(e.value) for e in elements]) if _all_pairs(expr) else None
        return _positional([e.value for e in elements], [_starred(e) for e in elements])
    if isinstance(expr, cst.Call) and _last(_dotted(expr.func)) in _DICT_BUILDERS:
        return _builder_items(expr)
    return None


def _builder_items(call: cst.Call) -> dict[str, cst.BaseExpression] | None:
    """`OrderedDict([("k", v)])`, `OrderedDict({"k": v})` or `dict(k=v)`."""
    args = call.args
    if all(arg.keyword is not None for arg in args):
        return {arg.keyword.value: arg.value for arg in args if arg.keyword is not None}
    if len(args) == 1 and args[0].keyword is None and not args[0].star:
        value = args[0].value
        if isinstance(value, cst.Dict) or _all_pairs(value):
            return _items(value)
    return None


def _all_pairs(expr: cst.BaseExpression) -> bool:
    return (isinstance(expr, (cst.List, cst.Tuple))
            and all(not _starred(e) and _pair(e.value) is not None for e in expr.elements))


def _pair(expr: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    if (isinstance(expr, (cst.Tuple, cst.List)) and len(expr.elements) == 2
            and not any(_starred(e) for e in expr.elements)
            and isinstance(_name(expr.elements[0].value), str)):
        return expr.elements[0].value, expr.elements[1].value
    return None


def _pairs(pairs: Sequence[tuple[cst.BaseExpression, cst.BaseExpression] | None],
           ) -> dict[str, cst.BaseExpression] | None:
    # a key not known statically could override a literal one: then nothing is certain
    items: dict[str, cst.BaseExpression] = {}
    for pair in pairs:
        key = _name(pair[0]) if pair is not None else None
        if pair is None or not isinstance(key, str):
            return None
        items[key] = pair[1]
    return items


# -- suppressions --------------------------------------------------------------------------


def _ignored(comment: str) -> set[str]:
    codes: set[str] = set()
    for match in _IGNORE.finditer(comment):
        if match.group(1) is None:
            codes.add("*")
        else:
            codes.update(code for code in re.split(r"[\s,]+", match.group(1)) if code)
    return codes
