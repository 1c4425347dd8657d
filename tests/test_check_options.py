"""`check`'s ruff-style options (--select, --ignore, --fail-on, --statistics, --quiet) and the
wording of messages that used to say something untrue, through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.body = nn.Linear(d, d)
        self.norm = nn.BatchNorm1d(d)
        self.head = nn.Linear(d, 2)
        self.heads = nn.ModuleDict({"a,b": nn.Linear(d, 2)})
'''
NET = 'name = "net"\ntarget = "models:Net"'
# a shape error and a dtype warning at once
DRIFTED = MODEL.replace("nn.Linear(d, 2)\n        self.heads",
                        "nn.Linear(d, 3)\n        self.heads") \
    .replace("self.body = nn.Linear(d, d)", "self.body = nn.Linear(d, d, dtype=torch.float64)")


@pytest.fixture
def net(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    assert project.run("update").code == 0
    return project


def _codes(run) -> list[str]:
    return sorted(f["code"] for f in json.loads(run.out)["findings"])


def test_select_and_ignore_narrow_the_report_and_the_exit(net):
    net.write("models.py", DRIFTED)
    # one finding per creating statement: the head's weight and bias, the body's
    whole = net.run("check", "--format", "json")
    assert _codes(whole) == ["CKL103", "CKL104"]
    assert sorted(k for f in json.loads(whole.out)["findings"] for k in f["keys"]) == [
        "body.bias", "body.weight", "head.bias", "head.weight"]
    assert _codes(net.run("check", "--format", "json", "--select", "CKL103")) == ["CKL103"]
    run = net.run("check", "--format", "json", "--ignore", "shape-mismatch")
    assert (run.code, _codes(run)) == (1, ["CKL104"])  # a warning still fails
    assert _codes(net.run("check", "--format", "json", "--select", "CKL1",
                          "--ignore", "CKL103,CKL104")) == []
    assert net.run("check", "--select", "CKL104", "--fail-on", "error").code == 0


def test_unknown_or_unignorable_codes_are_one_sentence_and_exit_2(net):
    for argv in (["--select", "CKL999"], ["--ignore", "build-error"], ["--select", ","]):
        run = net.run("check", *argv)
        assert run.code == 2 and run.err.strip().splitlines()[-1].startswith(
            "ckptlint check: error: argument"), run.err


def test_a_model_that_could_not_be_checked_is_never_selected_away(net):
    net.write("models.py", MODEL.replace("super().__init__()", "super().__init__(); 1 / 0"))
    run = net.run("check", "--format", "json", "--select", "CKL103", "--ignore", "CKL2")
    assert (run.code, _codes(run)) == (2, ["CKL201"])


def test_fail_on_sets_the_least_severity_that_fails(net):
    net.write("models.py", MODEL.replace("self.body = nn.Linear(d, d)",
                                         "self.body = nn.Linear(d, d, dtype=torch.float64)"))
    assert net.run("check").code == 1  # the default: a warning-only run fails, as before
    assert net.run("check", "--fail-on", "error").code == 0
    net.write("models.py", MODEL)
    (net.root / "signatures" / "gone.toml").write_text(
        (net.root / "signatures" / "net.toml").read_text())
    assert net.run("check").code == 0  # an orphaned signature is a note
    assert net.run("check", "--fail-on", "note").code == 1
    assert "default: warning" in net.run("check", "--help").out


def test_statistics_counts_each_code(net):
    net.write("models.py", DRIFTED)
    run = net.run("check", "--statistics", "--color", "never")
    assert run.code == 1
    assert run.out == ("1  CKL103  shape-mismatch  [error]\n"
                       "1  CKL104  dtype-mismatch  [warning]\n\n"
                       "Checked 1 model: 1 drifted, 0 clean.\n"
                       "If the drift is intended, accept it with `ckptlint update net` and "
                       "commit signatures/net.toml; otherwise fix the code.\n")


def test_quiet_prints_the_findings_and_nothing_else(net):
    run = net.run("check", "--quiet")
    assert (run.code, run.out) == (0, "")
    net.write("models.py", DRIFTED)
    run = net.run("check", "-q", "--color", "never")
    assert run.code == 1 and run.out.startswith("net (signatures/net.toml): 2 findings\n")
    assert "CKL103" in run.out and "verdict" not in run.out and "Checked" not in run.out


def test_prefix_finding_says_every_key_matches_when_nothing_else_differs(net):
    state = {"module." + k: v for k, v in _net_state(net).items()}
    torch.save(state, net.root / "ddp.pt")
    [finding] = json.loads(net.run("check", "--against", "ddp.pt", "--format", "json").out)[
        "findings"]
    assert "with the prefix stripped, every key matches" in finding["message"]
    assert "below" not in finding["message"]
    state.pop("module.head.bias")
    torch.save(state, net.root / "ddp.pt")
    doc = json.loads(net.run("check", "--against", "ddp.pt", "--format", "json").out)
    assert [f["code"] for f in doc["findings"]] == ["CKL106", "CKL101"]
    assert "the findings below compare its keys with the prefix stripped" in \
        doc["findings"][0]["message"]


def _net_state(project) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("options_models", project.root / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net().state_dict()


def test_update_of_a_broken_model_says_whether_a_signature_was_kept(project):
    project.write("models.py", MODEL.replace("super().__init__()", "super().__init__(); 1 / 0"))
    project.configure(NET)
    run = project.run("update")
    assert run.code == 2 and "(no signature was written)" in run.out
    project.write("models.py", MODEL)
    assert project.run("update").code == 0
    project.write("models.py", MODEL.replace("super().__init__()", "super().__init__(); 1 / 0"))
    assert "(its signature was left as it was)" in project.run("update").out


def test_build_error_help_mentions_other_models_only_when_there_are_some(project):
    project.write("models.py", MODEL.replace("super().__init__()", "super().__init__(); 1 / 0"))
    project.configure(NET)
    doc = json.loads(project.run("check", "--format", "json").out)
    [finding] = [f for f in doc["findings"] if f["code"] == "CKL201"]
    assert "other models" not in finding["help"]
    project.configure(NET, 'name = "other"\ntarget = "models:Net"')
    doc = json.loads(project.run("check", "--format", "json").out)
    helps = [f["help"] for f in doc["findings"] if f["code"] == "CKL201"]
    assert helps and all("the other models were still checked" in h for h in helps)


def test_inspect_toml_leaves_out_what_a_checkpoint_cannot_say(net):
    torch.save(_net_state(net), net.root / "net.pt")
    text = net.run("inspect", "net.pt", "--format", "toml", "--no-fits").out
    assert 'model = ""' not in text and 'torch = ""' not in text and 'target = ""' not in text
    (net.root / "net.sig.toml").write_text(text)
    assert net.run("check", "--against", "net.sig.toml").code == 0


def test_code_and_checkpoint_count_parameters_the_same_way(net):
    torch.save(_net_state(net), net.root / "net.pt")
    doc = json.loads(net.run("check", "--against", "net.pt", "--format", "json").out)
    [model] = doc["models"]
    assert model["parameters"]["old"] == model["parameters"]["new"] == sum(
        v.numel() for v in _net_state(net).values())  # buffers included on both sides
    inspected = json.loads(net.run("inspect", "net.pt", "--format", "json", "--no-fits").out)
    committed = (net.root / "signatures" / "net.toml").read_text()
    assert f"parameters = {inspected['parameters']}\n" in committed


def test_a_key_holding_a_comma_stays_readable_in_the_verdict(net):
    net.write("models.py", MODEL.replace('"a,b": nn.Linear(d, 2)', '"a,b": nn.Linear(d, 4)'))
    run = net.run("check", "--color", "never")
    assert "size mismatch for `heads.a,b.bias`, `heads.a,b.weight`" in run.out
