"""`--format json`: one stable document with every finding and a per-model summary."""

from __future__ import annotations

import json
from typing import Any

from ckptlint.core.records import Finding, Location, ModelReport, Report, TensorSpec
from ckptlint.reporters.options import RenderOptions

SCHEMA_VERSION = 1


def spec_dict(spec: TensorSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {"dtype": spec.dtype, "shape": list(spec.shape), "role": spec.role}


def finding_dict(f: Finding) -> dict[str, Any]:
    """One finding; a grouped one (one cause) sits at its cause and keeps, per key, the
    statement creating it (`locations`), every old -> new pair of a rename (`renames`), and
    the findings it explains (`members`), so nothing a machine needs is folded away."""
    loc = f.location
    doc = {
        "model": f.model, "code": f.code, "kind": f.kind.slug, "severity": f.severity.value,
        "key": f.key, "count": len(f.keys), "keys": list(f.keys), "new_key": f.new_key or None,
        "old": spec_dict(f.old), "new": spec_dict(f.new), "message": f.message,
        "help": f.help or None, "against": f.against or None,
        "file": loc.file if loc else None, "line": loc.line if loc else None,
        "column": loc.column if loc else None, "end_line": loc.end_line if loc else None,
        "end_column": loc.end_column if loc else None,
    }
    if f.keys:
        doc["locations"] = {key: {"file": where.file, "line": where.line}
                            for key, where in _locations(f).items()}
    renames = {old: new for m in (f.members or (f,)) for old, new in zip(m.keys, m.new_keys)}
    if renames:
        doc["renames"] = renames
    if f.evidence:
        doc["evidence"] = f.evidence
    if f.members:
        doc["members"] = [finding_dict(m) for m in f.members]
    return doc


def _locations(f: Finding) -> dict[str, Location]:
    return {k: m.location for m in (f.members or (f,)) if m.location is not None
            for k in m.keys}


def model_dict(m: ModelReport) -> dict[str, Any]:
    return {"name": m.name, "status": m.status, "signature": m.signature_file or None,
            "findings": len(m.findings), "parameters": {"old": m.old_parameters,
                                                        "new": m.new_parameters},
            "notes": list(m.notes), "verdict": m.verdict or None,
            "verdict_note": m.verdict_note or None}


def render(report: Report, options: RenderOptions) -> str:
    doc = {
        "version": SCHEMA_VERSION,
        "findings": [finding_dict(f) for f in report.findings],
        "models": [model_dict(m) for m in report.models],
        "notes": list(report.notes),
        "exit_code": int(report.outcome),
    }
    return json.dumps(doc, indent=2) + "\n"
