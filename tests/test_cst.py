"""The static locator: statement spans, creation sites, container elements, class headers,
suppression comments and module classes, on small sources and on transformers' own models."""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from ckptlint.source.cst import SourceIndex
from ckptlint.source.spans import Creation, Span, Via
from ckptlint.core.records import Location


def write(tmp_path: Path, source: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def line_of(text: str, pattern: str, after: int = 0) -> int:
    """1-based line of the first match of `pattern` (a regex) below line `after`."""
    for number, line in enumerate(text.splitlines(), 1):
        if number > after and re.search(pattern, line):
            return number
    raise AssertionError(f"{pattern!r} not found below line {after}")


def statement_span(text: str, start: int, end: int | None = None) -> Span:
    """The span from the first non-blank character of line `start` to the end of line `end`."""
    lines = text.splitlines()
    end = end or start
    first, last = lines[start - 1], lines[end - 1]
    return Span(start, len(first) - len(first.lstrip()) + 1, end, len(last.rstrip()) + 1)


# -- find_creation ---------------------------------------------------------------------------

HEADER = "import torch\nimport torch.nn as nn\n"

# (source, class qualname, attr, regex of the expected first line or None, via, dynamic)
CREATIONS = {
    "plain": ("""
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc =", Via.ASSIGN, False),
    "annotated": ("""
        class Net(nn.Module):
            def __init__(self):
                self.fc: nn.Linear = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc: nn", Via.ASSIGN, False),
    "annotation-only-then-assign": ("""
        class Net(nn.Module):
            def __init__(self):
                self.fc: nn.Linear
                self.fc = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc = ", Via.ASSIGN, False),
    "tuple-unpacking": ("""
        class Net(nn.Module):
            def __init__(self):
                self.a, self.b = nn.Linear(1, 2), nn.Linear(3, 4)
        """, "Net", "b", r"self\.a, self\.b", Via.ASSIGN, False),
    "nested-tuple-unpacking": ("""
        class Net(nn.Module):
            def __init__(self):
                (self.a, [self.b, *self.c]) = make()
        """, "Net", "c", r"\(self\.a,", Via.ASSIGN, False),
    "chained-assignment": ("""
        class Net(nn.Module):
            def __init__(self):
                self.a = self.b = nn.Linear(1, 2)
        """, "Net", "b", r"self\.a = self\.b", Via.ASSIGN, False),
    "add_module": ("""
        class Net(nn.Module):
            def __init__(self):
                self.add_module("fc", nn.Linear(2, 3))
        """, "Net", "fc", r"self\.add_module", Via.ADD_MODULE, False),
    "add_module-keywords": ("""
        class Net(nn.Module):
            def __init__(self):
                self.add_module(module=nn.Linear(2, 3), name="fc")
        """, "Net", "fc", r"self\.add_module", Via.ADD_MODULE, False),
    "register_module": ("""
        class Net(nn.Module):
            def __init__(self):
                self.register_module("fc", nn.Linear(2, 3))
        """, "Net", "fc", r"self\.register_module", Via.REGISTER_MODULE, False),
    "register_buffer": ("""
        class Net(nn.Module):
            def __init__(self):
                self.register_buffer("mean", torch.zeros(3), persistent=False)
        """, "Net", "mean", r"self\.register_buffer", Via.REGISTER_BUFFER, False),
    "register_parameter": ("""
        class Net(nn.Module):
            def __init__(self):
                self.register_parameter(name="scale", param=nn.Parameter(torch.ones(1)))
        """, "Net", "scale", r"self\.register_parameter", Via.REGISTER_PARAMETER, False),
    "register_buffer-in-expression": ("""
        class Net(nn.Module):
            def __init__(self):
                handle = self.register_buffer("mean", torch.zeros(3))
        """, "Net", "mean", r"handle = ", Via.REGISTER_BUFFER, False),
    "setattr-literal": ("""
        class Net(nn.Module):
            def __init__(self):
                setattr(self, "fc", nn.Linear(2, 3))
        """, "Net", "fc", r"setattr", Via.SETATTR, False),
    "dunder-setattr": ("""
        class Net(nn.Module):
            def __init__(self):
                self.__setattr__("fc", nn.Linear(2, 3))
        """, "Net", "fc", r"self\.__setattr__", Via.SETATTR, False),
    "modules-registry": ("""
        class Net(nn.Module):
            def __init__(self):
                self._modules["fc"] = nn.Linear(2, 3)
        """, "Net", "fc", r"self\._modules", Via.REGISTRY, False),
    "setattr-fstring-dynamic": ("""
        class Net(nn.Module):
            def __init__(self, n):
                for i in range(n):
                    setattr(self, f"layer{i}", nn.Linear(2, 2))
        """, "Net", "layer3", r"setattr", Via.SETATTR, True),
    "setattr-fstring-cannot-match": ("""
        class Net(nn.Module):
            def __init__(self, n):
                for i in range(n):
                    setattr(self, f"layer{i}", nn.Linear(2, 2))
        """, "Net", "head", None, None, False),
    "add_module-variable-dynamic": ("""
        class Net(nn.Module):
            def __init__(self, names):
                for name in names:
                    self.add_module(name, nn.Linear(2, 2))
        """, "Net", "encoder", r"self\.add_module", Via.ADD_MODULE, True),
    "literal-beats-dynamic": ("""
        class Net(nn.Module):
            def __init__(self, names):
                for name in names:
                    self.add_module(name, nn.Linear(2, 2))
                self.add_module("head", nn.Linear(2, 2))
        """, "Net", "head", r"self\.add_module\(\"head\"", Via.ADD_MODULE, False),
    "literal-name-mismatch": ("""
        class Net(nn.Module):
            def __init__(self):
                self.add_module("fc1", nn.Linear(2, 3))
                setattr(self, "fc2", nn.Linear(2, 3))
        """, "Net", "fc", None, None, False),
    "parameter": ("""
        class Net(nn.Module):
            def __init__(self):
                self.scale = nn.Parameter(torch.ones(3))
        """, "Net", "scale", r"self\.scale =", Via.ASSIGN, False),
    "self-named-differently": ("""
        class Net(nn.Module):
            def __init__(this, d):
                super().__init__()
                this.fc = nn.Linear(d, d)
        """, "Net", "fc", r"this\.fc =", Via.ASSIGN, False),
    "other-object-is-not-self": ("""
        class Net(nn.Module):
            def __init__(self, other):
                other.fc = nn.Linear(2, 3)
                self.block.fc = nn.Linear(2, 3)
                setattr(other, "fc", nn.Linear(2, 3))
        """, "Net", "fc", None, None, False),
    "augmented-is-not-creation": ("""
        class Net(nn.Module):
            def __init__(self):
                self.fc += 1
        """, "Net", "fc", None, None, False),
    "class-attribute-is-not-child": ("""
        class Net(nn.Module):
            fc = nn.Linear(2, 3)
        """, "Net", "fc", None, None, False),
    "staticmethod-first-param-is-not-self": ("""
        class Net(nn.Module):
            @staticmethod
            def init(module):
                module.fc = nn.Linear(2, 3)
        """, "Net", "fc", None, None, False),
    "inherited-is-not-here": ("""
        class Base(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 3)

        class Child(Base):
            def __init__(self):
                super().__init__()
                self.head = nn.Linear(3, 1)
        """, "Child", "fc", None, None, False),
    "base-class-queried": ("""
        class Base(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 3)

        class Child(Base):
            def __init__(self):
                super().__init__()
        """, "Base", "fc", r"self\.fc =", Via.ASSIGN, False),
    "helper-call": ("""
        def make_linear(d):
            return nn.Linear(d, d)

        class Net(nn.Module):
            def __init__(self):
                self.fc = make_linear(3)
        """, "Net", "fc", r"self\.fc = make_linear", Via.ASSIGN, False),
    "decorated-class": ("""
        @register("net")
        @dataclass_like
        class Net(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc =", Via.ASSIGN, False),
    "nested-class-inner": ("""
        class Outer(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(1, 1)

            class Inner(nn.Module):
                def __init__(self):
                    self.fc = nn.Linear(2, 2)
        """, "Outer.Inner", "fc", r"self\.fc = nn\.Linear\(2, 2\)", Via.ASSIGN, False),
    "nested-class-outer-skips-inner": ("""
        class Outer(nn.Module):
            class Inner(nn.Module):
                def __init__(self):
                    self.fc = nn.Linear(2, 2)

            def __init__(self):
                self.fc = nn.Linear(1, 1)
        """, "Outer", "fc", r"self\.fc = nn\.Linear\(1, 1\)", Via.ASSIGN, False),
    "class-in-function": ("""
        def build(d):
            class Net(nn.Module):
                def __init__(self):
                    self.fc = nn.Linear(d, d)
            return Net()
        """, "build.<locals>.Net", "fc", r"self\.fc =", Via.ASSIGN, False),
    "class-in-function-needs-locals": ("""
        def build(d):
            class Net(nn.Module):
                def __init__(self):
                    self.fc = nn.Linear(d, d)
            return Net()
        """, "Net", "fc", None, None, False),
    "other-method": ("""
        class Net(nn.Module):
            def __init__(self):
                self.build()

            def build(self):
                self.head = nn.Linear(2, 3)
        """, "Net", "head", r"self\.head =", Via.ASSIGN, False),
    "init-preferred-over-earlier-method": ("""
        class Net(nn.Module):
            def reset(self, fc):
                self.fc = fc

            def __init__(self):
                self.fc = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc = nn", Via.ASSIGN, False),
    "first-in-source-order": ("""
        class Net(nn.Module):
            def __init__(self, wide):
                if wide:
                    self.fc = nn.Linear(2, 30)
                else:
                    self.fc = nn.Linear(2, 3)
        """, "Net", "fc", r"self\.fc = nn\.Linear\(2, 30\)", Via.ASSIGN, False),
    "placeholder-loses": ("""
        class Net(nn.Module):
            def __init__(self, proj):
                self.proj = nn.Identity()
                if proj:
                    self.proj = nn.Linear(2, 3)
        """, "Net", "proj", r"self\.proj = nn\.Linear", Via.ASSIGN, False),
    "closure-inside-init": ("""
        class Net(nn.Module):
            def __init__(self):
                def make():
                    self.fc = nn.Linear(2, 3)
                make()
        """, "Net", "fc", r"self\.fc =", Via.ASSIGN, False),
    "one-line-suite": ("""
        class Net(nn.Module):
            def __init__(self, bias):
                if bias: self.bias = nn.Parameter(torch.zeros(3))
        """, "Net", "bias", r"self\.bias =", Via.ASSIGN, False),
    "unknown-class": ("""
        class Net(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 3)
        """, "Other", "fc", None, None, False),
}


@pytest.mark.parametrize(("source", "qualname", "attr", "expected", "via", "dynamic"),
                         list(CREATIONS.values()), ids=list(CREATIONS))
def test_find_creation(tmp_path: Path, source: str, qualname: str, attr: str,
                       expected: str | None, via: Via | None, dynamic: bool) -> None:
    path = write(tmp_path, HEADER + textwrap.dedent(source))
    creation = SourceIndex().find_creation(path, qualname, attr)
    if expected is None:
        assert creation is None
        return
    text = path.read_text()
    assert creation is not None
    line = line_of(text, expected)
    match = re.search(expected, text.splitlines()[line - 1])
    assert match is not None
    assert creation.span == replace(statement_span(text, line), column=match.start() + 1)
    assert (creation.via, creation.dynamic) == (via, dynamic)


def test_creation_spans_value_and_others(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        class Net(nn.Module):
            def __init__(self, wide):
                self.a, self.b = nn.Linear(1, 2), nn.Linear(3, 4)
                if wide:
                    self.c = nn.Linear(
                        2, 30)
                else:
                    self.c = nn.Linear(2, 3)
                self.d, self.e = pair()
        """)
    index = SourceIndex()
    b = index.find_creation(path, "Net", "b")
    assert b is not None and b.value == Span(3, 43, 3, 58)  # `nn.Linear(3, 4)`
    c = index.find_creation(path, "Net", "c")
    assert c == Creation(Span(5, 13, 6, 23), Via.ASSIGN, Span(5, 22, 6, 23),
                         others=(Span(8, 13, 8, 37),))
    e = index.find_creation(path, "Net", "e")
    assert e is not None and e.value is None  # the pair is built elsewhere
    assert c.span.location("src/model.py", "static") == Location(
        "src/model.py", 5, 13, 6, 23, "static")


# -- statement_at ----------------------------------------------------------------------------

STATEMENT_SOURCE = """\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(
            d,
            4 * d,
        )
        # a comment
        for i in range(3):
            x = 1; y = 2
        if d: z = 3
        with open(
                "f") as f:
            pass
"""

# (line asked, expected span or None)
STATEMENTS = {
    "first-line": (7, Span(7, 9, 10, 10)),
    "middle-line": (8, Span(7, 9, 10, 10)),
    "changed-argument": (9, Span(7, 9, 10, 10)),
    "closing-paren": (10, Span(7, 9, 10, 10)),
    "simple": (6, Span(6, 9, 6, 27)),
    "comment": (11, None),
    "blank": (2, None),
    "compound-header": (12, Span(12, 9, 12, 27)),
    "first-of-two-on-a-line": (13, Span(13, 13, 13, 18)),
    "one-line-suite": (14, Span(14, 15, 14, 20)),
    "multi-line-header": (16, Span(15, 9, 16, 27)),
    "def-header": (5, Span(5, 5, 5, 27)),
    "class-header": (4, Span(4, 1, 4, 22)),
    "past-the-end": (99, None),
}


@pytest.mark.parametrize(("line", "expected"), list(STATEMENTS.values()), ids=list(STATEMENTS))
def test_statement_at(tmp_path: Path, line: int, expected: Span | None) -> None:
    path = write(tmp_path, STATEMENT_SOURCE)
    assert SourceIndex().statement_at(path, line) == expected


# -- find_element ----------------------------------------------------------------------------

# (assignment inside __init__, attr, index, regex of the expected element's line or None)
ELEMENTS = {
    "sequential": ("self.seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))",
                   "seq", 2, r"nn\.Linear\(3, 1\)"),
    "sequential-str-index": ("self.seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())",
                             "seq", "1", r"nn\.ReLU\(\)"),
    "sequential-single-module": ("self.seq = nn.Sequential(nn.Linear(2, 3))",
                                 "seq", 0, r"nn\.Linear\(2, 3\)"),
    "sequential-ordereddict": (
        "self.seq = nn.Sequential(OrderedDict([('conv', nn.Conv2d(1, 2, 3)), ('act', nn.ReLU())]))",
        "seq", "act", r"nn\.ReLU\(\)"),
    "sequential-ordereddict-by-position-is-unknown": (
        "self.seq = nn.Sequential(OrderedDict([('conv', nn.Conv2d(1, 2, 3))]))",
        "seq", 0, None),
    "sequential-from-variable": ("self.seq = nn.Sequential(layers)", "seq", 0, None),
    "sequential-star": ("self.seq = nn.Sequential(*layers)", "seq", 0, None),
    "sequential-before-star": ("self.seq = nn.Sequential(nn.Linear(2, 3), *rest)",
                               "seq", 0, r"nn\.Linear"),
    "sequential-after-star": ("self.seq = nn.Sequential(nn.Linear(2, 3), *rest, nn.ReLU())",
                              "seq", 2, None),
    "modulelist": ("self.blocks = nn.ModuleList([nn.Linear(1, 1), nn.Linear(2, 2)])",
                   "blocks", 1, r"nn\.Linear\(2, 2\)"),
    "modulelist-tuple": ("self.blocks = nn.ModuleList((nn.Linear(1, 1), nn.Linear(2, 2)))",
                         "blocks", 0, r"nn\.Linear\(1, 1\)"),
    "modulelist-comprehension": (
        "self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(4)])", "blocks", 0, None),
    "modulelist-from-variable": ("self.blocks = nn.ModuleList(layers)", "blocks", 0, None),
    "modulelist-empty-then-append": ("self.blocks = nn.ModuleList()", "blocks", 0, None),
    "modulelist-out-of-range": ("self.blocks = nn.ModuleList([nn.Linear(1, 1)])",
                                "blocks", 5, None),
    "moduledict": ("self.heads = nn.ModuleDict({'cls': nn.Linear(2, 3), 'box': nn.Linear(2, 4)})",
                   "heads", "box", r"nn\.Linear\(2, 4\)"),
    "moduledict-pairs": ("self.heads = nn.ModuleDict([('cls', nn.Linear(2, 3))])",
                         "heads", "cls", r"nn\.Linear\(2, 3\)"),
    "moduledict-dict-call": ("self.heads = nn.ModuleDict(dict(cls=nn.Linear(2, 3)))",
                             "heads", "cls", r"nn\.Linear\(2, 3\)"),
    "moduledict-unpacked-key-is-unknown": (
        "self.heads = nn.ModuleDict({'cls': nn.Linear(2, 3), **extra})", "heads", "cls", None),
    "moduledict-computed-key-is-unknown": (
        "self.heads = nn.ModuleDict({'cls': nn.Linear(2, 3), name: nn.ReLU()})",
        "heads", "cls", None),
    "parameterlist": ("self.ps = nn.ParameterList([nn.Parameter(torch.ones(1))])",
                      "ps", 0, r"nn\.Parameter\("),
    "helper-call": ("self.layer1 = self._make_layer(64, 3)", "layer1", 0, None),
    "nested-path": ("self.seq = nn.Sequential(nn.Sequential(nn.Linear(1, 1), nn.ReLU()))",
                    "seq", (0, 1), r"nn\.ReLU"),
    "not-a-container": ("self.fc = nn.Linear(2, 3)", "fc", 0, None),
}


@pytest.mark.parametrize(("statement", "attr", "index", "expected"),
                         list(ELEMENTS.values()), ids=list(ELEMENTS))
def test_find_element(tmp_path: Path, statement: str, attr: str, index: object,
                      expected: str | None) -> None:
    source = (HEADER + "from collections import OrderedDict\n\n"
              "class Net(nn.Module):\n    def __init__(self, layers, rest, extra, name):\n"
              f"        {statement}\n")
    path = write(tmp_path, source)
    span = SourceIndex().find_element(path, "Net", attr, index)  # type: ignore[arg-type]
    if expected is None:
        assert span is None
        return
    assert span is not None
    match = re.search(expected, source)
    assert match is not None
    assert (span.line, span.column) == (source[:match.start()].count("\n") + 1,
                                        match.start() - source.rfind("\n", 0, match.start()))


def test_find_element_multi_line_and_dynamic(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        class Net(nn.Module):
            def __init__(self):
                self.seq = nn.Sequential(
                    nn.Linear(
                        2, 3),
                    nn.ReLU(),
                )
                setattr(self, f"block{0}", nn.Sequential(nn.ReLU()))
        """)
    index = SourceIndex()
    assert index.find_element(path, "Net", "seq", 0) == Span(4, 13, 5, 22)
    assert index.find_element(path, "Net", "seq", 1) == Span(6, 13, 6, 22)
    assert index.find_element(path, "Net", "block0", 0) is None  # dynamic: never an element


# -- class_span ------------------------------------------------------------------------------

CLASS_SOURCE = """\
import torch.nn as nn


@register(
    "net")
class Net(nn.Module):
    class Inner(nn.Module):  # trailing comment
        pass


def build():
    class Local(
        nn.Module,
    ):
        ...
"""

CLASSES = {
    "decorated": ("Net", Span(6, 1, 6, 22)),
    "nested": ("Net.Inner", Span(7, 5, 7, 28)),
    "in-function-multi-line": ("build.<locals>.Local", Span(12, 5, 14, 7)),
    "missing": ("Nope", None),
}


@pytest.mark.parametrize(("qualname", "expected"), list(CLASSES.values()), ids=list(CLASSES))
def test_class_span(tmp_path: Path, qualname: str, expected: Span | None) -> None:
    assert SourceIndex().class_span(write(tmp_path, CLASS_SOURCE), qualname) == expected


def test_class_span_one_line_body(tmp_path: Path) -> None:
    path = write(tmp_path, "class A(B): ...\n")
    assert SourceIndex().class_span(path, "A") == Span(1, 1, 1, 12)


# -- suppressions ----------------------------------------------------------------------------

SUPPRESSIONS = {
    "trailing": ("self.fc = nn.Linear(2, 3)  # ckptlint: ignore[CKL101, CKL103]",
                 {"CKL101", "CKL103"}),
    "bare": ("self.fc = nn.Linear(2, 3)  # ckptlint: ignore", {"*"}),
    "line-above": ("# ckptlint: ignore[CKL103]\n        self.fc = nn.Linear(2, 3)", {"CKL103"}),
    "inside-multi-line-call": ("self.fc = nn.Linear(\n            2,  # ckptlint:ignore[CKL103]\n"
                               "            3)", {"CKL103"}),
    "after-other-comment": ("self.fc = nn.Linear(2, 3)  # noqa: E501  # ckptlint: ignore[CKL1]",
                            {"CKL1"}),
    "empty-brackets": ("self.fc = nn.Linear(2, 3)  # ckptlint: ignore[]", set()),
    "none": ("self.fc = nn.Linear(2, 3)  # a plain comment", set()),
    "string-is-not-comment": ("self.fc = f('# ckptlint: ignore')", set()),
    "previous-statement-trailing": (
        "x = 1  # ckptlint: ignore[CKL101]\n        self.fc = nn.Linear(2, 3)", set()),
    "two-lines-above": ("# ckptlint: ignore\n\n        self.fc = nn.Linear(2, 3)", set()),
    "not-a-directive": ("self.fc = nn.Linear(2, 3)  # ckptlint: ignored", set()),
}


@pytest.mark.parametrize(("statements", "expected"), list(SUPPRESSIONS.values()),
                         ids=list(SUPPRESSIONS))
def test_suppressions(tmp_path: Path, statements: str, expected: set[str]) -> None:
    path = write(tmp_path, HEADER + "class Net(nn.Module):\n    def __init__(self):\n"
                 f"        {statements}\n")
    index = SourceIndex()
    creation = index.find_creation(path, "Net", "fc")
    assert creation is not None
    assert index.suppressions(path, creation.span) == expected


# -- the cache and broken files --------------------------------------------------------------

def test_each_file_is_parsed_once(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + textwrap.dedent(CREATIONS["plain"][0]))
    other = write(tmp_path, HEADER + textwrap.dedent(CREATIONS["add_module"][0]),
                  "other.py")
    index = SourceIndex()
    for _ in range(3):
        assert index.find_creation(path, "Net", "fc") is not None
        assert index.statement_at(path, 6) is not None
        assert index.class_span(path, "Net") is not None
    parsed = index.parsed(path)
    assert parsed is not None and parsed.lines[:2] == ("import torch", "import torch.nn as nn")
    assert index.parses == 1
    # the same file through another spelling of its path is still one entry
    assert index.find_creation(tmp_path / "." / "model.py", "Net", "fc") is not None
    assert index.find_creation(other, "Net", "fc") is not None
    assert index.parses == 2


@pytest.mark.parametrize("content", ["class Net(nn.Module:\n    pass\n", b"\xff\xfe\x00bad"],
                         ids=["syntax-error", "undecodable"])
def test_unparsable_file_answers_nothing(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "broken.py"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    index = SourceIndex()
    assert index.statement_at(path, 1) is None
    assert index.find_creation(path, "Net", "fc") is None
    assert index.find_element(path, "Net", "fc", 0) is None
    assert index.class_span(path, "Net") is None
    assert index.suppressions(path, Span(1, 1, 1, 2)) == frozenset()
    assert index.parses == 1  # the failure is remembered, not retried


def test_missing_file_answers_nothing(tmp_path: Path) -> None:
    assert SourceIndex().find_creation(tmp_path / "nope.py", "Net", "fc") is None


# -- transformers' own models ----------------------------------------------------------------

transformers = pytest.importorskip("transformers")
MODELS = Path(transformers.__file__).parent / "models"
FILES = {"bert": "bert/modeling_bert.py", "gpt2": "gpt2/modeling_gpt2.py",
         "llama": "llama/modeling_llama.py", "vit": "vit/modeling_vit.py"}


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceIndex, dict[str, Path]]:
    """Copies of the modeling files and one index shared by every test below."""
    root = tmp_path_factory.mktemp("hf")
    paths = {name: Path(shutil.copy(MODELS / rel, root / f"{name}.py"))
             for name, rel in FILES.items()}
    return SourceIndex(), paths


def class_line(text: str, qualname: str) -> int:
    return line_of(text, rf"^class {re.escape(qualname)}\b")


# (file, class, attr, regex of the creating line, searched below the class header)
REAL_CREATIONS = {
    "bert-query": ("bert", "BertSelfAttention", "query", r"self\.query = nn\.Linear\("),
    "bert-cross-query": ("bert", "BertCrossAttention", "query", r"self\.query = nn\.Linear\("),
    "bert-position-ids-buffer": ("bert", "BertEmbeddings", "position_ids",
                                 r"self\.position_ids = |register_buffer\(\s*\"position_ids\""),
    "bert-lm-bias-parameter": ("bert", "BertLMPredictionHead", "bias",
                               r"self\.bias = nn\.Parameter\("),
    "bert-encoder-layers": ("bert", "BertEncoder", "layer", r"self\.layer = nn\.ModuleList\("),
    "llama-gate-proj": ("llama", "LlamaMLP", "gate_proj", r"self\.gate_proj = nn\.Linear\("),
    "llama-q-proj-multi-line": ("llama", "LlamaAttention", "q_proj",
                                r"self\.q_proj = nn\.Linear\("),
    "llama-inv-freq-buffer": ("llama", "LlamaRotaryEmbedding", "inv_freq",
                              r"self\.inv_freq = |register_buffer\(\s*\"inv_freq\""),
    "llama-rmsnorm-weight": ("llama", "LlamaRMSNorm", "weight", r"self\.weight = nn\.Parameter\("),
    "llama-layers": ("llama", "LlamaModel", "layers", r"self\.layers = nn\.ModuleList\("),
    "llama-lm-head": ("llama", "LlamaForCausalLM", "lm_head", r"self\.lm_head = nn\.Linear\("),
    "gpt2-c-attn-first-branch": ("gpt2", "GPT2Attention", "c_attn", r"self\.c_attn = Conv1D\("),
    "gpt2-summary-not-identity": ("gpt2", "GPT2SequenceSummary", "summary",
                                  r"self\.summary = nn\.Linear\("),
    "gpt2-wte-init-over-setter": ("gpt2", "GPT2Model", "wte", r"self\.wte = nn\.Embedding\("),
    "gpt2-blocks": ("gpt2", "GPT2Model", "h", r"self\.h = nn\.ModuleList\("),
    "vit-cls-token": ("vit", "ViTEmbeddings", "cls_token", r"self\.cls_token = nn\.Parameter\("),
    "vit-mask-token-conditional": ("vit", "ViTEmbeddings", "mask_token",
                                   r"self\.mask_token = nn\.Parameter\(.* if "),
    "vit-decoder": ("vit", "ViTForMaskedImageModeling", "decoder",
                    r"self\.decoder = nn\.Sequential\("),
}


@pytest.mark.parametrize(("name", "qualname", "attr", "pattern"),
                         list(REAL_CREATIONS.values()), ids=list(REAL_CREATIONS))
def test_real_creation(hf: tuple[SourceIndex, dict[str, Path]], name: str, qualname: str,
                       attr: str, pattern: str) -> None:
    index, paths = hf
    text = paths[name].read_text()
    expected = line_of(text, pattern, after=class_line(text, qualname))
    creation = index.find_creation(paths[name], qualname, attr)
    assert creation is not None and not creation.dynamic
    start = statement_span(text, expected)
    assert (creation.span.line, creation.span.column) == (start.line, start.column)
    # the span is exactly the statement: it ends where its last line does
    last = text.splitlines()[creation.span.end_line - 1]
    assert creation.span.end_column == len(last.rstrip()) + 1


def test_real_multi_line_statement(hf: tuple[SourceIndex, dict[str, Path]]) -> None:
    index, paths = hf
    text = paths["llama"].read_text()
    start = line_of(text, r"self\.q_proj = nn\.Linear\(", after=class_line(text, "LlamaAttention"))
    end = line_of(text, r"^\s*\)\s*$", after=start)
    whole = statement_span(text, start, end)
    assert index.find_creation(paths["llama"], "LlamaAttention", "q_proj").span == whole
    for line in range(start, end + 1):
        assert index.statement_at(paths["llama"], line) == whole


def test_real_alternatives(hf: tuple[SourceIndex, dict[str, Path]]) -> None:
    index, paths = hf
    text = paths["gpt2"].read_text()
    first = line_of(text, r"self\.c_attn = Conv1D\(", after=class_line(text, "GPT2Attention"))
    second = line_of(text, r"self\.c_attn = Conv1D\(", after=first)
    creation = index.find_creation(paths["gpt2"], "GPT2Attention", "c_attn")
    assert creation is not None and [s.line for s in creation.others] == [second]
    setter = line_of(text, r"self\.wte = new_embeddings")
    wte = index.find_creation(paths["gpt2"], "GPT2Model", "wte")
    assert wte is not None and setter in [s.line for s in wte.others]


# (file, class, attr, index, regex of the element's line or None)
REAL_ELEMENTS = {
    "llama-layers-comprehension": ("llama", "LlamaModel", "layers", 0, None),
    "gpt2-h-comprehension": ("gpt2", "GPT2Model", "h", 3, None),
    "bert-layer-comprehension": ("bert", "BertEncoder", "layer", 0, None),
    "vit-decoder-conv": ("vit", "ViTForMaskedImageModeling", "decoder", 0, r"nn\.Conv2d\("),
    "vit-decoder-shuffle": ("vit", "ViTForMaskedImageModeling", "decoder", 1,
                            r"nn\.PixelShuffle\("),
    "vit-decoder-out-of-range": ("vit", "ViTForMaskedImageModeling", "decoder", 2, None),
}


@pytest.mark.parametrize(("name", "qualname", "attr", "index", "pattern"),
                         list(REAL_ELEMENTS.values()), ids=list(REAL_ELEMENTS))
def test_real_element(hf: tuple[SourceIndex, dict[str, Path]], name: str, qualname: str,
                      attr: str, index: int, pattern: str | None) -> None:
    source_index, paths = hf
    text = paths[name].read_text()
    span = source_index.find_element(paths[name], qualname, attr, index)
    if pattern is None:
        assert span is None
        return
    assert span is not None
    assert span.line == line_of(text, pattern, after=class_line(text, qualname))


def test_real_class_span_skips_decorators(hf: tuple[SourceIndex, dict[str, Path]]) -> None:
    index, paths = hf
    text = paths["bert"].read_text()
    line = class_line(text, "BertModel")
    assert text.splitlines()[line - 2].strip().startswith((")", "@"))  # it is decorated
    span = index.class_span(paths["bert"], "BertModel")
    assert span == Span(line, 1, line, len(text.splitlines()[line - 1].rstrip()) + 1)


def test_real_files_parsed_once(hf: tuple[SourceIndex, dict[str, Path]]) -> None:
    index, paths = hf
    for path in paths.values():
        index.statement_at(path, 1)
        index.class_span(path, "Nope")
    assert index.parses == len(FILES)


# -- what the cause analysis asks: functions, parts of long statements, committed texts ---------

PARTS = """\
import torch.nn as nn


class FeedForward(nn.Module):
    def __init__(
        self,
        dim,
        mult: int = 4,
    ):
        super().__init__()
        presets = {
            "small": dict(n_layer=6, n_embd=192),
            "large": dict(n_layer=24, n_embd=1024),
        }
        self.fc = nn.Linear(dim, dim * mult)

    def forward(self, x):
        return self.fc(x)
"""


def test_method_header_and_the_function_around_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, PARTS)
    index = SourceIndex()
    header = index.method_header(path, "FeedForward")
    assert header == Span(5, 5, 9, 7)  # `def __init__(` .. `):`
    assert index.method_header(path, "FeedForward", "missing") is None
    init = index.function_at(path, 15)
    assert init == (header, Span(5, 5, 15, 45))
    assert index.function_at(path, 18)[0].line == 17  # forward
    assert index.function_at(path, 1) is None  # module level


def test_next_statement_and_text(tmp_path: Path) -> None:
    path = write(tmp_path, PARTS)
    index = SourceIndex()
    assert index.next_statement(path, 10).line == 11
    assert index.text(path, index.statement_at(path, 15)) == "self.fc = nn.Linear(dim, dim * mult)"


def test_remembered_text_answers_like_a_file_and_is_parsed_once(tmp_path: Path) -> None:
    index = SourceIndex()
    name = index.remember("git:abc123:model.py", PARTS)
    index.remember(name, "ignored: already parsed")
    creation = index.find_creation(name, "FeedForward", "fc")
    assert creation is not None and creation.span.line == 15
    assert index.parses == 1
    assert index.parsed(index.remember("git:abc123:bad.py", "def (")) is None

