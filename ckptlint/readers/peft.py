"""PEFT LoRA adapters: `adapter_model.safetensors` (or `.bin`) beside `adapter_config.json`.

An adapter is no state dict of its model: it holds, under `base_model.model.`, two small
factors per target module (`q_proj.lora_A.weight` r x in, `q_proj.lora_B.weight` out x r) and
whole copies of its `modules_to_save`. Merged into the base model, `lora_B @ lora_A` is added
to the target's weight, so the adapter changes `q_proj.weight`, whose shape the factors imply.
It is read as exactly that: a partial signature (`Signature.partial`) of the keys it changes,
which the check compares with the code (each target must exist with that shape) while the base
model's own checkpoint provides every other key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ckptlint.core.errors import CheckpointError
from ckptlint.core.keys import natural_sorted
from ckptlint.core.record import replace
from ckptlint.core.records import ADAPTER_SOURCE, Signature, TensorSpec
from ckptlint.readers.base import MAX_TEXT_BYTES, CheckpointRead, read_small
from ckptlint.readers.files import is_file, is_folder

FORMAT = ADAPTER_SOURCE
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."  # where PEFT's LoraModel keeps the wrapped model
# factor names -> (A, B) of one target; the embedding's factors are parameters, not modules
_FACTORS = {("lora_A.weight", "lora_B.weight"): False,
            ("lora_embedding_A", "lora_embedding_B"): True}
# entries of a target that change no shape of it: DoRA's magnitude (out features, checked by
# PEFT itself when it loads) and lora_bias's bias on lora_B (added to the base bias)
_SHAPELESS = ("lora_magnitude_vector", "lora_B.bias")


def adapted(path: Path, read: CheckpointRead) -> CheckpointRead:
    """`read` as the keys its adapter changes, when it is a PEFT adapter; else `read` itself.

    An adapter is told by its keys (every one under `base_model.model.`, some `lora_` factor)
    and, when present, by the `adapter_config.json` beside it.
    """
    keys = list(read.signature.tensors)
    if not keys or not all(k.startswith(PREFIX) for k in keys) \
            or not any(".lora_" in k for k in keys):
        return read
    config = _config(path)
    where = str(path)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(where, f"is a PEFT {config.get('peft_type')} adapter; ckptlint "
                                     "checks LoRA adapters only")
    rel = {k[len(PREFIX):]: v for k, v in read.signature.tensors.items()}
    tensors, targets = _merged(rel, bool(config.get("fan_in_fan_out")), where)
    signature = Signature(tensors=tensors, has_metadata=False, source=ADAPTER_SOURCE,
                          torch_version=read.signature.torch_version)
    return CheckpointRead(signature, FORMAT, _note(config, targets, read.note, path), {})


def _config(path: Path) -> Mapping[str, Any]:
    """The adapter_config.json beside the weights (or in the folder); {} when there is none."""
    folder = path if is_folder(path) else path.parent
    file = folder / CONFIG
    if not is_file(file):
        return {}
    try:
        doc = json.loads(read_small(file, MAX_TEXT_BYTES, "an adapter config").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(str(file), f"is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(str(file), "is not a JSON object, so not a PEFT adapter config")
    return doc


def _merged(rel: Mapping[str, TensorSpec], fan_in_fan_out: bool,
            where: str) -> tuple[dict[str, TensorSpec], list[str]]:
    """The keys the adapter changes once merged, and its LoRA target modules."""
    tensors: dict[str, TensorSpec] = {}
    targets: list[str] = []
    used: set[str] = set()
    for (a_name, b_name), embedding in _FACTORS.items():
        for key in natural_sorted(k for k in rel if k.endswith("." + a_name)):
            module = key[:-len(a_name) - 1]
            a, b = rel[key], rel.get(f"{module}.{b_name}")
            if b is None:
                raise CheckpointError(where, f"holds `{PREFIX}{key}` without its "
                                             f"`{b_name}` factor")
            tensors[f"{module}.weight"] = _implied(a, b, embedding, fan_in_fan_out, where, module)
            targets.append(module)
            used |= {key, f"{module}.{b_name}"}
    for key, spec in rel.items():
        if key in used or any(key.endswith("." + s) for s in _SHAPELESS):
            continue
        if ".lora_" in f".{key}":
            raise CheckpointError(where, f"holds `{PREFIX}{key}`, a LoRA entry ckptlint does not "
                                         "know how to merge")
        tensors[key] = spec  # a whole copy (modules_to_save): loaded as it is
    return tensors, targets


def _implied(a: TensorSpec, b: TensorSpec, embedding: bool, fan_in_fan_out: bool, where: str,
             module: str) -> TensorSpec:
    """The target weight's shape that `B @ A` has: Linear (out, in), Conv (out, in, *kernel),
    Embedding (num, dim), transformers' Conv1D (in, out) when `fan_in_fan_out`."""
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[0] != b.shape[1]:
        raise CheckpointError(where, f"holds LoRA factors of `{module}` whose ranks disagree "
                                     f"({list(a.shape)} and {list(b.shape)})")
    if embedding:
        shape = (a.shape[1], b.shape[0])
    elif fan_in_fan_out:
        shape = (a.shape[1], b.shape[0])
    else:
        shape = (b.shape[0], a.shape[1], *a.shape[2:])
    # the base weight's dtype is the base checkpoint's, not the adapter's: the factor's stands
    # in, and the check compares no dtype of an adapter (merging casts)
    return replace(a, shape=shape, role=None)


def _note(config: Mapping[str, Any], targets: list[str], inner: str, path: Path) -> str:
    rank = f"r={config['r']}" if "r" in config else "its rank"
    base = config.get("base_model_name_or_path")
    of = f" of {base}" if isinstance(base, str) and base else ""
    version = f", peft {config['peft_version']}" if isinstance(config.get("peft_version"), str) \
        else ""
    modules = f"{len(targets)} module{'' if len(targets) == 1 else 's'}"
    said = (f"a PEFT LoRA adapter ({rank}{version}) for {modules} of a base "
            f"model{of}: checked as the keys it changes once merged, with the shapes LoRA "
            "implies (the base model's own checkpoint holds the other keys)")
    if not config:
        said += f"; no {CONFIG} beside it, so its factors were read as nn.Linear/Conv ones"
    return "; ".join(n for n in (inner, said) if n)
