"""The public API: what `ckptlint` exports, and the one-line test helpers users call."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

import ckptlint


def test_public_names_are_exactly_these():
    assert sorted(ckptlint.__all__) == sorted([
        "CkptlintError", "Finding", "Kind", "Location", "Report", "Severity", "Signature",
        "TensorSpec", "__version__", "assert_loads", "check", "convert", "read", "signature"])
    for name in ckptlint.__all__:
        assert getattr(ckptlint, name) is not None


def test_import_ckptlint_does_not_import_torch_or_libcst():
    code = "import sys, ckptlint; print(sorted({m.split('.')[0] for m in sys.modules} & " \
           "{'torch', 'libcst'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class Net(nn.Module):
    def __init__(self, width: int = 8, classes: int = 3):
        super().__init__()
        self.body = nn.Linear(4, width)
        self.head = nn.Linear(width, classes)


def test_signature_of_a_class_is_built_on_meta():
    sig = ckptlint.signature(Net, width=16)
    assert sig.tensors["body.weight"].shape == (16, 4) and sig.num_parameters == 4 * 16 + 16 + 51


def test_assert_loads_passes_and_fails_with_the_reason(tmp_path):
    path = tmp_path / "net.safetensors"
    save_model(Net(), str(path))
    ckptlint.assert_loads(Net, path)
    with pytest.raises(AssertionError) as info:
        ckptlint.assert_loads(Net, path, classes=5)
    assert "CKL103 `head.weight` is f32[3, 8] in the checkpoint but f32[5, 8] in the code" \
        in str(info.value)


def test_strict_false_tolerates_missing_keys_but_not_shapes(tmp_path):
    path = tmp_path / "net.pt"
    state = Net().state_dict()
    del state["head.bias"]
    torch.save(state, path)
    with pytest.raises(AssertionError, match="CKL101"):
        ckptlint.assert_loads(Net, path)
    ckptlint.assert_loads(Net, path, strict=False)
    with pytest.raises(AssertionError, match="CKL103"):
        ckptlint.assert_loads(Net, path, strict=False, width=6)


def test_check_returns_findings_for_a_live_model_or_a_signature(tmp_path):
    old = ckptlint.signature(Net)
    assert ckptlint.check(Net(), old) == []
    kinds = {f.kind.slug for f in ckptlint.check(Net, old, classes=4)}
    assert kinds == {"shape-mismatch"}
    torch.save(Net().state_dict(), tmp_path / "n.pt")
    assert ckptlint.read(tmp_path / "n.pt").tensors == {
        k: type(v)(v.dtype, v.shape, None) for k, v in old.tensors.items()}
