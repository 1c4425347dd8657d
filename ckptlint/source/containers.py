"""The elements of literal containers (`nn.Sequential(...)`, `nn.ModuleList([...])`, dicts and
`OrderedDict`s): which expression creates the layer at a given index or key."""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from ckptlint.source.spans import Index


_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict", "ParameterList",
                         "ParameterDict"})


_DICT_BUILDERS = frozenset({"OrderedDict", "dict"})


def starred(element: cst.BaseElement | cst.BaseDictElement) -> bool:
    return isinstance(element, (cst.StarredElement, cst.StarredDictElement))


def name_of(expr: cst.BaseExpression) -> str | cst.BaseExpression:
    """The literal string an expression always evaluates to, else the expression itself."""
    if isinstance(expr, (cst.SimpleString, cst.ConcatenatedString)):
        value = expr.evaluated_value
        if isinstance(value, str):
            return value
    return expr


def dotted_name(expr: cst.BaseExpression) -> str | None:
    """`a.b.c` for a chain of names, else None."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        head = dotted_name(expr.value)
        return f"{head}.{expr.attr.value}" if head is not None else None
    return None


def last_part(dotted: str | None) -> str | None:
    return dotted.rpartition(".")[2] if dotted is not None else None


def index_keys(index: Index) -> list[str]:
    if isinstance(index, (int, str)):
        return [str(index)]
    return [str(key) for key in index]


def element_at(node: cst.BaseExpression, key: str) -> cst.BaseExpression | None:
    kind = last_part(dotted_name(node.func)) if isinstance(node, cst.Call) else None
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
        if isinstance(value, cst.Call) and last_part(dotted_name(value.func)) in _DICT_BUILDERS:
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
    name = last_part(dotted_name(expr.func)) if isinstance(expr, cst.Call) else None
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
        if any(_pair(e.value) is not None for e in elements if not starred(e)):
            return _pairs([_pair(e.value) for e in elements]) if _all_pairs(expr) else None
        return _positional([e.value for e in elements], [starred(e) for e in elements])
    if isinstance(expr, cst.Call) and last_part(dotted_name(expr.func)) in _DICT_BUILDERS:
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
            and all(not starred(e) and _pair(e.value) is not None for e in expr.elements))


def _pair(expr: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    if (isinstance(expr, (cst.Tuple, cst.List)) and len(expr.elements) == 2
            and not any(starred(e) for e in expr.elements)
            and isinstance(name_of(expr.elements[0].value), str)):
        return expr.elements[0].value, expr.elements[1].value
    return None


def _pairs(pairs: Sequence[tuple[cst.BaseExpression, cst.BaseExpression] | None],
           ) -> dict[str, cst.BaseExpression] | None:
    # a key not known statically could override a literal one: then nothing is certain
    items: dict[str, cst.BaseExpression] = {}
    for pair in pairs:
        key = name_of(pair[0]) if pair is not None else None
        if pair is None or not isinstance(key, str):
            return None
        items[key] = pair[1]
    return items
