"""Diagnosing like an expert: renames, wrapper prefixes, load semantics, suppressions, verdicts.

Each table row is an old model source, a new one, the findings ckptlint must report (kind, key,
new key) and the verdict; all through the real CLI with JSON output.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from ckptlint.commands.rules import rules_text

REPO = Path(__file__).resolve().parent.parent

NET = 'name = "net"\ntarget = "models:Net"'

HEADER = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)
'''


def net(body: str, blocks: str = "Block(8)", header: str = HEADER) -> str:
    """A model source: `Net` with three `blocks` and `body` (indented init lines)."""
    lines = "".join(f"        {line}\n" for line in body.strip().splitlines())
    return header + f'''

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([{blocks} for _ in range(3)])
{lines}'''


BASE = "self.fc = nn.Linear(8, 5)"

CASES = {
    "rename-subtree": (net(BASE), net("self.head = nn.Linear(8, 5)"),
                       {("renamed-key", "fc.*", "head.*")}, "loads-non-strict"),
    "rename-per-layer-folds": (
        net(BASE), net(BASE, header=HEADER.replace("self.fc", "self.up")),
        {("renamed-key", "blocks.{0..2}.fc.*", "blocks.{0..2}.up.*")}, "loads-non-strict"),
    "wrap-in-sequential": (
        net(BASE), net(BASE, blocks="nn.Sequential(Block(8))"),
        {("renamed-key", "blocks.{0..2}.*", "blocks.{0..2}.0.*")}, "loads-non-strict"),
    "rename-lone-tensor-with-close-name": (
        net("self.scale = nn.Parameter(torch.ones(8))"),
        net("self.scales = nn.Parameter(torch.ones(8))"),
        {("renamed-key", "scale", "scales")}, "loads-non-strict"),
    "no-claim-when-ambiguous": (
        net("self.a = nn.Linear(8, 8)\nself.b = nn.Linear(8, 8)"),
        net("self.c = nn.Linear(8, 8)\nself.d = nn.Linear(8, 8)"),
        {("unexpected-key", "a.weight", ""), ("unexpected-key", "a.bias", ""),
         ("unexpected-key", "b.weight", ""), ("unexpected-key", "b.bias", ""),
         ("missing-key", "c.weight", ""), ("missing-key", "c.bias", ""),
         ("missing-key", "d.weight", ""), ("missing-key", "d.bias", "")}, "loads-non-strict"),
    "no-claim-for-different-structure": (
        net("self.enc_proj = nn.Linear(8, 8)"),
        net("self.dec_gate = nn.Linear(8, 8, bias=False)"),
        {("unexpected-key", "enc_proj.weight", ""), ("unexpected-key", "enc_proj.bias", ""),
         ("missing-key", "dec_gate.weight", "")}, "loads-non-strict"),
    "no-claim-for-same-shape-elsewhere": (
        net("self.alpha = nn.Parameter(torch.ones(8))"),
        net("self.norm = nn.LayerNorm(8, bias=False)"),
        {("unexpected-key", "alpha", ""), ("missing-key", "norm.weight", "")},
        "loads-non-strict"),
    "no-claim-for-changed-subtree": (
        net(BASE), net("self.head = nn.Linear(8, 6)"),
        {("unexpected-key", "fc.weight", ""), ("unexpected-key", "fc.bias", ""),
         ("missing-key", "head.weight", ""), ("missing-key", "head.bias", "")},
        "loads-non-strict"),
    "shape-does-not-load": (net(BASE), net("self.fc = nn.Linear(8, 6)"),
                            {("shape-mismatch", "fc.weight", ""), ("shape-mismatch", "fc.bias", "")},
                            "does-not-load"),
    "dtype-still-loads": (net(BASE), net("self.fc = nn.Linear(8, 5, dtype=torch.float64)"),
                          {("dtype-mismatch", "fc.weight", ""), ("dtype-mismatch", "fc.bias", "")},
                          "loads"),
    "buffer-to-parameter": (
        net('self.register_buffer("pos", torch.zeros(4))'),
        net("self.pos = nn.Parameter(torch.zeros(4))"),
        {("role-changed", "pos", "")}, "loads"),
    "buffer-not-persistent": (
        net('self.register_buffer("pos", torch.zeros(4))'),
        net('self.register_buffer("pos", torch.zeros(4), persistent=False)'),
        {("buffer-not-persistent", "pos", "")}, "loads-non-strict"),
    "untied": (
        net("self.embed = nn.Embedding(10, 8)\nself.head = nn.Linear(8, 10, bias=False)\n"
            "self.head.weight = self.embed.weight"),
        net("self.embed = nn.Embedding(10, 8)\nself.head = nn.Linear(8, 10, bias=False)"),
        {("tie-changed", "embed.weight", "")}, "loads"),
    "newly-tied": (
        net("self.embed = nn.Embedding(10, 8)\nself.head = nn.Linear(8, 10, bias=False)"),
        net("self.embed = nn.Embedding(10, 8)\nself.head = nn.Linear(8, 10, bias=False)\n"
            "self.head.weight = self.embed.weight"),
        {("tie-changed", "embed.weight", "")}, "loads"),
    "hook-needs-real-values": (
        net(BASE),
        net(BASE + "\nself._register_load_state_dict_pre_hook(check_scale)",
            header=HEADER + '''

def check_scale(state_dict, prefix, *args):
    if float(state_dict[prefix + "fc.bias"].sum()) > 1e6:
        raise ValueError("diverged checkpoint")
'''),
        {("needs-real-load", "", "")}, "needs-real-load"),
}

# load semantics torch's own hooks (or the user's) take care of: the checkpoint loads cleanly
LEGACY_HOOK = HEADER + '''

def legacy_names(state_dict, prefix, *args):
    for key in [k for k in state_dict if k.startswith(prefix + "fc.")]:
        state_dict[prefix + "head." + key[len(prefix + "fc."):]] = state_dict.pop(key)
'''
CLEAN = {
    "user-pre-hook-renames-legacy-keys": (
        net(BASE),
        net("self.head = nn.Linear(8, 5)\nself._register_load_state_dict_pre_hook(legacy_names)",
            header=LEGACY_HOOK)),
    "weight-norm-legacy-keys": (
        net("self.fc = torch.nn.utils.weight_norm(nn.Linear(8, 5))"),
        net("self.fc = torch.nn.utils.parametrizations.weight_norm(nn.Linear(8, 5))")),
}


_WHOLE = {"missing-key", "unexpected-key"}


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def _findings(out: str) -> set[tuple[str, str, str]]:
    # a whole added or removed submodule (`a.*`) stands for each of its keys
    return {(f["kind"], k, f["new_key"] or "") for f in explained(json.loads(out)["findings"])
            for k in (f["keys"] if f["key"].endswith(".*") and f["kind"] in _WHOLE
                      else [f["key"]])}


def _check_after(project, old: str, new: str, *models: str, extra_update=None):
    project.write("models.py", old)
    project.configure(*(models or (NET,)))
    assert project.run("update").code == 0
    if extra_update:
        extra_update(project)
    project.write("models.py", new)
    return project.run("check", "--format", "json")


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("old, new, expected, verdict", list(CASES.values()), ids=list(CASES))
def test_diagnosis(project, old, new, expected, verdict):
    run = _check_after(project, old, new)
    assert _findings(run.out) == expected, run.err
    assert json.loads(run.out)["models"][0]["verdict"] == verdict
    assert run.code == 1


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("old, new", list(CLEAN.values()), ids=list(CLEAN))
def test_load_hooks_make_it_load_cleanly(project, old, new):
    run = _check_after(project, old, new)
    assert (run.code, _findings(run.out)) == (0, set()), run.out
    assert json.loads(run.out)["models"][0]["verdict"] == "loads"


def _as_batchnorm_version_1(project) -> None:
    path = project.root / "signatures/net.toml"
    text = path.read_text()
    text = re.sub(r'.*num_batches_tracked.*\n', "", text)
    text = re.sub(r'\n\[versions\]\n(".*" = \d+\n)+', "\n", text)
    path.write_text(text)


def test_batchnorm_version_1_checkpoint_loads_cleanly(project):
    source = net("self.bn = nn.BatchNorm1d(8)")
    run = _check_after(project, source, source, extra_update=_as_batchnorm_version_1)
    assert "num_batches_tracked" not in (project.root / "signatures/net.toml").read_text()
    assert (run.code, _findings(run.out)) == (0, set()), run.out


def test_renamed_finding_points_at_the_new_layer_and_suggests_remap(project):
    run = _check_after(project, net(BASE), net("self.head = nn.Linear(8, 5)"))
    [finding] = json.loads(run.out)["findings"]
    assert finding["code"] == "CKL105" and finding["count"] == 2
    assert finding["file"] == "models.py" and "self.head" in \
        (project.root / "models.py").read_text().splitlines()[finding["line"] - 1]
    assert "ckptlint remap net" in finding["help"]


def test_text_report_says_the_verdict(project):
    _check_after(project, net(BASE), net("self.fc = nn.Linear(8, 5, bias=False)"))
    run = project.run("check", "--color", "never")
    assert "verdict: net loads only with strict=False (dropped: `fc.bias`)" in run.out


# -- wrapper prefixes, on real state dicts --------------------------------------------------

PLAIN = net(BASE)


class Lit(torch.nn.Module):  # what a LightningModule's state dict looks like
    def __init__(self, model):
        super().__init__()
        self.model = model


class _Checkpointed:
    """Keys as older torch's checkpoint_wrapper saved them (today's strips the segment itself)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self):
        return {re.sub(r"^blocks\.(\d+)\.", r"blocks.\1._checkpoint_wrapped_module.", k): v
                for k, v in self.model.state_dict().items()}


WRAPPERS = {
    "data-parallel": (torch.nn.DataParallel, "module."),
    "torch-compile": (torch.compile, "_orig_mod."),
    "lightning": (Lit, "model."),
    "checkpoint-wrapper": (_Checkpointed, "_checkpoint_wrapped_module."),
}


def _save(project, wrap, source: str = PLAIN) -> None:
    namespace: dict = {}
    exec(compile(source, "models.py", "exec"), namespace)
    torch.save(wrap(namespace["Net"]()).state_dict(), project.root / "ckpt.pt")


@pytest.mark.parametrize("wrap, prefix", list(WRAPPERS.values()), ids=list(WRAPPERS))
def test_wrapper_prefix_is_one_finding(project, wrap, prefix):
    project.write("models.py", PLAIN)
    project.configure(NET)
    _save(project, wrap)
    run = project.run("check", "net", "--against", "ckpt.pt", "--format", "json")
    found = json.loads(run.out)["findings"]
    assert [(f["kind"], f["key"]) for f in found] == [("prefix-mismatch", prefix)], run.out
    assert f"strip_prefix = \"{prefix}\"" in found[0]["help"]
    assert json.loads(run.out)["models"][0]["verdict"] == "does-not-load"


def test_wrapper_prefix_and_a_rename_are_both_reported(project):
    project.write("models.py", PLAIN)
    project.configure(NET)
    _save(project, torch.nn.DataParallel)
    project.write("models.py", net("self.head = nn.Linear(8, 5)"))
    run = project.run("check", "net", "--against", "ckpt.pt", "--format", "json")
    assert _findings(run.out) == {("prefix-mismatch", "module.", ""),
                                  ("renamed-key", "fc.*", "head.*")}


def test_code_side_prefix(project):
    project.write("models.py", PLAIN + '''

class Lit(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Net()
''')
    project.configure('name = "lit"\ntarget = "models:Lit"')
    _save(project, lambda m: m)
    run = project.run("check", "lit", "--against", "ckpt.pt", "--format", "json")
    assert _findings(run.out) == {("prefix-mismatch", "model.", "")}


def test_strip_prefix_in_the_entry_makes_it_clean(project):
    project.write("models.py", PLAIN)
    project.configure(NET + '\nstrip_prefix = "module."')
    _save(project, torch.nn.DataParallel)
    run = project.run("check", "net", "--against", "ckpt.pt", "--format", "json")
    assert (run.code, _findings(run.out)) == (0, set()), run.out


# -- suppressions ---------------------------------------------------------------------------

def test_ignore_pattern_suppresses_and_unused_is_reported(project):
    entry = NET + '\nignore = { "fc.*" = ["CKL102"], "gone.*" = ["CKL103"] }'
    run = _check_after(project, net(BASE), net("self.fc = nn.Linear(8, 5, bias=False)"), entry)
    assert _findings(run.out) == {("unused-suppression", "gone.*", "")}
    assert run.code == 0
    assert json.loads(run.out)["findings"][0]["file"] == "pyproject.toml"


def test_ignore_pattern_keeps_the_unmatched_layers_of_a_folded_finding(project):
    entry = NET + '\nignore = { "blocks.1.*" = ["CKL103"] }'
    run = _check_after(project, net(BASE), net(BASE, header=HEADER.replace("2 * d", "3 * d")),
                       entry)
    keys = {k for kind, k, _ in _findings(run.out) if kind == "shape-mismatch"}
    assert keys == {"blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.out.weight",
                    "blocks.2.fc.weight", "blocks.2.fc.bias", "blocks.2.out.weight"}


def test_ignore_needs_the_right_code(project):
    entry = NET + '\nignore = { "fc.*" = ["CKL103"] }'
    run = _check_after(project, net(BASE), net("self.fc = nn.Linear(8, 5, bias=False)"), entry)
    assert ("unexpected-key", "fc.bias", "") in _findings(run.out) and run.code == 1


def test_inline_ignore_comment(project):
    new = net("self.fc = nn.Linear(8, 5, bias=False)  # ckptlint: ignore[CKL102]")
    run = _check_after(project, net(BASE), new)
    assert (run.code, _findings(run.out)) == (0, set()), run.out


@pytest.mark.parametrize("ignore", ['"x"', '{ "fc.*" = "CKL102" }', '{ "fc.*" = ["CKL999"] }'])
def test_bad_ignore_is_a_config_error(project, ignore):
    project.write("models.py", PLAIN)
    project.configure(NET + f"\nignore = {ignore}")
    run = project.run("check")
    assert run.code == 2 and "ignore" in run.err


# -- torch upgrades -------------------------------------------------------------------------

def _git(project, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   cwd=project.root, check=True, capture_output=True)


def _fake_old_torch(project) -> None:
    path = project.root / "signatures/net.toml"
    text = re.sub(r'torch = ".*"', 'torch = "2.0.0"', path.read_text())
    path.write_text(text.replace('"fc.bias" = "f32[5]"', '"fc.bias" = "f32[6]"'))


@pytest.mark.parametrize("edit_code, blamed", [(False, True), (True, False)])
def test_torch_upgrade_is_blamed_only_when_the_code_did_not_change(project, edit_code, blamed):
    project.write("models.py", PLAIN)
    project.configure(NET)
    project.run("update")
    _fake_old_torch(project)
    _git(project, "init", "-q")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "x")
    if edit_code:
        project.write("models.py", PLAIN + "\n# touched\n")
    run = project.run("check", "--format", "json")
    [note] = json.loads(run.out)["models"][0]["notes"]
    assert "torch 2.0.0" in note
    assert ("comes from the torch upgrade" in note) == blamed


# -- rules ------------------------------------------------------------------------------------

def test_rules_lists_every_code_and_docs_match(project):
    run = project.run("rules")
    assert run.code == 0 and run.out == rules_text()
    from ckptlint.core.kinds import Kind
    assert all(f"## {k.code} {k.slug}" in run.out for k in Kind)
    assert (REPO / "docs/rules.md").read_text(encoding="utf-8") == rules_text(), \
        "regenerate with `python -m ckptlint rules > docs/rules.md`"


def test_wrapper_prefix_is_found_even_when_every_layer_was_renamed(project):
    project.write("models.py", PLAIN)
    project.configure(NET)
    _save(project, torch.nn.DataParallel)
    project.write("models.py", net("self.head = nn.Linear(8, 5)",
                                   header=HEADER.replace("self.fc", "self.up")
                                   .replace("self.norm", "self.ln").replace("self.out", "self.down")))
    run = project.run("check", "net", "--against", "ckpt.pt", "--format", "json")
    assert _findings(run.out) == {
        ("prefix-mismatch", "module.", ""), ("renamed-key", "fc.*", "head.*"),
        ("renamed-key", "blocks.{0..2}.norm.*", "blocks.{0..2}.ln.*"),
        ("renamed-key", "blocks.{0..2}.fc.*", "blocks.{0..2}.up.*"),
        ("renamed-key", "blocks.{0..2}.out.*", "blocks.{0..2}.down.*")}, run.out
