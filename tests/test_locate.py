"""Pointing findings at the source, end to end: `update`, edit the model, `check --format json`,
and the reported span must be the statement (or element) marked `# <- name` in the source."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckptlint.config import parse_config
from ckptlint.core.records import Finding

HEAD = "import torch\nfrom torch import nn\n\n\n"
# without git history, a layer removed from the model itself is reported at its __init__
ROOT_NOTE = "it belonged to the model's own class; its __init__ no longer creates it"
MARK = re.compile(r"#\s*<-\s*(\S+)")


@dataclass(frozen=True)
class Expect:
    """Where a finding's key must point: the line marked `# <- marker` in `file`.

    The span runs from the first non-blank character of that line (or from `element` when
    given: a substring naming a container element) to the end of the line marked
    `# <- marker:end` (default: the same line), comments excluded.
    """

    marker: str
    file: str = "models.py"
    element: str = ""
    note: str = ""  # a substring the location's note must contain


@dataclass(frozen=True)
class Case:
    files: dict[str, str]
    edits: list[tuple[str, str, str]]  # (file, old text, new text)
    expected: dict[str, Expect]  # finding key (as reported, folded) -> where
    target: str = "models:Net"
    kwargs: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def marked(text: str, marker: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1)
             if (m := MARK.search(line)) and m.group(1) == marker]
    assert len(lines) == 1, f"marker {marker!r} found {len(lines)} times"
    return lines[0]


def code_end(line: str) -> int:
    """Exclusive end column of a line's code, before any trailing comment."""
    code = line.split("  #")[0] if "  #" in line else line
    return len(code.rstrip()) + 1


def expected_span(text: str, expect: Expect) -> tuple[int, int, int, int]:
    lines = text.splitlines()
    start = marked(text, expect.marker)
    end = marked(text, expect.marker + ":end") if f"<- {expect.marker}:end" in text else start
    first = lines[start - 1]
    if expect.element:
        column = first.index(expect.element) + 1
        return start, column, start, column + len(expect.element)
    return start, len(first) - len(first.lstrip()) + 1, end, code_end(lines[end - 1])


def src(body: str) -> str:
    return HEAD + textwrap.dedent(body).lstrip("\n")


# -- the corpus --------------------------------------------------------------------------------

NET_WITH = '''
class Net(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.embed = nn.Linear(4, d)
{body}
'''


def net(body: str) -> str:
    return src(NET_WITH.format(body=textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8)))


CASES: dict[str, Case] = {
    "assign": Case(
        {"models.py": net("self.head = nn.Linear(d, 5)  # <- head")},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 6)")],
        {"head.weight": Expect("head"), "head.bias": Expect("head")}),
    "annotated-assign": Case(
        {"models.py": net("self.head: nn.Linear = nn.Linear(d, 5)  # <- head")},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 6)")],
        {"head.weight": Expect("head")}),
    "add-module": Case(
        {"models.py": net('self.add_module("head", nn.Linear(d, 5))  # <- head')},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 6)")],
        {"head.weight": Expect("head")}),
    "register-module": Case(
        {"models.py": net('self.register_module("head", nn.Linear(d, 5))  # <- head')},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 6)")],
        {"head.weight": Expect("head")}),
    "register-buffer": Case(
        {"models.py": net('self.register_buffer("scale", torch.ones(4))  # <- scale')},
        [("models.py", "torch.ones(4)", "torch.ones(5)")],
        {"scale": Expect("scale")}),
    "register-parameter": Case(
        {"models.py": net('self.register_parameter("alpha", nn.Parameter(torch.zeros(3)))'
                          '  # <- alpha')},
        [("models.py", "torch.zeros(3)", "torch.zeros(2)")],
        {"alpha": Expect("alpha")}),
    "setattr-literal": Case(
        {"models.py": net('setattr(self, "head", nn.Linear(d, 5))  # <- head')},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 6)")],
        {"head.weight": Expect("head")}),
    "nn-parameter": Case(
        {"models.py": net("self.alpha = nn.Parameter(torch.zeros(3))  # <- alpha")},
        [("models.py", "torch.zeros(3)", "torch.zeros(3, dtype=torch.float64)")],
        {"alpha": Expect("alpha")}),
    "multi-line-call": Case(
        {"models.py": net('''
            self.head = nn.Linear(  # <- head
                d,
                5,
            )  # <- head:end
            ''')},
        [("models.py", "            5,\n", "            6,\n")],
        {"head.weight": Expect("head"), "head.bias": Expect("head")}),
    "base-class-in-another-file": Case(
        {"base.py": src('''
            class Base(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.stem = nn.Linear(4, 8)  # <- stem
            '''),
         "models.py": "from base import Base\n\n\nclass Net(Base):\n"
                      "    def __init__(self):\n        super().__init__()\n"},
        [("base.py", "nn.Linear(4, 8)", "nn.Linear(4, 9)")],
        {"stem.weight": Expect("stem", file="base.py")}),
    "helper-function": Case(
        {"helpers.py": src('''
            def make_head(d, n):
                return nn.Linear(d, n)  # <- helper
            '''),
         "models.py": "from helpers import make_head\n" + net("self.head = make_head(d, 5)")},
        [("helpers.py", "nn.Linear(d, n)", "nn.Linear(d, n + 1)")],
        {"head.weight": Expect("helper", file="helpers.py")}),
    "decorated-class": Case(
        {"models.py": src('''
            def registered(cls):
                return cls


            @registered
            class Net(nn.Module):
                def __init__(self):  # <- init
                    super().__init__()
                    self.head = nn.Linear(4, 5)  # <- head
                    self.extra = nn.Linear(4, 4)
            ''')},
        [("models.py", "nn.Linear(4, 5)", "nn.Linear(4, 6)"),
         ("models.py", "        self.extra = nn.Linear(4, 4)\n", "")],
        {"head.weight": Expect("head"),
         "extra.weight": Expect("init", note=ROOT_NOTE)}),
    "nested-class": Case(
        {"models.py": src('''
            class Outer:
                class Block(nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc = nn.Linear(4, 4)  # <- fc


            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.block = Outer.Block()
            ''')},
        [("models.py", "nn.Linear(4, 4)", "nn.Linear(4, 4, bias=False)")],
        {"block.fc.bias": Expect("fc")}),
    "class-in-function": Case(
        {"models.py": src('''
            def make_net(d=4):
                class Net(nn.Module):
                    def __init__(self):  # <- init
                        super().__init__()
                        self.fc = nn.Linear(d, d)  # <- fc
                        self.gone = nn.Linear(d, d)

                return Net()
            ''')},
        [("models.py", "self.fc = nn.Linear(d, d)", "self.fc = nn.Linear(d, d + 1)"),
         ("models.py", "            self.gone = nn.Linear(d, d)\n", "")],
        {"fc.weight": Expect("fc"), "gone.weight": Expect("init")},
        target="models:make_net"),
    "setattr-in-loop": Case(
        {"models.py": net('''
            for i in range(3):
                setattr(self, f"layer{i}", nn.Linear(d, d))  # <- dyn
            ''')},
        [("models.py", "nn.Linear(d, d))", "nn.Linear(d, d + 1))")],
        {"layer0.weight": Expect("dyn"), "layer2.bias": Expect("dyn")}),
    "add-module-in-loop": Case(
        {"models.py": net('''
            for name in ("a", "b"):
                self.add_module(name, nn.Linear(d, 2))  # <- dyn
            ''')},
        [("models.py", "nn.Linear(d, 2)", "nn.Linear(d, 3)")],
        {"a.weight": Expect("dyn"), "b.weight": Expect("dyn")}),
    "literal-sequential-multi-line": Case(
        {"models.py": net('''
            self.seq = nn.Sequential(
                nn.Linear(d, 8),
                nn.ReLU(),
                nn.Linear(8, 2),  # <- last
            )
            ''')},
        [("models.py", "nn.Linear(8, 2)", "nn.Linear(8, 3)")],
        {"seq.2.weight": Expect("last", element="nn.Linear(8, 3)")}),
    "literal-sequential-one-line": Case(
        {"models.py": net("self.seq = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 2))"
                          "  # <- seq")},
        [("models.py", "nn.Linear(8, 2)", "nn.Linear(8, 3)"),
         ("models.py", "nn.Linear(d, 8)", "nn.Linear(d, 8, bias=False)")],
        {"seq.2.weight": Expect("seq", element="nn.Linear(8, 3)"),
         "seq.0.bias": Expect("seq", element="nn.Linear(d, 8, bias=False)")}),
    "nested-literal-sequential": Case(
        {"models.py": net('''
            self.seq = nn.Sequential(
                nn.Sequential(nn.Linear(d, 8), nn.ReLU()),
                nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)),  # <- inner
            )
            ''')},
        [("models.py", "nn.Linear(8, 2)", "nn.Linear(8, 3)")],
        {"seq.1.1.weight": Expect("inner", element="nn.Linear(8, 3)")}),
    "sequential-from-list-variable": Case(
        {"models.py": net('''
            layers = [nn.Linear(d, 8), nn.ReLU()]
            layers.append(nn.Linear(8, 2))  # <- appended
            self.seq = nn.Sequential(*layers)  # <- seq
            ''')},
        [("models.py", "nn.Linear(8, 2)", "nn.Linear(8, 3)")],
        {"seq.2.weight": Expect("appended")}),
    "sequential-element-removed": Case(
        {"models.py": net('''
            layers = [nn.Linear(d, 8), nn.ReLU()]
            layers.append(nn.Linear(8, 2))
            self.seq = nn.Sequential(*layers)  # <- seq
            ''')},
        [("models.py", "        layers.append(nn.Linear(8, 2))\n", "")],
        {"seq.2.weight": Expect("seq", note="it belonged to `seq`, which the code still creates here")}),
    "make-layer-helper": Case(
        {"models.py": src('''
            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.conv1 = nn.Conv2d(c, c, 3)
                    self.conv2 = nn.Conv2d(c, c, 3)  # <- conv2


            class Net(nn.Module):  # <- root
                def __init__(self):
                    super().__init__()
                    self.layer1 = self._make_layer(4, 2)  # <- layer1

                def _make_layer(self, c, n):
                    blocks = [Block(c) for _ in range(n)]
                    return nn.Sequential(*blocks)
            ''')},
        [("models.py", "self.conv2 = nn.Conv2d(c, c, 3)", "self.conv2 = nn.Conv2d(c, c, 5)")],
        {"layer1.{0..1}.conv2.weight": Expect("conv2")}),
    "make-layer-fewer-blocks": Case(
        {"models.py": src('''
            class Block(nn.Module):
                def __init__(self, c):
                    super().__init__()
                    self.conv = nn.Conv2d(c, c, 3)


            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.layer1 = self._make_layer(4, 3)  # <- layer1

                def _make_layer(self, c, n):
                    return nn.Sequential(*[Block(c) for _ in range(n)])
            ''')},
        [("models.py", "self._make_layer(4, 3)", "self._make_layer(4, 2)")],
        {"layer1.2.conv.weight": Expect("layer1",
                                        note="it belonged to `layer1`, which the code still creates here")}),
    "module-dict": Case(
        {"models.py": net('''
            self.heads = nn.ModuleDict({
                "cls": nn.Linear(d, 5),
                "reg": nn.Linear(d, 1),  # <- reg
            })
            ''')},
        [("models.py", "nn.Linear(d, 1)", "nn.Linear(d, 2)")],
        {"heads.reg.weight": Expect("reg", element="nn.Linear(d, 2)")}),
    "module-list-of-blocks": Case(
        {"models.py": src('''
            class Block(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.fc = nn.Linear(d, d)  # <- fc
                    self.extra = nn.Linear(d, d)


            class Net(nn.Module):
                def __init__(self, d=4, n=3):
                    super().__init__()
                    self.blocks = nn.ModuleList([Block(d) for _ in range(n)])  # <- blocks
            ''')},
        [("models.py", "self.fc = nn.Linear(d, d)", "self.fc = nn.Linear(d, 2 * d)"),
         ("models.py", "        self.extra = nn.Linear(d, d)\n", "")],
        {"blocks.{0..2}.fc.weight": Expect("fc"),
         "blocks.{0..2}.extra.*": Expect(
             "blocks", note="it belonged to `blocks.0`, which the code still creates here")}),
    "renamed-in-every-block": Case(
        {"models.py": src('''
            class Block(nn.Module):
                def __init__(self, d):
                    super().__init__()
                    self.fc = nn.Linear(d, d)  # <- fc


            class Net(nn.Module):
                def __init__(self, d=4, n=3):
                    super().__init__()
                    self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
            ''')},
        [("models.py", "self.fc = ", "self.up = ")],
        {"blocks.{0..2}.fc.*": Expect("fc")}),
    "removed-top-level-layer": Case(
        {"models.py": src('''
            class Net(nn.Module):
                def __init__(self):  # <- init
                    super().__init__()
                    self.keep = nn.Linear(4, 4)
                    self.head = nn.Linear(4, 2)
            ''')},
        [("models.py", "        self.head = nn.Linear(4, 2)\n", "")],
        {"head.weight": Expect("init", note=ROOT_NOTE),
         "head.bias": Expect("init")}),
    "dropped-bias": Case(
        {"models.py": net("self.head = nn.Linear(d, 5)  # <- head")},
        [("models.py", "nn.Linear(d, 5)", "nn.Linear(d, 5, bias=False)")],
        {"head.bias": Expect("head")}),
    "renamed-layer": Case(
        {"models.py": net("self.fc = nn.Linear(d, 5)  # <- fc")},
        [("models.py", "self.fc = ", "self.proj = ")],
        {"fc.*": Expect("fc")}),  # reported as a rename: the new statement
}


def _mark_extra(text: str, extra: dict[str, str]) -> str:
    for marker, needle in extra.items():
        text = re.sub(rf"^({re.escape(needle)}.*)$", rf"\1  # <- {marker}", text, count=1,
                      flags=re.M)
    return text


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def findings_by_key(run) -> dict[str, dict]:
    """Every finding under its key (a grouped one's members, each at its creating statement),
    and a subtree finding (`extra.*`) under each of its keys."""
    flat = explained(json.loads(run.out)["findings"])
    found = {f["key"]: f for f in flat}
    found.update({k: f for f in flat if f["key"].endswith(".*") for k in f["keys"]})
    return found


def run_case(project, case: Case) -> tuple[dict[str, dict], dict[str, str]]:
    for path, text in case.files.items():
        project.write(path, _mark_extra(text, case.extra))
    kwargs = f"\nkwargs = {{ {case.kwargs} }}" if case.kwargs else ""
    project.configure(f'name = "net"\ntarget = "{case.target}"{kwargs}')
    assert project.run("update").code == 0
    for path, old, new in case.edits:
        text = (project.root / path).read_text()
        assert old in text, old
        (project.root / path).write_text(text.replace(old, new, 1))
    run = project.run("check", "--format", "json", "--format", "text:report.txt")
    assert run.code == 1, run.out + run.err
    texts = {path: (project.root / path).read_text() for path in case.files}
    texts["report"] = (project.root / "report.txt").read_text()
    return findings_by_key(run), texts


def assert_points(finding: dict, texts: dict[str, str], expect: Expect, key: str) -> None:
    where = (finding["file"], finding["line"], finding["column"], finding["end_line"],
             finding["end_column"])
    assert where == (expect.file, *expected_span(texts[expect.file], expect)), key


@pytest.mark.parametrize("name", list(CASES))
def test_finding_points_at_creating_statement(project, name):
    case = CASES[name]
    findings, texts = run_case(project, case)
    for key, expect in case.expected.items():
        assert key in findings, f"{key} not among {sorted(findings)}"
        assert_points(findings[key], texts, expect, key)
        if expect.note:
            assert f"= note: {expect.note}" in texts["report"], texts["report"]


# -- kwargs-only drift: the pyproject line, when git proves nothing else changed ---------------

KWARGS_MODEL = net("self.head = nn.Linear(d, 5)  # <- head")


def git(project, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(["git", *args], cwd=project.root, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def committed_kwargs_project(project) -> None:
    project.write("models.py", KWARGS_MODEL)
    project.write(".gitignore", "__pycache__/\nreport.txt\n")
    project.configure('name = "net"\ntarget = "models:Net"\nkwargs = { d = 8 }')
    assert project.run("update").code == 0
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "model and signature")
    project.configure('name = "net"\ntarget = "models:Net"\nkwargs = { d = 12 }')


def check_json(project) -> tuple[dict[str, dict], str]:
    run = project.run("check", "--format", "json", "--format", "text:report.txt")
    assert run.code == 1, run.out + run.err
    return findings_by_key(run), (project.root / "report.txt").read_text()


def test_kwargs_only_change_points_at_the_pyproject_line(project):
    committed_kwargs_project(project)
    run = project.run("check", "--format", "json", "--format", "text:report.txt")
    assert run.code == 1, run.out + run.err
    report = (project.root / "report.txt").read_text()
    kwargs_line = marked_line(project.root / "pyproject.toml", "kwargs = { d = 12 }")
    finding, = json.loads(run.out)["findings"]  # one cause, one finding
    assert (finding["file"], finding["line"]) == ("pyproject.toml", kwargs_line)
    assert {"embed.weight", "head.weight"} <= set(finding["keys"])
    head = marked(KWARGS_MODEL, "head")
    assert finding["locations"]["head.weight"] == {"file": "models.py", "line": head}
    assert "the kwargs changed since signatures/net.toml was committed" in report
    assert "d: 8 → 12" in report
    assert f"`head.weight` f32[5, 8] → f32[5, 12] (models.py:{head})" in report


def test_kwargs_and_code_change_points_at_the_code(project):
    committed_kwargs_project(project)
    text = (project.root / "models.py").read_text()
    (project.root / "models.py").write_text(text.replace("nn.Linear(d, 5)", "nn.Linear(d, 6)"))
    findings, _ = check_json(project)
    assert findings["head.weight"]["file"] == "models.py"
    assert findings["head.weight"]["line"] == marked(KWARGS_MODEL, "head")


def test_kwargs_change_with_uncommitted_signature_points_at_the_code(project):
    project.write("models.py", KWARGS_MODEL)
    project.configure('name = "net"\ntarget = "models:Net"\nkwargs = { d = 8 }')
    assert project.run("update").code == 0
    project.configure('name = "net"\ntarget = "models:Net"\nkwargs = { d = 12 }')
    findings, _ = check_json(project)  # no git repository: nothing proves the cause
    assert (findings["head.weight"]["file"], findings["head.weight"]["line"]) == \
        ("models.py", marked(KWARGS_MODEL, "head"))


def marked_line(path: Path, needle: str) -> int:
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(lines) == 1, needle
    return lines[0]


# -- real third-party code: transformers' modeling files copied into the project ---------------

transformers = pytest.importorskip("transformers")
HF_MODELS = Path(transformers.__file__).parent / "models"
TINY = "hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37"

# name -> (config class, factory call, statement to change, replacement, changed key)
HF_CASES = {
    "bert": ("BertConfig", f"BertModel(BertConfig({TINY}, vocab_size=99))",
             "self.query = nn.Linear(config.hidden_size, self.all_head_size)",
             "self.query = nn.Linear(config.hidden_size, self.all_head_size // 2)",
             "encoder.layer.{0..1}.attention.self.query.weight"),
    "gpt2": ("GPT2Config", "GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64,"
                           " vocab_size=99))",
             "self.ln_f = nn.LayerNorm(", "self.ln_final = nn.LayerNorm(", "ln_f.*"),
    "llama": ("LlamaConfig", f"LlamaModel(LlamaConfig({TINY}, vocab_size=99,"
                             " num_key_value_heads=2))",
              "config.hidden_size, config.num_attention_heads * self.head_dim, "
              "bias=config.attention_bias",
              "config.hidden_size, config.num_attention_heads * self.head_dim, bias=True",
              "layers.{0..1}.self_attn.q_proj.bias"),
    "vit": ("ViTConfig", f"ViTModel(ViTConfig({TINY}, image_size=32, patch_size=8))",
            "self.cls_token = nn.Parameter(torch.randn(1, 1, config.hidden_size))",
            "self.cls_token = nn.Parameter(torch.randn(1, 2, config.hidden_size))",
            "embeddings.cls_token"),
}


def absolute_imports(text: str, name: str) -> str:
    text = re.sub(r"^(\s*)from \.\.\. import ", r"\1from transformers import ", text, flags=re.M)
    text = re.sub(r"^(\s*)from \.\.\.(\w)", r"\1from transformers.\2", text, flags=re.M)
    text = re.sub(r"^(\s*)from \.\.(\w)", r"\1from transformers.models.\2", text, flags=re.M)
    return re.sub(r"^(\s*)from \.(\w)", rf"\1from transformers.models.{name}.\2", text, flags=re.M)


@pytest.mark.parametrize("name", list(HF_CASES))
def test_copied_transformers_model_points_at_changed_statement(project, name):
    config_class, call, old, new, key = HF_CASES[name]
    source = absolute_imports((HF_MODELS / name / f"modeling_{name}.py").read_text(), name)
    project.write("hf/__init__.py", "")
    copied = project.root / "hf" / f"modeling_{name}.py"
    copied.write_text(source)
    model_class = call.partition("(")[0]
    project.write("factory.py", f"from transformers import {config_class}\n"
                                f"from hf.modeling_{name} import {model_class}\n\n\n"
                                f"def build():\n    return {call}\n")
    project.configure(f'name = "{name}"\ntarget = "factory:build"')
    assert project.run("update").code == 0, project.run("update").err
    assert source.count(old) >= 1
    changed = source.replace(old, new, 1)
    copied.write_text(changed)
    findings, _ = check_json(project)
    assert key in findings, sorted(findings)
    found = findings[key]
    start = changed.index(new)
    line = changed.count("\n", 0, start) + 1
    statement_line = line if changed.splitlines()[line - 1].lstrip().startswith("self.") \
        else line - 1  # a later line of a multi-line call: the statement starts above
    first = changed.splitlines()[statement_line - 1]
    assert (found["file"], found["line"], found["column"]) == \
        (f"hf/modeling_{name}.py", statement_line, len(first) - len(first.lstrip()) + 1)
    assert found["end_line"] >= line


def test_installed_transformers_class_points_at_the_pyproject_entry(project):
    model = ('name = "bert"\ntarget = "transformers:BertModel"\n'
             'kwargs = { config = { _target_ = "transformers:BertConfig", hidden_size = 32, '
             'num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 37, '
             'vocab_size = 99 } }')
    project.configure(model)
    assert project.run("update").code == 0
    project.configure(model.replace("intermediate_size = 37", "intermediate_size = 38"))
    run = project.run("check", "--format", "json", "--format", "text:report.txt")
    assert run.code == 1, run.err
    findings = json.loads(run.out)["findings"]
    target_line = marked_line(project.root / "pyproject.toml", "target =")
    assert findings and all((f["file"], f["line"]) == ("pyproject.toml", target_line)
                            for f in findings)
    report = (project.root / "report.txt").read_text()
    assert "site-packages" not in run.out + report
    assert "created by code outside the project" in report


# -- the static fallback, when the build recorded no site ----------------------------------------

STATIC = ["assign", "annotated-assign", "add-module", "register-module", "register-buffer",
          "register-parameter", "setattr-literal", "nn-parameter", "multi-line-call",
          "base-class-in-another-file", "decorated-class", "nested-class", "class-in-function",
          "literal-sequential-multi-line", "literal-sequential-one-line", "module-dict",
          "nested-literal-sequential",
          "removed-top-level-layer", "dropped-bias", "renamed-layer", "renamed-in-every-block"]


def unrecorded_builder(specs, config, references):
    """The real build, minus its creation sites: what the static search alone finds."""
    from dataclasses import replace

    from ckptlint.build.builder import build_all

    return [replace(result, sites={}) for result in build_all(specs, config, references)]


def static_check(project, case: Case) -> tuple[dict[str, Finding], dict[str, str]]:
    from ckptlint.run.engine import check

    run_case(project, case)  # writes, updates, edits
    report = check(parse_config(project.root / "pyproject.toml"), builder=unrecorded_builder)
    texts = {path: (project.root / path).read_text() for path in case.files}
    flat = [m for f in report.findings for m in (f.members or (f,))]
    found = {f.key: f for f in flat}
    found.update({k: f for f in flat if f.key.endswith(".*") for k in f.keys})
    return found, texts


@pytest.mark.parametrize("name", STATIC)
def test_static_fallback_finds_the_same_statement(project, name):
    case = CASES[name]
    findings, texts = static_check(project, case)
    for key, expect in case.expected.items():
        loc = findings[key].location
        assert (loc.file, loc.line, loc.column, loc.end_line, loc.end_column) == \
            (expect.file, *expected_span(texts[expect.file], expect)), key
        if expect.note:
            assert expect.note in loc.note


@pytest.mark.parametrize("name", ["setattr-in-loop", "add-module-in-loop"])
def test_static_fallback_for_computed_names_says_so(project, name):
    case = CASES[name]
    findings, texts = static_check(project, case)
    for key, expect in case.expected.items():
        loc = findings[key].location
        assert (loc.file, loc.line) == (expect.file, marked(texts[expect.file], expect.marker))
        assert "computed at run time" in loc.note


def test_static_fallback_never_guesses_a_wrong_line(project):
    # built by a helper in another file: the static search cannot see inside the Sequential,
    # so it stops at the statement that creates the container
    case = CASES["sequential-from-list-variable"]
    findings, texts = static_check(project, case)
    loc = findings["seq.2.weight"].location
    assert (loc.file, loc.line) == ("models.py", marked(texts["models.py"], "seq"))


# -- each file parsed at most once; libcst only on findings ---------------------------------------

def test_each_file_is_parsed_at_most_once_per_run(project, monkeypatch):
    import ckptlint.source.cst

    parsed: list[str] = []
    original = ckptlint.source.cst._parse
    monkeypatch.setattr(ckptlint.source.cst, "_parse", lambda path: parsed.append(path) or original(path))
    case = CASES["base-class-in-another-file"]
    files = {**case.files, "helpers.py": CASES["helper-function"].files["helpers.py"]}
    files["models.py"] = files["models.py"].replace("from base", "from helpers import make_head\n"
                                                    "from base") + \
        "        self.head = make_head(8, 5)\n        self.tail = nn.Linear(8, 2)\n"
    files["models.py"] = "from torch import nn\n" + files["models.py"]
    edits = [("base.py", "nn.Linear(4, 8)", "nn.Linear(4, 9)"),
             ("helpers.py", "nn.Linear(d, n)", "nn.Linear(d, n + 1)"),
             ("models.py", "nn.Linear(8, 2)", "nn.Linear(8, 3, bias=False)")]
    for path, text in files.items():
        project.write(path, text)
    # two models built from the same files: still one parse per file in the run
    project.configure('name = "a"\ntarget = "models:Net"', 'name = "b"\ntarget = "models:Net"')
    assert project.run("update").code == 0
    for path, old, new in edits:
        text = (project.root / path).read_text()
        (project.root / path).write_text(text.replace(old, new, 1))
    run = project.run("check", "--format", "json")
    assert len(explained(json.loads(run.out)["findings"])) >= 10
    assert len(parsed) == len(set(parsed)) == 3, parsed


WRAPPER = ("import sys\nfrom ckptlint.commands.cli import main\ncode = main(['check'])\n"
           "print('libcst imported:', 'libcst' in sys.modules)\n")


@pytest.mark.parametrize("drift", [False, True])
def test_libcst_is_imported_only_when_there_are_findings(project, drift):
    project.write("models.py", CASES["assign"].files["models.py"])
    project.configure('name = "net"\ntarget = "models:Net"')
    assert project.run("update").code == 0
    if drift:
        text = (project.root / "models.py").read_text()
        (project.root / "models.py").write_text(text.replace("(d, 5)", "(d, 6)"))
    proc = subprocess.run([sys.executable, "-c", WRAPPER], cwd=project.root, capture_output=True,
                          text=True, timeout=300)
    assert f"libcst imported: {drift}" in proc.stdout, proc.stdout + proc.stderr


# -- the text report's code frames: golden files, colour ------------------------------------------

GOLDEN = Path(__file__).parent / "golden"
FRAMED = src('''
    class Net(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            self.embed = nn.Linear(4, d)
            self.head = nn.Linear(
                d,
                5,
            )
            self.seq = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 2))
            self.extra = nn.Linear(d, d)
            self.register_buffer("scale", torch.ones(4))
    ''')
FRAMED_EDITS = [("            5,\n", "            6,\n"), ("nn.Linear(8, 2)", "nn.Linear(8, 3)"),
                ("        self.extra = nn.Linear(d, d)\n", ""),
                ("torch.ones(4)", "torch.ones(4, dtype=torch.float16)")]


@pytest.fixture
def framed(project):
    project.write("models.py", FRAMED)
    project.configure('name = "net"\ntarget = "models:Net"')
    assert project.run("update").code == 0
    text = FRAMED
    for old, new in FRAMED_EDITS:
        text = text.replace(old, new)
    project.write("models.py", text)
    return project


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CKPTLINT_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
    assert path.exists(), f"no golden file {path}; run with CKPTLINT_REGEN_GOLDEN=1"
    assert actual == path.read_bytes().decode("utf-8")


def test_text_code_frames_golden(framed):
    run = framed.run("check", "--color", "never")
    assert run.code == 1
    assert_golden("locate_frames.txt", run.out)


def test_text_code_frames_golden_in_colour(framed):
    run = framed.run("check", "--color", "always")
    assert "\x1b[" in run.out
    assert_golden("locate_frames_color.txt", run.out)
    assert re.sub(r"\x1b\[[0-9;]*m", "", run.out) == framed.run("check", "--color", "never").out


@pytest.mark.parametrize(("env", "argv", "coloured"), [
    ({}, (), False),  # not a tty
    ({"FORCE_COLOR": "1"}, (), True),
    ({"NO_COLOR": "1"}, ("--color", "always"), True),  # the flag wins
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, (), False),
    ({"FORCE_COLOR": "1"}, ("--color", "never"), False),
])
def test_colour_follows_flag_then_environment(framed, monkeypatch, env, argv, coloured):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = framed.run("check", *argv)
    assert ("\x1b[" in run.out) is coloured
    assert "models.py:9:9:" in re.sub(r"\x1b\[[0-9;]*m", "", run.out)
