"""End to end: `ckptlint update`, then a change to the model, then `ckptlint check`."""

from __future__ import annotations

import json

import pytest

from ckptlint.readers.sigtoml import read_signature as read

MODEL = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.out(self.fc(self.norm(x)))


class Net(nn.Module):
    def __init__(self, d=16, n=3, classes=5):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
'''

NET = 'name = "net"\ntarget = "models:Net"\nkwargs = { classes = 5 }'

CHANGES = [
    ("widen", [("nn.Linear(d, 4 * d)", "nn.Linear(d, 2 * d)"),
               ("nn.Linear(4 * d, d)", "nn.Linear(2 * d, d)")],
     {("shape-mismatch", "blocks.{0..2}.fc.weight"), ("shape-mismatch", "blocks.{0..2}.fc.bias"),
      ("shape-mismatch", "blocks.{0..2}.out.weight")}),
    ("drop bias", [("nn.Linear(d, classes)", "nn.Linear(d, classes, bias=False)")],
     {("unexpected-key", "head.bias")}),
    ("add layer", [("        self.head =", "        self.extra = nn.Linear(d, d)\n"
                                        "        self.head =")],
     {("missing-key", "extra.*")}),  # a whole new submodule is one finding
    ("dtype", [("nn.Linear(d, classes)", "nn.Linear(d, classes, dtype=torch.float64)")],
     {("dtype-mismatch", "head.weight"), ("dtype-mismatch", "head.bias")}),
    ("rename", [("self.fc", "self.up")],
     {("renamed-key", "blocks.{0..2}.fc.*")}),
    ("forward only", [("return self.head(x)", "return self.head(x).relu()")], set()),
    ("comments", [("super().__init__()\n        self.embed",
                   "super().__init__()\n        # the input projection\n        self.embed")],
     set()),
    ("statement order", [("        self.embed = nn.Linear(8, d)\n"
                          "        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])\n",
                          "        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])\n"
                          "        self.embed = nn.Linear(8, d)\n")],
     set()),
]


def _apply(source: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    return source


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def _kinds(run_out: str) -> set[tuple[str, str]]:
    return {(f["kind"], f["key"]) for f in explained(json.loads(run_out)["findings"])}


@pytest.mark.parametrize("name,edits,expected", CHANGES, ids=[c[0] for c in CHANGES])
def test_change_is_reported_as(project, name, edits, expected):
    project.write("models.py", MODEL)
    project.configure(NET)
    assert project.run("update").code == 0
    project.write("models.py", _apply(MODEL, edits))
    run = project.run("check", "--format", "json")
    assert _kinds(run.out) == expected
    assert run.code == (1 if expected else 0), run.err


def test_kwargs_change_in_pyproject_is_drift(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.configure(NET.replace("classes = 5", "classes = 7"))
    run = project.run("check", "--format", "json")
    finding, = [f for f in explained(json.loads(run.out)["findings"])
                if f["key"] == "head.weight"]
    assert finding["old"]["shape"] == [5, 16] and finding["new"]["shape"] == [7, 16]
    assert "size mismatch" in finding["message"] and finding["code"] == "CKL103"
    assert run.code == 1


def test_update_is_idempotent_byte_for_byte(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    assert project.run("update").out == "wrote signatures/net.toml\n"
    path = project.root / "signatures" / "net.toml"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    run = project.run("update")
    assert run.out == "unchanged signatures/net.toml\n"
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert b'"blocks.{0..2}.fc.weight" = "f32[64, 16]"' in before


def test_check_never_writes(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[0][1]))
    signatures = project.root / "signatures"
    before = {p.name: p.read_bytes() for p in signatures.iterdir()}
    assert project.run("check").code == 1
    assert {p.name: p.read_bytes() for p in signatures.iterdir()} == before


def test_signature_missing_names_the_update_command(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    run = project.run("check")
    assert "CKL202" in run.out and "ckptlint update net" in run.out
    assert run.code == 2


def test_text_report_groups_folds_and_summarises(project):
    project.write("models.py", MODEL)
    project.configure(NET, 'name = "same"\ntarget = "models:Net"')
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[1][1]))
    project.configure(NET, 'name = "same"\ntarget = "models:Net"')
    run = project.run("check", "--color", "never")
    lines = run.out.splitlines()
    assert lines[0] == "net (signatures/net.toml): 1 finding"
    assert "CKL102 `head.bias` (f32[5]) is in the checkpoint but the code no longer creates it" \
        in lines[1]
    assert lines[-2] == "Checked 2 models: 2 drifted, 0 clean."
    assert lines[-1].startswith("If the drift is intended, accept it with "
                                "`ckptlint update net same`")


def test_clean_run_says_so(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    run = project.run("check")
    assert (run.code, run.out) == (0, "All clear: 1 model matches its committed signature.\n")


def test_exit_zero_masks_drift_but_not_errors(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[1][1]))
    assert project.run("check", "--exit-zero").code == 0
    project.configure(NET, 'name = "ghost"\ntarget = "models:Net"')
    assert project.run("check", "--exit-zero").code == 2


def test_orphaned_signatures_are_listed(project):
    project.write("models.py", MODEL)
    project.configure(NET, 'name = "old"\ntarget = "models:Net"')
    project.run("update")
    project.configure(NET)
    assert "orphaned signatures/old.toml" in project.run("update").out
    run = project.run("check", "--format", "json")
    assert ("signature-orphaned", "") in _kinds(run.out) and run.code == 0


def test_several_outputs_in_one_run(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[1][1]))
    run = project.run("check", "--format", "text", "--format", "json:out/report.json")
    assert "CKL102" in run.out
    assert _kinds((project.root / "out" / "report.json").read_text()) == {
        ("unexpected-key", "head.bias")}


def test_names_select_models_and_unknown_names_fail(project):
    project.write("models.py", MODEL)
    project.configure(NET, 'name = "other"\ntarget = "models:Net"')
    assert project.run("update", "net").out == "wrote signatures/net.toml\n"
    run = project.run("check", "nett")
    assert run.code == 2 and "no model named `nett`" in run.err and "net, other" in run.err


def test_subprocess_run_matches_in_process(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[3][1]))
    inproc = project.run("check", "--format", "json")
    sub = project.run_subprocess("check", "--format", "json")
    assert (sub.code, json.loads(sub.out)) == (inproc.code, json.loads(inproc.out))
    assert sub.code == 1 and "Traceback" not in sub.err


BATCHNORM = '''
from torch import nn


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
'''


def _drop_from_signature(project, key: str, drop_versions: bool) -> None:
    path = project.root / "signatures" / "conv.toml"
    lines = [line for line in path.read_text().splitlines() if not line.startswith(f'"{key}"')]
    text = "\n".join(lines) + "\n"
    if drop_versions:
        text = text.split("\n[versions]\n")[0] + "\n"
    path.write_text(text)


def test_batchnorm_v1_checkpoint_without_num_batches_tracked_loads(project):
    """torch's loader fills num_batches_tracked in for version-1 BatchNorm state dicts."""
    project.write("conv.py", BATCHNORM)
    project.configure('name = "conv"\ntarget = "conv:Conv"')
    project.run("update")
    assert '"bn" = 2' in (project.root / "signatures" / "conv.toml").read_text()
    _drop_from_signature(project, "bn.num_batches_tracked", drop_versions=True)
    assert read(project.root / "signatures" / "conv.toml").versions == {}
    run = project.run("check", "--format", "json")
    assert (run.code, _kinds(run.out)) == (0, set())


def test_batchnorm_v2_checkpoint_without_num_batches_tracked_is_missing(project):
    project.write("conv.py", BATCHNORM)
    project.configure('name = "conv"\ntarget = "conv:Conv"')
    project.run("update")
    _drop_from_signature(project, "bn.num_batches_tracked", drop_versions=False)
    run = project.run("check", "--format", "json")
    assert (run.code, _kinds(run.out)) == (1, {("missing-key", "bn.num_batches_tracked")})


def test_build_error_is_a_finding_and_other_models_are_checked(project):
    project.write("models.py", MODEL)
    project.write("broken.py", '''
        from torch import nn


        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4)
                raise ValueError("config has no field 'width'")
        ''')
    project.configure(NET, 'name = "broken"\ntarget = "broken:Broken"')
    project.run("update", "net")
    project.write("models.py", _apply(MODEL, CHANGES[1][1]))
    run = project.run("check", "--format", "json")
    doc = json.loads(run.out)
    error, = [f for f in doc["findings"] if f["kind"] == "build-error"]
    assert (error["model"], error["file"], error["line"]) == ("broken", "broken.py", 8)
    assert "ValueError: config has no field 'width'" in error["message"]
    assert ("unexpected-key", "head.bias") in _kinds(run.out)
    assert run.code == 3 and "Traceback" not in run.err



def test_output_problems_are_one_sentence(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    two = project.run("check", "--format", "text", "--format", "json")
    assert two.code == 2 and "only one --format can write to stdout" in two.err
    (project.root / "adir").mkdir()
    to_dir = project.run("check", "--format", "json:adir")
    assert to_dir.code == 2 and "adir: cannot write the json report" in to_dir.err


def test_a_closed_pipe_is_not_a_traceback(project):
    import subprocess
    import sys

    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    project.write("models.py", _apply(MODEL, CHANGES[0][1]))
    proc = subprocess.Popen([sys.executable, "-m", "ckptlint", "check", "--no-cache"],
                            cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before ckptlint writes, as with `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() == 2 and "Traceback" not in err and "BrokenPipe" not in err
