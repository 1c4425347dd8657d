"""Inline `# ckptlint: ignore[...]` comments: they silence their statement, and stale ones show."""

from __future__ import annotations

import json

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
