"""Static answers about Python source files, for pointing findings at code: statement spans,
the statement that creates a module attribute, literal container elements, class headers and
suppression comments. (What `ckptlint init` proposes is found by `ckptlint.source.discover`.)

Owns all libcst use; never imports torch. Each file is parsed at most once per `SourceIndex`.
Spans are 1-based lines and columns (columns count characters); `end_column` is exclusive,
as in `ckptlint.core.records.Location` and SARIF.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from ckptlint.source import directives
from ckptlint.source.containers import element_at, index_keys
from ckptlint.source.creations import choose, class_hits, methods_of
from ckptlint.source.spans import Creation, Hit, Index, Parsed, PathLike, Span, span_of


_NEWLINE = re.compile(r"\r\n|\r|\n")


class SourceIndex:
    """Per-run cache of parsed files, keyed by absolute path; answers the static questions.

    A file that cannot be read or parsed answers None (or nothing) to every question, and is
    not retried. `parses` counts parse attempts, so tests can check nothing is parsed twice.
    """

    def __init__(self) -> None:
        self._files: dict[str, Parsed | None] = {}
        # a report asks about many keys of one class: walk each class once
        self._hits: dict[tuple[str, str], list[Hit]] = {}
        self._at: dict[tuple[int, int], Span | None] = {}
        self.parses = 0

    def parsed(self, path: PathLike) -> Parsed | None:
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
                ) -> tuple[Parsed | None, Hit | None, list[Hit]]:
        parsed = self.parsed(path)
        if parsed is None:
            return None, None, []
        key = (_key(path) if os.fspath(path) not in self._files else os.fspath(path), qualname)
        if key not in self._hits:
            self._hits[key] = class_hits(parsed, qualname)
        return (parsed, *choose(self._hits[key], attr))

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
        for key in index_keys(index):
            node = element_at(node, key) if node is not None else None
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
            for method, _ in methods_of(node):
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
                    codes |= directives.codes(text) or frozenset()
        return frozenset(codes)


# -- parsing -------------------------------------------------------------------------------


def _statement_at(parsed: Parsed, line: int) -> Span | None:
    for span in parsed.statements:
        if span.line <= line <= span.end_line:
            return span
    headers = [s for s in parsed.headers if s.line <= line <= s.end_line]
    return max(headers, key=lambda s: (s.line, s.column), default=None)


def _key(path: PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _parse(path: str) -> Parsed | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return _parse_text(data)


def _parse_text(data: bytes) -> Parsed | None:
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
    return Parsed(module, positions, tuple(_NEWLINE.split(module.code)),
                   tuple(collector.classes), tuple(collector.statements),
                   tuple(collector.headers),
                   {line: tuple(found) for line, found in collector.comments.items()},
                   tuple(collector.functions))


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
            self.statements.append(span_of(self.positions[node]))
        elif isinstance(node, cst.Decorator):
            self.headers.append(span_of(self.positions[node]))
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
        self.functions.append((self.headers[-1], span_of(self.positions[node])))

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        del self.scope[-2:]


def _header(parsed: Parsed, node: cst.CSTNode) -> Span:
    start = parsed.span(node)
    for span in parsed.headers:
        if (span.line, span.column) == (start.line, start.column):
            return span
    return start


# -- creation sites ------------------------------------------------------------------------


# -- container elements --------------------------------------------------------------------
