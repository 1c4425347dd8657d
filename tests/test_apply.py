"""`ckptlint.source.apply`: the hook goes into the source with libcst, and nothing else changes."""

from __future__ import annotations

import difflib

import pytest

from ckptlint.source import apply

from ckptlint.run import hook
from ckptlint.core.records import ModelSpec

SPEC = ModelSpec("net", "models:Net")
NAME = hook.hook_name(SPEC)
RULES = hook.Rules(((r"^fc\.", "head."),))

# comments, odd spacing, a semicolon, a continuation, an early return, CRLF-free but tabs in a
# string: every byte of it must survive
ODD = '''"""A model file someone formatted by hand."""
import torch ;  from torch import nn   # two imports, one line


# ---- the network --------------------------------------------------
@torch.no_grad()   # a decorator with a comment
class Net( nn.Module ):
    """Docstring with\ttabs."""

    def __init__( self, d = 8,
                  n=4 ):  # odd
        super( Net, self ).__init__( )   # the call
        self.head  =  nn.Linear( d ,5 )  # was fc
        if n < 0 :
            return
        # a comment at the end
class Other: x = 1
'''


def _edit(source: str, rules: hook.Rules = RULES, qualname: str = "Net") -> apply.Edit:
    return apply.with_hook("models.py", source, qualname, NAME, hook.function(SPEC, rules),
                           hook.registration(SPEC))


def _only_insertions(before: str, after: str) -> list[str]:
    """The inserted lines, asserting that every line of `before` is still there in order."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    inserted = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        assert tag in ("equal", "insert"), (tag, a[i1:i2], b[j1:j2])
        inserted += b[j1:j2] if tag == "insert" else []
    return inserted


def test_odd_formatting_keeps_every_other_byte():
    edit = _edit(ODD)
    inserted = _only_insertions(ODD, edit.after)
    function = hook.function(SPEC, RULES).splitlines(keepends=True)
    registration = ["        # checkpoints saved before the refactor load through this hook "
                    "(ckptlint remap)\n", f"        {hook.registration(SPEC)}\n"]
    assert sorted(inserted) == sorted(function + ["\n", "\n"] + registration)
    # the registration follows the super().__init__ line, before the early return
    lines = edit.after.splitlines()
    at = lines.index("        super( Net, self ).__init__( )   # the call")
    assert lines[at + 2] == f"        {hook.registration(SPEC)}"
    # the hook sits above the class's comment block, which stays with the class
    assert edit.after.index(f"def {NAME}(") < edit.after.index("# ---- the network")
    compile(edit.after, "models.py", "exec")


def test_a_second_edit_changes_nothing():
    once = _edit(ODD).after
    again = _edit(once)
    assert not again.changed and again.diff() == ""


def test_new_rules_replace_the_hook_in_place():
    once = _edit(ODD).after
    more = hook.Rules(RULES.renames + ((r"^blocks\.(\d+)\.", r"blocks.\g<1>.0."),),
                      (r"^n_averaged$",))
    twice = _edit(once, more)
    assert twice.after.count(f"def {NAME}(") == 1
    assert twice.after.count("_register_load_state_dict_pre_hook") == 1
    assert apply.existing_rules("models.py", twice.after, NAME) == more
    # only the rule tables and the drop branch changed: the function kept its place
    assert twice.after.index(f"def {NAME}(") == once.index(f"def {NAME}(")


def test_existing_rules_of_a_file_without_the_hook_are_none():
    assert apply.existing_rules("models.py", ODD, NAME) is None
    assert not apply.is_registered("models.py", ODD, "Net", NAME)
    assert apply.is_registered("models.py", _edit(ODD).after, "Net", NAME)


def test_a_class_without_init_gets_one():
    source = "from torch import nn\n\n\nclass Net(nn.Linear):\n    \"\"\"doc\"\"\"\n"
    after = _edit(source).after
    assert "    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)" \
        in after
    assert after.index('"""doc"""') < after.index("def __init__")
    _only_insertions(source, after)


def test_nested_class_and_other_self_name():
    source = ("from torch import nn\n\n\nclass Outer:\n    class Net(nn.Module):\n"
              "        def __init__(me):\n            nn.Module.__init__(me)\n")
    after = _edit(source, qualname="Outer.Net").after
    assert f"            me._register_load_state_dict_pre_hook({NAME}, with_module=True)" in after
    assert after.index(f"def {NAME}(") < after.index("class Outer")


def test_without_a_super_call_it_registers_before_the_last_return():
    source = ("from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
              "        self.setup()\n        return\n")
    lines = _edit(source).after.splitlines()
    assert lines[-2].strip().startswith("self._register_load_state_dict_pre_hook(")
    assert lines[-1] == "        return"


@pytest.mark.parametrize("source, message", [
    ("def _remap_net_checkpoint(m, sd, p, *a):\n    pass\n\n\nclass Net:\n"
     "    def __init__(self):\n        pass\n", "which ckptlint did not write"),
    ("class Net: pass\n", "on one line"),
    ("if True:\n    class Net:\n        pass\n", "no class `Net` at module level"),
    ("class Net:\n    pass\nclass Net:\n    pass\n", "more than one class `Net`"),
    ("class Net(:\n", "cannot be parsed"),
])
def test_what_cannot_be_edited_is_one_sentence(source, message):
    with pytest.raises(apply.ApplyError, match=message) as info:
        _edit(source)
    assert str(info.value).startswith("models.py: ")


def test_a_hand_edited_hook_is_refused_not_guessed():
    edited = _edit(ODD).after.replace("    renames = [", "    renames = RULES + [")
    with pytest.raises(apply.ApplyError, match="cannot read"):
        apply.existing_rules("models.py", edited, NAME)


def test_a_function_in_a_locals_class_is_refused():
    with pytest.raises(apply.ApplyError, match="inside a function"):
        _edit(ODD, qualname="make.<locals>.Net")


def test_the_diff_names_the_file():
    diff = _edit(ODD).diff()
    assert diff.startswith("--- a/models.py\n+++ b/models.py\n")
    assert f"+def {NAME}(module, state_dict, prefix, *args):" in diff
