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


@contextlib.contextmanager
def young_collections_only() -> Iterator[None]:
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, oldest)
