"""What the cold path pays for: `inspect` in a project compares committed signatures and
imports no torch; `--build` asks for the code as it is now."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

NET = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(width, 2)
'''


def _inspect(project, *argv: str) -> tuple[str, bool]:
    code = ("import sys\nfrom ckptlint.commands.cli import main\nmain(['inspect', *sys.argv[1:]])\n"
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=project.root,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    *shown, last = out.splitlines()
    return "\n".join(shown), last == "TORCH True"


def test_inspect_in_a_project_fits_from_committed_signatures_without_torch(project):
    project.write("models.py", NET)
    project.configure('name = "net"\ntarget = "models:Net"',
                      'name = "wide"\ntarget = "models:Net"\nkwargs = { width = 8 }')
    assert project.run("update").code == 0
    save_file({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)},
              str(project.root / "x.safetensors"))
    shown, loaded = _inspect(project, "x.safetensors")
    assert not loaded
    assert "net: loads strictly" in shown and "wide: does not load" in shown
    # the code changed since the signatures were committed: only --build sees it
    project.write("models.py", NET.replace("nn.Linear(width, 2)", "nn.Linear(width, 3)"))
    shown, loaded = _inspect(project, "x.safetensors", "--build")
    assert loaded and "net: does not load" in shown


# what `inspect FILE` in a project has no use for: each was on its path once, and each is
# loaded by the runs that do use it (a URL, a write, the cache, a pickle, a failure)
_NOT_FOR_INSPECT = ("torch", "dataclasses", "inspect", "hashlib", "tempfile", "traceback", "shutil",
                    "libcst", "ckptlint.run.cache",
                    "ckptlint.readers.remote", "ckptlint.readers.pickled",
                    "ckptlint.reporters.json", "ckptlint.compare.selection")


def test_inspect_of_a_safetensors_file_loads_only_what_it_uses(project):
    """The modules loaded by `python -m ckptlint inspect x.safetensors` in a project, read
    from `-X importtime` with bytecode caching on (as users run it)."""
    project.write("models.py", NET)
    project.configure('name = "net"\ntarget = "models:Net"')
    assert project.run("update").code == 0
    save_file({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)},
              str(project.root / "x.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(2):  # the second run reads the bytecode the first one wrote
        run = subprocess.run([sys.executable, "-X", "importtime", "-m", "ckptlint", "inspect",
                              "x.safetensors"], cwd=project.root, capture_output=True,
                             text=True, timeout=300, env=env)
    assert run.returncode == 0 and "net: loads strictly" in run.stdout, run.stdout + run.stderr
    loaded = {line.rpartition("|")[2].strip() for line in run.stderr.splitlines()
              if line.startswith("import time:")}
    assert "ckptlint.run.fit" in loaded  # the fit comparison itself did run
    assert sorted(set(_NOT_FOR_INSPECT) & loaded) == []


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True).stdout.strip()


def test_torch_is_imported_with_the_collector_paused_and_its_objects_frozen():
    """The assumption beside `import_torch`: what the import made is frozen, the collector is
    back on afterwards, and what is made later (a model's cycles) is still collected."""
    out = _fresh(
        "import gc, weakref\n"
        "from ckptlint.build.loadtorch import import_torch\n"
        "torch = import_torch()\n"
        "frozen = gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "alive = weakref.ref(a)\n"
        "del a, b\n"
        "gc.collect()\n"
        "print(gc.isenabled(), frozen > 100_000, alive() is None, import_torch() is torch)")
    assert out == "True True True True"


def test_a_paused_collector_stays_paused_after_torch_is_imported():
    out = _fresh("import gc\ngc.disable()\n"
                 "from ckptlint.build.loadtorch import import_torch\nimport_torch()\n"
                 "print(gc.isenabled())")
    assert out == "False"


def test_the_garbage_torch_leaves_at_import_is_small():
    """Freezing keeps the import's own garbage (cycles it dropped) until exit: measured, not
    assumed, to be a few thousand small objects."""
    out = _fresh("import gc, sys\ngc.disable()\nimport torch\ngc.set_debug(gc.DEBUG_SAVEALL)\n"
                 "gc.collect()\nprint(sum(sys.getsizeof(o) for o in gc.garbage))")
    assert int(out) < 8_000_000


def test_pausing_full_collections_keeps_young_ones_and_restores_the_thresholds():
    import gc
    import weakref

    from ckptlint.core.collector import young_collections_only

    class Node:
        pass

    before = gc.get_threshold()
    try:
        with young_collections_only():
            paused = gc.get_threshold()
            a, b = Node(), Node()
            a.other, b.other = b, a
            alive = weakref.ref(a)
            del a, b
            gc.collect(0)  # a young collection, as allocations trigger
            assert alive() is None
            raise KeyError("out through an exception")
    except KeyError:
        pass
    assert paused[:2] == before[:2] and paused[2] > 10 ** 6
    assert gc.get_threshold() == before
