"""Grouped findings (one cause, several keys) in every format: one entry per cause for people,
every key at its creating statement for machines. Golden files plus the properties that must
hold whatever the wording."""

from __future__ import annotations

import json

import pytest

from ckptlint.core.kinds import Kind
from ckptlint.core.records import Finding, Location, ModelReport, Report, TensorSpec
from ckptlint.reporters import renderer
from ckptlint.reporters.options import RenderOptions
from ckptlint.reporters.sarif import fingerprint
from ckptlint.source.wording import headline

F32 = "float32"


def spec(*shape: int) -> TensorSpec:
    return TensorSpec(F32, shape, "parameter")


def member(kind: Kind, key: str, line: int, old=None, new=None, **extra) -> Finding:
    keys = extra.pop("keys", (key,))
    return Finding(kind, "gpt", f"`{key}` differs", key=key, keys=keys, old=old, new=new,
                   location=Location("model.py", line, 9, line, 60), **extra)


def grouped_report() -> Report:
    shapes = (member(Kind.SHAPE_MISMATCH, "lm_head.weight", 74, spec(96, 16), spec(128, 16)),
              member(Kind.SHAPE_MISMATCH, "transformer.wte.weight", 74, spec(96, 16),
                     spec(128, 16)))
    cause = Finding(Kind.SHAPE_MISMATCH, "gpt", headline(shapes, True), key=shapes[0].key,
                    keys=("lm_head.weight", "transformer.wte.weight"),
                    location=Location("model.py", 59, 5, 59, 26,
                                      "changed since signatures/gpt.toml was committed (abc1234)"),
                    help="undo this change, or accept it with `ckptlint update gpt`",
                    members=shapes)
    rename = member(Kind.RENAMED_KEY, "layers.{0..1}.attn.to_q.*", 30,
                    keys=("layers.0.attn.to_q.weight", "layers.1.attn.to_q.weight"),
                    new_key="layers.{0..1}.attn.q_proj.*",
                    new_keys=("layers.0.attn.q_proj.weight", "layers.1.attn.q_proj.weight"),
                    evidence="paired by name: `to_q` ~ `q_proj`")
    gone = (member(Kind.UNEXPECTED_KEY, "head.bias", 80, spec(5), None),
            member(Kind.SHAPE_MISMATCH, "head.weight", 80, spec(5, 16), spec(6, 16)))
    here = Finding(Kind.SHAPE_MISMATCH, "gpt", headline(gone, False), key="head.bias",
                   keys=("head.bias", "head.weight"), location=gone[0].location,
                   help=gone[0].help, members=gone)
    model = ModelReport("gpt", (cause, rename, here), signature_file="signatures/gpt.toml",
                        old_parameters=3_000, new_parameters=3_500)
    return Report(models=(model,))


@pytest.mark.parametrize("fmt", ["text", "github", "json", "sarif"])
def test_grouped_findings_golden(golden, fmt):
    text = renderer(fmt)(grouped_report(), RenderOptions())
    if fmt == "sarif":  # the version is not part of what is compared
        doc = json.loads(text)
        doc["runs"][0]["tool"]["driver"]["version"] = "X"
        text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    golden(f"groups_{fmt}.{'json' if fmt in ('json', 'sarif') else 'txt'}", text)


def test_github_puts_one_annotation_per_cause():
    lines = renderer("github")(grouped_report(), RenderOptions()).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("::error file=model.py,line=59,")
    assert "`transformer.wte.weight` f32[96, 16] → f32[128, 16] (model.py:74)" in lines[0]


def test_json_keeps_every_key_where_it_is_created_and_every_rename_pair():
    cause, rename, here = json.loads(renderer("json")(grouped_report(), RenderOptions()))[
        "findings"]
    assert (cause["file"], cause["line"], cause["count"]) == ("model.py", 59, 2)
    assert cause["locations"] == {"lm_head.weight": {"file": "model.py", "line": 74},
                                  "transformer.wte.weight": {"file": "model.py", "line": 74}}
    assert [m["key"] for m in cause["members"]] == ["lm_head.weight", "transformer.wte.weight"]
    assert rename["renames"] == {"layers.0.attn.to_q.weight": "layers.0.attn.q_proj.weight",
                                 "layers.1.attn.to_q.weight": "layers.1.attn.q_proj.weight"}
    assert rename["evidence"] == "paired by name: `to_q` ~ `q_proj`"
    assert {m["kind"] for m in here["members"]} == {"unexpected-key", "shape-mismatch"}


def test_sarif_keeps_one_related_location_and_fingerprint_per_key():
    report = grouped_report()
    results = json.loads(renderer("sarif")(report, RenderOptions()))["runs"][0]["results"]
    assert len(results) == 3
    cause = report.models[0].findings[0]
    first = results[0]
    # the group keeps the identity its first key had alone: alerts survive regrouping
    assert first["partialFingerprints"]["ckptlint/v1"] == fingerprint(cause.members[0])
    related = first["relatedLocations"]
    assert [r["properties"]["key"] for r in related] == list(cause.keys)
    assert [r["properties"]["fingerprint"] for r in related] == [
        fingerprint(m) for m in cause.members]
    assert all(r["physicalLocation"]["region"]["startLine"] == 74 for r in related)
    renamed = results[1]["properties"]["renames"]
    assert renamed["layers.1.attn.to_q.weight"] == "layers.1.attn.q_proj.weight"
