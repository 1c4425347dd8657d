"""Building real models on meta: signatures, tied weights, fallbacks, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from ckptlint.build.builder import build
from ckptlint.build.dryrun import dry_run_load, signature_of
from ckptlint.config import parse_config
from ckptlint.core.records import ModelSpec, TensorSpec

REPO = Path(__file__).resolve().parent.parent


def test_signature_records_roles_dtypes_versions_and_skips_non_persistent_buffers():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, dtype=torch.float16)
            self.bn = nn.BatchNorm2d(4)
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    sig = signature_of(Net())
    assert sig.tensors["conv.weight"] == TensorSpec("float16", (4, 3, 3, 3), "parameter")
    assert sig.tensors["bn.running_mean"] == TensorSpec("float32", (4,), "buffer")
    assert sig.tensors["bn.num_batches_tracked"] == TensorSpec("int64", (), "buffer")
    assert "scratch" not in sig.tensors
    assert sig.versions == {"bn": 2}


def test_tied_weights_are_recorded_as_aliases():
    sys.path.insert(0, str(REPO))
    from examples.gpt import TinyGPT

    with torch.device("meta"):
        model = TinyGPT(n_layer=1)
    sig = signature_of(model)
    assert sig.aliases == {"wte.weight": "lm_head.weight"}
    untied = TinyGPT(n_layer=1)
    untied.lm_head.weight = nn.Parameter(untied.wte.weight.detach().clone())
    assert signature_of(untied).aliases == {}


def _project(tmp_path: Path, source: str, target: str) -> tuple:
    (tmp_path / "m.py").write_text(textwrap.dedent(source))
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "m"\ntarget = "{target}"\n')
    return ModelSpec("m", target), parse_config(tmp_path / "pyproject.toml")


def test_model_that_cannot_be_built_on_meta_is_built_on_cpu_with_a_note(tmp_path):
    spec, config = _project(tmp_path, '''
        import torch
        from torch import nn

        class NeedsData(nn.Module):
            def __init__(self):
                super().__init__()
                scale = torch.ones(1)
                self.fc = nn.Linear(4, int(scale.item()) + 1)
        ''', "m:NeedsData")
    result = build(spec, config)
    assert result.signature.tensors["fc.weight"].shape == (2, 4)
    note, = result.notes
    assert "construction on the meta device failed" in note and "built on the CPU" in note


def test_meta_build_does_not_initialise_or_import_dynamo(tmp_path):
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from ckptlint.build.builder import build
        from ckptlint.config import parse_config
        from ckptlint.core.records import ModelSpec
        from pathlib import Path
        config = parse_config(Path({str(REPO / "pyproject.toml")!r}))
        result = build(ModelSpec("gpt", "examples.gpt:TinyGPT"), config)
        layer = torch.nn.Linear(3, 3)  # a CPU layer afterwards still initialises for real
        print(result.signature.num_parameters, "torch._dynamo" in sys.modules,
              bool(layer.weight.abs().sum() > 0))
        ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["241024", "False", "True"]


def test_dry_run_uses_torch_loader_semantics():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    sig = signature_of(model)
    old = type(sig)(tensors={k: v for k, v in sig.tensors.items() if "num_batches" not in k},
                    versions={})
    report = dry_run_load(model, old)
    assert report.missing == () and report.unexpected == () and report.errors == ()
    wrong = type(sig)(tensors={**sig.tensors, "0.weight": TensorSpec("float32", (4, 2))})
    assert dry_run_load(model, wrong).mismatched == ("0.weight",)


def test_7b_llama_signature_allocates_no_weights():
    """A 6.7B-parameter model in fp32 would need 27 GB; on meta the process stays small."""
    code = textwrap.dedent(f'''
        import json, resource, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from ckptlint.build.builder import build
        from ckptlint.config import parse_config
        from ckptlint.core.records import ModelSpec
        config = parse_config(Path({str(REPO / "pyproject.toml")!r}))
        sig = build(ModelSpec("llama", "examples.llama:Llama"), config).signature
        # this process's own peak (VmHWM): ru_maxrss keeps the parent's peak across exec on
        # Linux, so it would measure the test process that started this one
        status = Path("/proc/self/status")
        peak = (int(status.read_text().split("VmHWM:")[1].split()[0]) if status.exists()
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        print(json.dumps([sig.num_parameters, len(sig.tensors), peak // 1024]))
        ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    params, tensors, peak_mb = json.loads(out.stdout)
    assert params == 6_738_415_616 and tensors == 32 * 9 + 3
    assert peak_mb < 600, f"peak RSS {peak_mb} MB"


def test_missing_torch_is_one_sentence_saying_what_to_install(tmp_path):
    (tmp_path / "m.py").write_text("from torch import nn\nclass M(nn.Linear):\n    pass\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ckptlint]\n[[tool.ckptlint.models]]\nname = "m"\ntarget = "m:M"\n')
    code = ("import sys\nsys.modules['torch'] = None  # as if torch were not installed\n"
            "from ckptlint.commands.cli import main\nraise SystemExit(main(['check', '--no-cache']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("ckptlint: error: torch is not installed in this environment")
    assert 'pip install "ckptlint[torch]"' in out.stderr and "CKPTLINT_PYTHON" in out.stderr
