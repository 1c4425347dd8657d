"""Config validation: each mistake is one sentence naming the pyproject.toml key, exit 2."""

from __future__ import annotations

import pytest

GOOD_MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(width, 2)


def not_a_module():
    return [1, 2]


CONSTANT = 3
'''

CASES = [
    ("unknown model key",
     ['name = "net"\ntarget = "models:Net"\nkwarg = { width = 4 }'], "",
     "pyproject.toml:9: unknown key `tool.ckptlint.models[0].kwarg` (did you mean `kwargs`?)"),
    ("unknown tool key", ['name = "net"\ntarget = "models:Net"'], 'signature = "sigs"\n',
     "pyproject.toml:5: unknown key `tool.ckptlint.signature` (did you mean `signatures`?)"),
    ("duplicate names", ['name = "net"\ntarget = "models:Net"', 'name = "net"\ntarget = "models:Net"'],
     "", "pyproject.toml:11: `tool.ckptlint.models[1].name` = 'net' is already used by "
         "tool.ckptlint.models[0]"),
    ("malformed target", ['name = "net"\ntarget = "models.Net"'], "",
     "pyproject.toml:8: `tool.ckptlint.models[0].target` = 'models.Net' is not of the form "
     "\"package.module:attribute\""),
    ("malformed nested target",
     ['name = "net"\ntarget = "models:Net"\nkwargs = { cfg = { _target_ = "x y" } }'], "",
     "`tool.ckptlint.models[0].kwargs.cfg._target_` = 'x y' is not of the form"),
    ("missing target", ['name = "net"'], "", "`tool.ckptlint.models[0]` needs a `target`"),
    ("bad name", ['name = "../net"\ntarget = "models:Net"'], "",
     "`tool.ckptlint.models[0].name` = '../net' must be a file-name-safe identifier"),
    ("kwargs not a table", ['name = "net"\ntarget = "models:Net"\nkwargs = 3'], "",
     "`tool.ckptlint.models[0].kwargs` must be a table"),
    ("name ending in a newline", ['name = "m\\n"\ntarget = "models:Net"'], "",
     "pyproject.toml:6: `tool.ckptlint.models[0].name` = 'm\\n' must be a file-name-safe "
     "identifier"),
    ("target ending in a newline", ['name = "net"\ntarget = "models:Net\\n"'], "",
     "pyproject.toml:8: `tool.ckptlint.models[0].target` = 'models:Net\\n' is not of the form"),
    ("names equal up to case",
     ['name = "Model"\ntarget = "models:Net"', 'name = "model"\ntarget = "models:Net"'], "",
     "pyproject.toml:11: `tool.ckptlint.models[1].name` = 'model' differs only in case from "
     "'Model', the name of tool.ckptlint.models[0]"),
    ("signatures in the project folder itself", ['name = "pyproject"\ntarget = "models:Net"'],
     'signatures = "."\n', "pyproject.toml:5: `tool.ckptlint.signatures` = '.' is the project "
     "folder itself (where a model's file could replace pyproject.toml)"),
    ("signatures at a Windows absolute path", ['name = "net"\ntarget = "models:Net"'],
     'signatures = "C:\\\\sigs"\n', "pyproject.toml:5: `tool.ckptlint.signatures` = 'C:\\\\sigs' "
     "is an absolute path"),
]


@pytest.mark.parametrize("name,models,extra,sentence", CASES, ids=[c[0] for c in CASES])
def test_config_error_is_one_sentence_and_exit_2(project, name, models, extra, sentence):
    project.write("models.py", GOOD_MODEL)
    project.configure(*models, extra=extra)
    run = project.run("check")
    assert run.code == 2 and run.out == ""
    assert run.err.startswith("ckptlint: error: ") and sentence in run.err
    assert len(run.err.strip().splitlines()) == 1 and "Traceback" not in run.err


@pytest.mark.parametrize("target,sentence,line", [
    ("models:CONSTANT", "tool.ckptlint.models[0].target `models:CONSTANT` is not callable "
                        "(it is int)", 8),
    ("models:not_a_module", "tool.ckptlint.models[0].target `models:not_a_module` returned "
                            "list, not a torch.nn.Module", 8),
    ("models:Missing", "cannot import `models:Missing`: AttributeError", 8),
    ("nomodule:Net", "cannot import `nomodule:Net`: ModuleNotFoundError: No module named "
                     "'nomodule'", 8),
])
def test_target_errors_name_the_key_and_line(project, target, sentence, line):
    project.write("models.py", GOOD_MODEL)
    project.configure(f'name = "net"\ntarget = "{target}"')
    project.write("signatures/net.toml", "")
    run = project.run_subprocess("check")
    assert run.code == 2, run.err
    assert f"pyproject.toml:{line}:" in run.out and sentence in run.out
    assert "Traceback" not in run.out + run.err


def test_wrong_kwargs_point_at_the_kwargs_line(project):
    project.write("models.py", GOOD_MODEL)
    project.configure('name = "net"\ntarget = "models:Net"\nkwargs = { widht = 4 }')
    run = project.run("update")
    assert run.code == 2
    assert "pyproject.toml:9: CKL201 net: building `models:Net` raised TypeError" in run.out
    assert "unexpected keyword argument 'widht'" in run.out


def test_no_pyproject_with_tool_table(project):
    project.write("pyproject.toml", '[project]\nname = "x"\n')
    run = project.run("check")
    assert run.code == 2
    assert "no pyproject.toml with a [tool.ckptlint] table here or in any parent" in run.err


def test_config_is_found_from_a_subdirectory(project):
    project.write("models.py", GOOD_MODEL)
    project.configure('name = "net"\ntarget = "models:Net"')
    project.root = project.root / "deep" / "er"
    project.root.mkdir(parents=True)
    assert project.run("update").out == "wrote signatures/net.toml\n"


def test_invalid_toml_names_the_file(project):
    project.write("pyproject.toml", "[tool.ckptlint\n")
    run = project.run("check")
    assert run.code == 2 and "pyproject.toml: is not valid TOML" in run.err


def test_hydra_targets_are_built_first(project):
    project.write("pkg/__init__.py", "")
    project.write("pkg/nets.py", '''
        from dataclasses import dataclass
        from torch import nn


        @dataclass
        class Inner:
            width: int


        @dataclass
        class Outer:
            inner: Inner
            classes: int


        class Net(nn.Module):
            def __init__(self, config: Outer):
                super().__init__()
                self.fc = nn.Linear(config.inner.width, config.classes)
        ''')
    project.configure('name = "net"\ntarget = "pkg.nets:Net"\n'
                      'kwargs = { config = { _target_ = "pkg.nets:Outer", classes = 3, '
                      'inner = { _target_ = "pkg.nets:Inner", width = 6 } } }')
    project.run("update")
    assert '"fc.weight" = "f32[3, 6]"' in (project.root / "signatures/net.toml").read_text()


def test_pythonpath_entries_are_importable(project):
    project.write("src/mylib/__init__.py", "")
    project.write("src/mylib/net.py", GOOD_MODEL)
    project.configure('name = "net"\ntarget = "mylib.net:Net"', extra='pythonpath = ["src"]\n')
    assert project.run("update").code == 0
