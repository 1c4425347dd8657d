"""Operations without a meta kernel, run one by one on CPU stand-ins of the same shape and handed
back as meta results (`cpu_fallback`), guarded against value-dependent shapes."""

from __future__ import annotations

import sys
from typing import Any

from ckptlint.build.loadtorch import import_torch
from ckptlint.build.tracking import untracked
from ckptlint.core.paths import PACKAGE_DIR, is_project_file, relative


_OWN_PACKAGE = str(PACKAGE_DIR)


# three fillings of the stand-ins: an output whose shape follows the values (a count of
# nonzero, of distinct, the largest value) differs between them
_STAND_IN_FILLS = ("zeros", "ones", "arange")


def cpu_fallback(root: str) -> Any:
    """A dispatch mode that runs an operation without a meta kernel on CPU stand-ins.

    Assumption: such an operation's output shape, dtype and layout follow from its inputs'
    shapes, dtypes and strides, not from their values. Then running it for real on CPU tensors
    of the same shape (filled with zeros) and moving the result to meta gives exactly the
    meta result torch would have given, had it a meta kernel: shapes and dtypes are right, and
    values mean nothing, as everywhere on meta. Guards, each of which leaves the operation's
    NotImplementedError standing (and the whole model is then built on the CPU): an operation
    torch tags as value-dependent (`nonzero`, `unique`, `masked_select`), one that writes to or
    aliases its inputs, one with a meta input that is not a plain strided tensor or an output
    that is not a tensor (a Python number is a value), and one whose outputs differ between three
    fillings of its inputs (zeros, ones, 0, 1, 2, …): an untagged operation whose shape follows
    the values. Limit: an untagged operation whose shape follows the values in a way none of
    the three fillings shows (a threshold on their sum) would be handed a wrong shape.
    Memory: only that operation's inputs and outputs exist on the CPU, for its duration.
    tests/test_meta_fallback.py tries to break this.
    """
    torch = import_torch()
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

    value_dependent = {torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output}

    def stand_in(t: Any, fill: str) -> Any:
        out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu")
        if fill != "arange":
            return out.fill_(0 if fill == "zeros" else 1)
        values = torch.arange(out.numel()).reshape(out.shape)  # bool: alternating False/True
        return out.copy_(values % 2 if t.dtype == torch.bool else values)

    def layout_of(out: Any) -> tuple | None:
        leaves = tree_flatten(out)[0]
        if not all(isinstance(t, torch.Tensor) for t in leaves):
            return None
        return tuple((t.dtype, tuple(t.shape), t.layout,
                      tuple(t.stride()) if t.layout == torch.strided else ()) for t in leaves)

    def replayed(func: Any, args: tuple, kwargs: dict) -> Any:
        schema = func._schema
        if set(func.tags) & value_dependent or schema.is_mutable or any(
                r.alias_info is not None for r in schema.returns):
            return None
        flat, tree = tree_flatten((args, kwargs))
        metas = [a for a in flat if isinstance(a, torch.Tensor) and a.is_meta]
        if not metas or any(t.layout != torch.strided for t in metas):
            return None
        try:
            outs = []
            for fill in _STAND_IN_FILLS:
                cpu_args, cpu_kwargs = tree_unflatten(
                    [stand_in(a, fill) if any(a is t for t in metas) else a for a in flat], tree)
                outs.append(func(*cpu_args, **cpu_kwargs))
            layouts = {layout_of(out) for out in outs}
            if len(layouts) != 1 or None in layouts:
                return None
            return tree_map(lambda t: t.to("meta"), outs[0])
        except Exception:  # the stand-ins cannot stand in (a dtype fill_ refuses, …): no reply
            return None

    class CpuFallback(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ran: dict[str, list[str]] = {}  # operator -> where the user's code called it

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            try:
                return func(*args, **(kwargs or {}))
            except NotImplementedError:
                result = replayed(func, args, kwargs or {})
                if result is None:
                    raise
                sites = self.ran.setdefault(func._schema.name, [])
                site = _user_site(root)
                if site not in sites:
                    sites.append(site)
                return result

        def note(self, model: str) -> str:
            ran = [f"`{op}` (called at {', '.join(sites[:3])})" for op, sites in self.ran.items()]
            return (f"{model}: {' and '.join(ran)} has no meta kernel, so it ran on CPU tensors "
                    "of the same shape and its result went back to meta; everything else was "
                    "built on meta (shapes and dtypes are exact, values mean nothing, as on meta)")

    return CpuFallback()


def _user_site(root: str) -> str:
    """`file:line` of the innermost frame of the project's own code (not ckptlint's)."""
    frame = sys._getframe(1)
    with untracked():  # ckptlint's own look at the stack is no input of the build
        while frame is not None:
            name = frame.f_code.co_filename
            if not name.startswith(_OWN_PACKAGE) and is_project_file(name, root):
                return f"{relative(name, root)}:{frame.f_lineno}"
            frame = frame.f_back
    return "code outside the project"
