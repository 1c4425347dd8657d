"""`--format sarif`: SARIF 2.1.0 for GitHub code scanning, one run, one rule per finding kind.

Results carry `partialFingerprints` built from (code, model, key) only, so an alert keeps its
identity when unrelated edits shift its line. Text is kept exactly (JSON escapes what it
must); a lone surrogate from a pickled key is written as its `\\udXXX` escape, since raw it
cannot be encoded as UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote

from ckptlint.core.constants import VERSION
from ckptlint.core.kinds import Kind, Outcome, Severity
from ckptlint.core.records import Finding, Location, Report
from ckptlint.core.sigfile import format_spec
from ckptlint.reporters.options import RenderOptions

SCHEMA_URI = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
              "sarif-schema-2.1.0.json")
FINGERPRINT = "ckptlint/v1"
SRCROOT = "%SRCROOT%"
_SURROGATE = re.compile("[\ud800-\udfff]")
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}
# GitHub sorts and filters alerts by `problem.severity`, whose vocabulary differs from SARIF's.
PROBLEM_SEVERITY = {Severity.ERROR: "error", Severity.WARNING: "warning",
                    Severity.NOTE: "recommendation"}

def pascal(slug: str) -> str:
    return "".join(word.capitalize() for word in slug.split("-"))


def help_text(kind: Kind, options: RenderOptions) -> str:
    """What breaks at load time, then how to fix or accept it (NAME is the model's name)."""
    fix = kind.spec.help.format(cmd=options.command)
    return f"{kind.doc[:1].upper()}{kind.doc[1:]}. {fix}".strip()


def rule(kind: Kind, options: RenderOptions) -> dict[str, Any]:
    text = help_text(kind, options)
    return {
        "id": kind.code,
        "name": pascal(kind.slug),
        "shortDescription": {"text": kind.slug.replace("-", " ")},
        "fullDescription": {"text": kind.doc},
        "help": {"text": text, "markdown": text},
        "defaultConfiguration": {"level": LEVELS[kind.severity]},
        "properties": {"tags": ["architecture-drift"], "precision": "very-high",
                       "problem.severity": PROBLEM_SEVERITY[kind.severity]},
    }


def fingerprint(f: Finding, key: str | None = None) -> str:
    """Stable across line shifts: only what the finding is about, never where it is."""
    text = f"{f.code}\0{f.model}\0{f.key if key is None else key}".encode(
        "utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def region(loc: Location) -> dict[str, int]:
    # Location already uses SARIF's convention (1-based, end_column exclusive): no conversion.
    out = {"startLine": loc.line, "startColumn": loc.column}
    if loc.end_line is not None:
        out["endLine"] = loc.end_line
    if loc.end_column is not None:
        out["endColumn"] = loc.end_column
    return out


def locations(f: Finding) -> list[dict[str, Any]]:
    """A physical location when known, else a logical one naming the model.

    GitHub code scanning rejects the whole upload if a result lacks a physical location, so the
    engine should give every finding one; the logical location keeps the SARIF valid meanwhile.
    """
    if f.location is None:
        return [{"logicalLocations": [{"name": f.model, "kind": "object"}]}] if f.model else []
    # A relative URI reference: `:` in a path would otherwise read as a scheme.
    uri = quote(f.location.file.replace("\\", "/"), safe="/")
    return [{"physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": SRCROOT},
                                  "region": region(f.location)}}]


def message(f: Finding) -> str:
    return f"{f.message}\nhelp: {f.help}" if f.help else f.message


def properties(f: Finding) -> dict[str, Any]:
    props: dict[str, Any] = {"model": f.model, "key": f.key, "count": len(f.keys)}
    if f.new_key:
        props["newKey"] = f.new_key
    renames = {old: new for m in (f.members or (f,)) for old, new in zip(m.keys, m.new_keys)}
    if renames:
        props["renames"] = renames
    if f.evidence:
        props["evidence"] = f.evidence
    if f.old is not None:
        props["old"] = format_spec(f.old)
    if f.new is not None:
        props["new"] = format_spec(f.new)
    return props


def result(f: Finding, index: dict[Kind, int]) -> dict[str, Any]:
    """One result per finding; a grouped finding (one cause) is one result at the cause, each
    key it explains a related location at its creating statement with its own fingerprint.
    The result's fingerprint is its first key's, so an alert keeps its identity when a
    finding starts or stops being grouped with others."""
    out: dict[str, Any] = {
        "ruleId": f.code, "ruleIndex": index[f.kind], "level": LEVELS[f.severity],
        "message": {"text": message(f)},
    }
    if locs := locations(f):
        out["locations"] = locs
    if f.members:
        out["relatedLocations"] = related(f)
    out["partialFingerprints"] = {FINGERPRINT: fingerprint(f.members[0] if f.members else f)}
    out["properties"] = properties(f)
    return out


def related(f: Finding) -> list[dict[str, Any]]:
    """Every key of a grouped finding, where it is created, with its finding's fingerprint."""
    from ckptlint.source.wording import brief

    found = []
    for member in f.members:
        for key in member.keys:
            entry: dict[str, Any] = {
                "id": len(found), "message": {"text": f"{member.code} {brief(member)}"},
                "properties": {"key": key, "fingerprint": fingerprint(member, key)}}
            if physical := locations(member):
                entry.update(physical[0])
            found.append(entry)
    return found


def notifications(report: Report) -> list[dict[str, Any]]:
    notes = [n for m in report.models for n in m.notes] + list(report.notes)
    return [{"message": {"text": n}, "level": "note"} for n in notes]


def render(report: Report, options: RenderOptions) -> str:
    # Every kind is a rule, in declaration order, so ruleIndex never depends on what was found.
    kinds = list(Kind)
    index = {kind: i for i, kind in enumerate(kinds)}
    # a model that could not be built or checked is a failed execution, not just a result
    invocation: dict[str, Any] = {"executionSuccessful": not report.outcome & Outcome.UNCHECKED}
    if notes := notifications(report):
        invocation["toolExecutionNotifications"] = notes
    run = {
        "tool": {"driver": {"name": "ckptlint", "version": VERSION,
                            "rules": [rule(kind, options) for kind in kinds]}},
        "invocations": [invocation],
        "columnKind": "unicodeCodePoints",
        "results": [result(f, index) for f in report.findings],
    }
    doc = {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    # only inside JSON strings can a surrogate be; there its escape means the same
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
