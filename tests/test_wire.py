"""What crosses the pipe from a build process is what the build made: every field of a
signature and of a build result survives the JSON round trip (no torch needed)."""

from __future__ import annotations

import dataclasses
import json

from ckptlint.build.wire import (decode_request, decode_result, encode_request, encode_result,
                                 signature_doc, signature_from)
from ckptlint.core.records import (BuildResult, Config, LoadReport, Location, ModelSpec,
                                   ModuleInfo, Signature, Site, TensorSpec)

SIGNATURE = Signature(
    tensors={"blocks.10.w": TensorSpec("float32", (4, 2), "parameter"),
             "blocks.2.w": TensorSpec("bfloat16", (), "buffer"),
             "head.weight": TensorSpec("int8", (3,), None), "odd key\n\u00e9": TensorSpec("object", ())},
    versions={"norm": 2, "": 3}, aliases={"head.weight": "blocks.10.w"}, has_metadata=False,
    model="m", target="pkg.mod:Net", torch_version="2.13.0", source="checkpoint",
    ties_recorded=True)


def _differs_from_defaults(value: object) -> None:
    for f in dataclasses.fields(value):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        assert getattr(value, f.name) != default, f"set {type(value).__name__}.{f.name} here"


def test_every_field_of_a_signature_crosses_in_its_order():
    _differs_from_defaults(SIGNATURE)  # a field added later must be added to SIGNATURE too
    back = signature_from(json.loads(json.dumps(signature_doc(SIGNATURE))))
    assert back == SIGNATURE and list(back.tensors) == list(SIGNATURE.tensors)
    assert all(type(s.shape) is tuple for s in back.tensors.values())


def test_every_field_of_a_build_result_crosses():
    result = BuildResult(
        model="m", signature=SIGNATURE, load=LoadReport(*[(f"k{i}",) for i in range(
            len(dataclasses.fields(LoadReport)))]),
        error="it broke", error_location=Location("m.py", 3, 2, 4, 9, "by git"),
        notes=("a note",), fallbacks=("cpu op",),
        sites={"blocks.2.w": Site("m.py", 7, "tied", (("m.py", 12), ("n.py", 1)))},
        modules={"": ModuleInfo("Net", (("m.py", "Net"),))}, files=("m.py",),
        nonpersistent=("blocks.2.w",), inputs={"files": {"m.py": "abc"}})
    _differs_from_defaults(result)
    _differs_from_defaults(result.load)
    assert decode_result(json.loads(json.dumps(encode_result(result)))) == result


def test_values_that_share_a_row_on_the_wire_are_equal_in_every_field():
    """Equal per-key values cross once: a field `==` ignored would be lost for all but one."""
    for record in (TensorSpec, Site, ModuleInfo):
        assert all(f.compare for f in dataclasses.fields(record)), record
    sig = Signature(tensors={f"l.{i}.{n}": TensorSpec("float32", (i % 2 + 1,), "parameter")
                             for i in range(4) for n in ("weight", "bias")})
    doc = json.loads(json.dumps(signature_doc(sig)))
    assert len(doc["tensors"][1]) == 2 and signature_from(doc) == sig


def test_a_request_carries_its_references():
    sent = [ModelSpec("m", "pkg.mod:Net", kwargs={"width": 3}), ModelSpec("n", "pkg.mod:Net")]
    config = Config(root="/p", pyproject="/p/pyproject.toml", models=tuple(sent))
    specs, back, refs = decode_request(json.loads(encode_request(sent, config,
                                                                 [SIGNATURE, None])))
    assert specs == sent and refs == [SIGNATURE, None] and back.root == "/p"
