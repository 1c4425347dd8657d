"""What the cold path pays for: `inspect` in a project compares committed signatures and
imports no torch; `--build` asks for the code as it is now."""

from __future__ import annotations

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
