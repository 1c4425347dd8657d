"""Inline `# ckptlint: ignore[...]` comments: they silence their statement, and stale ones show."""

from __future__ import annotations

import json

import pytest

MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        self.fc = nn.Linear(4, 4)  # ckptlint: ignore[CKL103]
        # ckptlint: ignore[CKL103]
        self.head = nn.Linear(4, classes)
        note = "# ckptlint: ignore in a string is no comment"
'''
NET = 'name = "net"\ntarget = "models:Net"'


def _doc(run):
    return json.loads(run.out)


def test_a_comment_silences_its_statement_and_a_stale_one_is_reported(project):
    project.write("models.py", MODEL)
    project.configure(NET, 'name = "other"\ntarget = "models:Net"')
    project.run("update")
    project.write("models.py", MODEL.replace("classes=2", "classes=3"))
    for _ in range(2):  # the second run answers `net` and `other` from the cache
        run = project.run("check", "--format", "json")
        doc = _doc(run)
        assert run.code == 0
        assert [(f["code"], f["file"], f["line"], f["column"]) for f in doc["findings"]] == [
            ("CKL205", "models.py", 7, 36)]
        assert "ignore[CKL103]" in doc["findings"][0]["message"]


def test_checking_some_models_does_not_call_comments_unused(project):
    project.write("models.py", MODEL)
    project.configure(NET)
    project.run("update")
    assert _doc(project.run("check", "net", "--format", "json"))["findings"] == []


def explained(findings: list) -> list:
    """The findings as diffed: a grouped finding (one cause) stands for its members."""
    return [m for f in findings for m in (f.get("members") or [f])]


def test_a_comment_for_another_code_does_not_silence(project):
    project.write("models.py", MODEL.replace("# ckptlint: ignore[CKL103]\n        self.head",
                                             "# ckptlint: ignore[CKL101]\n        self.head"))
    project.configure(NET)
    project.run("update")
    project.write("models.py", MODEL.replace("# ckptlint: ignore[CKL103]\n        self.head",
                                             "# ckptlint: ignore[CKL101]\n        self.head")
                  .replace("classes=2", "classes=3"))
    run = project.run("check", "--format", "json")
    codes = sorted(f["code"] for f in explained(_doc(run)["findings"]))
    assert run.code == 1 and codes == ["CKL103", "CKL103", "CKL205", "CKL205"]  # weight, bias


# (the comment on the cause line, whether the group of a CKL103 and a CKL101 change stays)
GROUP_COMMENTS = [
    ("# ckptlint: ignore[CKL103]", True),  # names one of its codes: the CKL101 change must show
    ("# ckptlint: ignore[CKL101]", True),
    ("# ckptlint: ignore[CKL101, CKL103]", False),
    ("# ckptlint: ignore", False),
    ("# an ordinary comment", True),
]


@pytest.mark.parametrize("comment, stays", GROUP_COMMENTS)
def test_a_group_is_silenced_only_by_every_code_it_explains(tmp_path, comment: str,
                                                            stays: bool) -> None:
    from ckptlint.core.kinds import Kind
    from ckptlint.core.records import Finding, Location
    from ckptlint.source.cst import SourceIndex
    from ckptlint.source.suppress import inline

    (tmp_path / "m.py").write_text(f"hidden = 2 * d  {comment}\n")
    cause = Location("m.py", 1, 1, 1, 15)
    members = (Finding(Kind.SHAPE_MISMATCH, "net", "wider", key="a.w", keys=("a.w",)),
               Finding(Kind.MISSING_KEY, "net", "new", key="b.w", keys=("b.w",)))
    group = Finding(Kind.SHAPE_MISMATCH, "net", "one edit", key="a.w", keys=("a.w", "b.w"),
                    location=cause, members=members)
    assert (inline([group], str(tmp_path), SourceIndex()) == [group]) is stays
