"""Where the build saw each layer created: the innermost project line, the project lines that
led to it, and nothing from outside the build (the program that asked for it)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ckptlint.core.records import CREATED, TIED, Site

MODELS = textwrap.dedent("""\
    import torch
    from torch import nn


    def make(width):
        return nn.Linear(width, 2)


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = make(4)
            self.register_buffer("scale", torch.ones(2))
            self.head = nn.Linear(2, 4)
            self.head.weight = self.fc.weight if False else self.head.weight
            self.out = nn.Linear(4, 2)
            self.out.weight = self.fc.weight
    """)

DRIVER = textwrap.dedent("""\
    import sys

    from ckptlint.build.builder import on_meta
    from ckptlint.build.creation import recording


    def sites(root, outside):
        import models
        with recording(root, sys._getframe() if outside else None) as recorder:
            with on_meta():
                net = models.Net()
        return recorder.sites(net)
    """)


@pytest.fixture()
def driver(tmp_path, monkeypatch):
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "driver.py").write_text(DRIVER)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("models", "driver"):
        sys.modules.pop(name, None)
    import driver as module

    yield lambda outside: module.sites(str(tmp_path), outside)
    for name in ("models", "driver"):
        sys.modules.pop(name, None)


def test_sites_name_the_project_lines_and_stop_where_the_build_began(driver):
    sites = driver(True)
    assert sites["fc"] == Site("models.py", 12)
    assert sites["fc.weight"] == Site("models.py", 6, CREATED, (("models.py", 12),))
    assert sites["scale"] == Site("models.py", 13)
    assert sites["out.weight"] == Site("models.py", 17, TIED)
    assert sites["head.weight"].via == CREATED  # set again to itself: not a tie


def test_without_the_build_frame_the_callers_lines_show(driver):
    """The premise of the test above: the driver is a project file, so its frames would be
    on every stack if the walk did not stop where the build began."""
    sites = driver(False)
    assert sites["fc"] == Site("models.py", 12, CREATED, (("driver.py", 11),))


def test_a_build_s_recorder_and_model_are_freed_without_a_full_collection(driver, tmp_path):
    """No cycle runs through the recorder: what it saw goes when the build's result does,
    not at a full collection (paused while builds run)."""
    import gc
    import weakref

    import models

    from ckptlint.build.builder import on_meta
    from ckptlint.build.creation import recording

    gc.disable()
    try:
        with recording(str(tmp_path), sys._getframe()) as recorder:
            with on_meta():
                net = models.Net()
        sites = recorder.sites(net)
        gone = weakref.ref(recorder), weakref.ref(net)
        del recorder, net
        assert [ref() for ref in gone] == [None, None]
        assert sites["fc"].line == 12
    finally:
        gc.enable()


def test_a_child_forked_inside_a_pause_collects_fully_again():
    import gc

    from ckptlint.core.collector import resume_full_collections, young_collections_only

    before = gc.get_threshold()
    with young_collections_only():
        with young_collections_only():
            resume_full_collections()  # what a build child does first
            assert gc.get_threshold() == before
    assert gc.get_threshold() == before


# Each construct moves a frame between two notes in a way the chain of the last walk must not
# hide: a helper called from several lines, a generator resumed from different lines and by
# different callers, a coroutine, recursion deeper than the stack kept, layers built on another
# thread, and a loop over one line.
TRICKY = textwrap.dedent("""\
    import threading

    from torch import nn


    def helper(width):
        return nn.Linear(width, width)


    def layers(n):
        for i in range(n):
            yield nn.Linear(i + 1, 1)


    def deep(n):
        if n == 0:
            return nn.Linear(1, 1)
        if n % 2:
            return deep(n - 1)
        return deep(n - 1)


    async def later():
        return nn.Linear(3, 3)


    class Tricky(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = helper(1)
            self.b = helper(2)
            gen = layers(4)
            self.c = next(gen)
            self.d = next(gen)
            self.seq = nn.Sequential(*[next(gen) for _ in range(2)])
            gen = layers(2)
            first = next(gen)
            second = next(gen)
            self.pair = nn.Sequential(first, second)
            self.e = deep(30)
            self.f = deep(2)
            coroutine = later()
            try:
                coroutine.send(None)
            except StopIteration as done:
                self.g = done.value
            box = []
            worker = threading.Thread(target=lambda: box.append(helper(5)))
            worker.start()
            worker.join()
            self.h = box[0]
            self.loop = nn.ModuleList()
            for i in range(3):
                self.loop.append(helper(i + 1))
            self.i = helper(6)
    """)


def test_reusing_the_last_walk_gives_the_sites_a_full_walk_gives(tmp_path, monkeypatch):
    from ckptlint.build import creation
    from ckptlint.build.builder import on_meta

    (tmp_path / "tricky.py").write_text(TRICKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tricky", None)
    import tricky

    def sites():
        with creation.recording(str(tmp_path), sys._getframe()) as recorder:
            with on_meta():
                model = tricky.Tricky()
        return recorder.sites(model)

    reused = sites()
    monkeypatch.setattr(creation._Chain, "reusable", lambda self, frame: False)
    walked = sites()
    sys.modules.pop("tricky", None)
    assert reused == walked
    # the cases are really there: a generator resumed at two lines, the thread's helper
    line = {text.strip(): n for n, text in enumerate(TRICKY.splitlines(), 1)}
    assert reused["c.weight"].stack[-1] != reused["d.weight"].stack[-1]
    assert reused["pair.0.weight"].stack[0] == ("tricky.py", line["first = next(gen)"])
    assert reused["pair.1.weight"].stack[0] == ("tricky.py", line["second = next(gen)"])
    assert (reused["h.weight"].file, reused["h.weight"].line) == \
        ("tricky.py", line["return nn.Linear(width, width)"])
    assert len(reused["e.weight"].stack) == creation.MAX_STACK
    assert {reused[f"loop.{i}.weight"].stack[0] for i in range(3)} == \
        {("tricky.py", line["self.loop.append(helper(i + 1))"])}
