"""Python's cyclic garbage collector, kept from re-walking what a run keeps anyway.

A full (oldest-generation) collection walks every tracked object. A build of 50,000 tensors
makes a quarter of a million long-lived objects (modules, their dicts, parameters, sites),
and the full collections their making triggers, and the ones triggered while the result is
encoded and decoded, cost more than the build's own Python (0.9 s and 0.8 s here, measured with
`gc.callbacks`). Those objects live until the result is sent or the run ends, so walking
them frees nothing.

Assumption, tested in tests/test_cold_path.py: pausing only the full collections loses
nothing but memory held by garbage cycles that outlived two young collections, for the length
of one build or one command; the young collections still run, and the thresholds are put back
afterwards (a full collection then runs as usual once enough has built up).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

_NEVER = 1 << 30  # young collections between full ones: more than any build makes
_OUTER: list[tuple[int, ...]] = []  # the thresholds before each pause still in force


@contextlib.contextmanager
def young_collections_only() -> Iterator[None]:
    before = gc.get_threshold()
    _OUTER.append(before)
    gc.set_threshold(before[0], before[1], _NEVER)
    try:
        yield
    finally:
        if _OUTER:  # (emptied by `resume_full_collections` in a forked child)
            _OUTER.pop()
        gc.set_threshold(*before)


def resume_full_collections() -> None:
    """In a child forked inside a pause: collect fully again, as before the first pause.

    A build child inherits its parent's paused thresholds; it pauses only while each build
    runs, so what one model leaves behind (cycles holding its modules) is freed before the
    next is built, instead of piling up until the child ends.
    """
    if _OUTER:
        gc.set_threshold(*_OUTER[0])
        _OUTER[:] = []
