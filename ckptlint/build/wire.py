"""The wire format between a parent and the processes that build for it: requests (models,
config, references) and `BuildResult`s as JSON documents.

A signature crosses as a plain list of its tensors, not as signature-file text: folding and
parsing 50,000 keys costs a second each way, and the file's checks are for files people edit.
Every field of `Signature` is carried (tests/test_wire.py round-trips one with each set).

Per-key values (a tensor's spec, where it was created, a module's classes) repeat from layer to
layer, so each crosses as a table of the distinct values and one number per key (`_table`):
JSON reads a list of numbers several times faster than as many small lists, and the parent
makes one record per distinct value, shared by the keys that have it (records are frozen).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

from ckptlint.core.record import asdict, field_names
from ckptlint.core.records import (BuildResult, Config, LoadReport, Location, ModelSpec, ModuleInfo,
                                   Signature, Site, TensorSpec)


def encode_request(specs: Sequence[ModelSpec], config: Config,
                   references: Sequence[Signature | None], processes: int = 1) -> str:
    return json.dumps({
        "processes": processes,
        "config": {**asdict(config), "models": []},
        "jobs": [{"spec": asdict(spec), "reference": signature_doc(ref) if ref else None}
                 for spec, ref in zip(specs, references)],
    })


def decode_request(doc: dict) -> tuple[list[ModelSpec], Config, list[Signature | None]]:
    specs = [_spec(job["spec"]) for job in doc["jobs"]]
    config = Config(**{**doc["config"], "pythonpath": tuple(doc["config"]["pythonpath"]),
                       "models": tuple(specs)})
    refs = [signature_from(job["reference"]) if job["reference"] else None
            for job in doc["jobs"]]
    return specs, config, refs


def _spec(doc: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**{**doc, "checkpoints": tuple(doc["checkpoints"]),
                        "ignore": {k: tuple(v) for k, v in doc["ignore"].items()}})


def encode_result(result: BuildResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "signature": signature_doc(result.signature) if result.signature else None,
        "load": asdict(result.load) if result.load else None,
        "error": result.error,
        "error_location": asdict(result.error_location) if result.error_location else None,
        "notes": list(result.notes),
        "fallbacks": list(result.fallbacks),
        **_sites_doc(result.sites),
        "modules": _table(result.modules, lambda m: [m.type_name, [list(c) for c in m.classes]]),
        "files": list(result.files),
        "nonpersistent": list(result.nonpersistent),
        "inputs": result.inputs,
    }


def decode_result(doc: dict[str, Any]) -> BuildResult:
    location = doc["error_location"]
    return BuildResult(
        model=doc["model"],
        signature=signature_from(doc["signature"]) if doc["signature"] else None,
        load=LoadReport(**{k: tuple(v) for k, v in doc["load"].items()}) if doc["load"] else None,
        error=doc["error"],
        error_location=Location(**{k: v for k, v in location.items() if k != "source"})
        if location else None,
        notes=tuple(doc["notes"]),
        fallbacks=tuple(doc.get("fallbacks", ())),
        sites=_sites(doc),
        modules=_untable(doc["modules"],
                         lambda t, classes: ModuleInfo(t, tuple(tuple(c) for c in classes))),
        files=tuple(doc["files"]),
        nonpersistent=tuple(doc.get("nonpersistent", ())),
        inputs=doc.get("inputs"),
    )


def signature_doc(sig: Signature) -> dict[str, Any]:
    doc = {name: getattr(sig, name) for name in field_names(Signature)}
    doc.update(tensors=_table(sig.tensors, lambda s: [s.dtype, s.shape, s.role]),
               versions=dict(sig.versions), aliases=dict(sig.aliases))
    return doc


def signature_from(doc: dict[str, Any]) -> Signature:
    tensors = _untable(doc["tensors"], lambda dtype, shape, role: TensorSpec(dtype, tuple(shape),
                                                                             role))
    return Signature(**{**doc, "tensors": tensors})


def _sites_doc(sites: Mapping[str, Site]) -> dict[str, Any]:
    """Sites, with their stacks written once each: layers repeated a thousand times share one."""
    stacks: dict[tuple, int] = {}
    return {"sites": _table(sites, lambda s: [s.file, s.line, s.via,
                                              stacks.setdefault(s.stack, len(stacks))]),
            "stacks": [[list(f) for f in stack] for stack in stacks]}


def _sites(doc: dict[str, Any]) -> dict[str, Site]:
    stacks = [tuple((f, line) for f, line in stack) for stack in doc["stacks"]]
    return _untable(doc["sites"], lambda f, line, via, index: Site(f, line, via, stacks[index]))


def _table(values: Mapping[str, Any], encode: Callable[[Any], list]) -> list:
    """[keys, [each distinct value encoded], [its number for each key]]. Values are told apart
    by `==`, so every field of a tabled record must take part in it (tests/test_wire.py)."""
    numbers: dict[Any, int] = {}
    order = [numbers.setdefault(v, len(numbers)) for v in values.values()]
    return [list(values), [encode(v) for v in numbers], order]


def _untable(doc: list, decode: Callable[..., Any]) -> dict[str, Any]:
    keys, distinct, order = doc
    made = [decode(*fields) for fields in distinct]
    return dict(zip(keys, map(made.__getitem__, order)))
