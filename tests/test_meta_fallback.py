"""Operations without a meta kernel run alone on the CPU (`build.cpu_fallback`); the model
stays on meta, the result is cached like any other, and the guards send an operation whose
output shape follows its values to the whole-model CPU build instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from ckptlint.readers.sigtoml import read_signature as read

WHISPERISH = '''
import sys

import torch
from torch import nn


class Decoder(nn.Module):
    def __init__(self, n_layer=4, n_head=6, d=16):
        super().__init__()
        print("building Decoder", file=sys.stderr)
        self.blocks = nn.ModuleList(nn.Linear(d, d) for _ in range(n_layer))
        heads = torch.zeros(n_layer, n_head, dtype=torch.bool)
        heads[n_layer // 2:] = True
        self.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
        self.register_buffer("mask", heads.to_sparse())
'''
# an extension-style operator with a CPU kernel only, untagged, whose output length is the
# number of True inputs: zeros of the same shape would give the wrong answer
COUNTING = '''
import torch
from torch import nn

_lib = torch.library.Library("ckl_test", "DEF")
_lib.define("count_true(Tensor x) -> Tensor")
_lib.impl("count_true", lambda x: torch.zeros(int(x.sum())), "CPU")


class Picks(nn.Module):
    def __init__(self):
        super().__init__()
        chosen = torch.zeros(10, dtype=torch.bool)
        chosen[:3] = True
        self.register_buffer("picked", torch.ops.ckl_test.count_true(chosen))
        self.fc = nn.Linear(4, 4)
'''
DECODER = 'name = "decoder"\ntarget = "models:Decoder"'


def _project(project, source: str, entry: str):
    project.write("models.py", source)
    project.configure(entry)
    return project


def test_to_sparse_runs_alone_on_the_cpu_with_one_note_naming_the_line(project):
    _project(project, WHISPERISH, DECODER)
    run = project.run("update")
    assert run.code == 0, run.err
    run = project.run("check", "--format", "json")
    doc = json.loads(run.out)
    assert (run.code, doc["findings"]) == (0, [])
    [note] = doc["models"][0]["notes"]
    assert "`aten::_to_sparse` (called at models.py:14, models.py:15) has no meta kernel" in note
    assert "built on the CPU instead" not in note and "Please see" not in note


def test_the_signature_is_what_a_real_cpu_build_gives(project):
    _project(project, WHISPERISH, DECODER)
    assert project.run("update").code == 0
    namespace: dict = {}
    exec(textwrap.dedent(WHISPERISH), namespace)
    real = namespace["Decoder"]().state_dict()
    recorded = read(project.root / "signatures" / "decoder.toml").tensors
    assert {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in real.items()} \
        == {k: (s.dtype, s.shape) for k, s in recorded.items()}


def test_a_per_operation_fallback_is_cached_like_any_other_build(project):
    _project(project, WHISPERISH, DECODER)
    assert project.run("update").code == 0
    first = project.run("check", "decoder", "--color", "never")  # named: the cache, no replay
    assert first.code == 0 and "building Decoder" in first.err
    again = project.run("check", "decoder", "--color", "never")
    assert again.code == 0 and "building Decoder" not in again.err
    assert again.out == "All clear: 1 model matches its committed signature.\n"


def test_an_operation_whose_shape_follows_its_values_builds_the_whole_model_on_cpu(project):
    _project(project, COUNTING, 'name = "picks"\ntarget = "models:Picks"')
    assert project.run("update").code == 0
    recorded = read(project.root / "signatures" / "picks.toml").tensors
    assert recorded["picked"].shape == (3,)  # the real count, not zeros' 0 or ones' 10
    run = project.run("check", "picks", "--format", "json")
    [note] = json.loads(run.out)["models"][0]["notes"]
    assert "built on the CPU instead" in note and "ckl_test::count_true" in note
    assert len(note) < 300  # torch's compile advice is left out
    rerun = project.run("check", "picks", "--format", "json")
    assert json.loads(rerun.out)["models"][0]["notes"] == [note]  # never cached


def test_an_operation_torch_tags_as_value_dependent_is_not_run_on_stand_ins(project):
    _project(project, WHISPERISH.replace('heads.to_sparse(), persistent=False',
                                         'heads.nonzero(), persistent=False'), DECODER)
    assert project.run("update").code == 0
    [note] = json.loads(project.run("check", "--format", "json").out)["models"][0]["notes"]
    assert "built on the CPU instead" in note and "nonzero" in note


BIG = '''
import torch
from torch import nn


class Big(nn.Module):
    """24 layers of 8192 x 8192: 1.61e9 parameters, 6.4 GB in float32 on the CPU."""

    def __init__(self, n_layer=24, d=8192, n_head=16):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(n_layer))
        heads = torch.zeros(n_layer, n_head, dtype=torch.bool)
        heads[n_layer // 2:] = True
        self.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
'''
MEASURE = '''
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "ckptlint", "update"], capture_output=True,
                      text=True)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(proc.stdout + proc.stderr)
'''


def test_a_big_model_with_a_sparse_buffer_builds_in_a_few_hundred_mb(project):
    _project(project, BIG, 'name = "big"\ntarget = "models:Big"')
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "-c", MEASURE], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=300)
    code, peak_kb = (int(x) for x in proc.stdout.split())
    assert code == 0, proc.stderr
    assert "has no meta kernel" in proc.stderr and "built on the CPU" not in proc.stderr
    signature = read(project.root / "signatures" / "big.toml")
    assert signature.num_parameters == 24 * 8192 * 8192
    print(f"peak RSS of `ckptlint update` on a 1.6e9-parameter model: {peak_kb / 1024:.0f} MB")
    assert peak_kb < 1.5 * 2**20, f"peak RSS {peak_kb / 1024:.0f} MB"


LAZY_IMPORT = """
from torch import nn


class Sharded(nn.Module):
    def __init__(self):
        super().__init__()
        import torch.distributed.tensor  # noqa: F401 - a library importing it on first use
        self.fc = nn.Linear(4, 2)
"""


def test_an_import_the_dynamo_stand_in_upsets_still_builds_on_meta(project):
    """A first `import torch.distributed.tensor` during the build meets the dynamo stand-in
    mid-import and fails; the retry without stand-ins builds on meta, not on the CPU."""
    _project(project, LAZY_IMPORT, 'name = "sharded"\ntarget = "models:Sharded"')
    assert project.run("update").code == 0
    run = project.run("check", "--format", "json", "--no-cache")
    assert run.code == 0, run.out + run.err
    (model,) = json.loads(run.out)["models"]
    assert not [n for n in model.get("notes", []) if "on the CPU" in n], model
