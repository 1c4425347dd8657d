"""The proven key mapping: renames found by the diagnosis, as a load-state-dict pre-hook.

The renames ckptlint found (wrapper prefixes, an EMA wrapper, moved layers) become regex rules
inside a self-contained hook function. ckptlint runs that very function over the checkpoint's
keys, and loads the result with torch's own `load_state_dict` on meta tensors: only a strict,
clean load counts as proof. `remap` prints the hook, `remap --apply` writes it into the model's
class, `convert` writes a checkpoint with the keys it produces. Builds go through the caller's
`Build` (forked children for the CLI), so nothing here imports torch.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from ckptlint.compare import diff, prefix
from ckptlint.compare.mapping import MARKER, Rules
from ckptlint.core.errors import CkptlintError
from ckptlint.core.keys import expand, natural_sorted, segments
from ckptlint.core.record import record, replace
from ckptlint.core.records import BuildResult, LoadReport, ModelSpec, Signature

_RANGE = re.compile(r"^\{(\d+)\.\.(\d+)\}$")
# segments of the keys a PEFT adapter adds (LoRA, DoRA, IA3, LoHa, LoKr, OFT, VeRA): their
# weights are merged into the base layer by arithmetic, which no key mapping can do
PEFT_SEGMENTS = frozenset({
    "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector",
    "ia3_l", "hada_w1_a", "hada_w1_b", "lokr_w1", "lokr_w2", "oft_r", "vera_lambda_b",
    "base_layer",
})

# builds the model with each reference given and returns plain results (torch's verdicts)
Build = Callable[[Sequence["Signature | None"]], list[BuildResult]]


@record
class Remap:
    """The rules, the hook that applies them, what it does to the checkpoint's keys, the code's
    signature, and torch's verdict on the re-keyed checkpoint."""

    rules: Rules
    snippet: str
    # the state dict the hook leaves: new key -> the old key whose tensor it holds
    moved: Mapping[str, str]
    old_keys: tuple[str, ...]
    current: Signature
    proof: LoadReport | None

    @property
    def mapping(self) -> dict[str, str]:
        """Old key -> new key, for the keys the hook renames."""
        return {old: new for new, old in self.moved.items() if new != old}

    @property
    def dropped(self) -> list[str]:
        kept = set(self.moved.values())
        return natural_sorted(k for k in self.old_keys if k not in kept)

    @property
    def proved(self) -> bool:
        return clean(self.proof)


def clean(load: LoadReport | None) -> bool:
    """Whether torch's dry run loaded strictly: nothing missing, unexpected, or raised."""
    return load is not None and not (load.missing or load.unexpected or load.mismatched
                                     or load.errors or load.hook_errors)


class PeftAdapterError(CkptlintError):
    """The checkpoint is a PEFT adapter (or a model with one): it needs merging, not a remap."""

    def __init__(self, label: str, keys: Sequence[str] = ()):
        shown = ", ".join(f"`{k}`" for k in keys[:3])
        what = f" ({shown}{' ...' if len(keys) > 3 else ''})" if keys else ""
        super().__init__(
            f"{label} holds PEFT adapter weights{what}: "
            "loading it into the plain model needs the adapter merged into its base layers "
            "(W + scale * B @ A), which is arithmetic, not a key mapping; merge it with peft "
            "(`PeftModel.from_pretrained(model, adapter).merge_and_unload()`) and save that "
            "model's state_dict(), then remap or convert the merged file")


def plan(spec: ModelSpec, raw: Signature, build: Build, label: str, base: Rules = Rules(),
         ties: bool = False, known: BuildResult | None = None) -> Remap:
    """The rules that load `raw` into the model, run as a hook over its keys, and proven.

    `base` holds the rules of a hook the code already has (new rules are added after them).
    With `ties`, keys the code ties and the checkpoint stored once are filled from their
    partner before the proof (what `convert` writes); plain strict loading does not fill them.
    `known` is the build with `raw` (entry prefix stripped), when the caller already has it.
    """
    aligned = prefix.strip(raw, spec.strip_prefix)
    [first] = [known] if known else build([aligned])
    current = built(first, spec)
    refuse_adapter(raw, current, label)
    if base.renames or base.drops:  # found on top of what the hook in the code does
        start = apply_rules(base, raw.tensors, current.tensors)
        after = replace(first, load=_rekeyed(first.load, start, raw))
        rules = base + _rules(_moved(raw, start), current, after)
    else:
        rules = _strip_rules(spec, raw, aligned) + _rules(aligned, current, first)
    moved = apply_rules(rules, raw.tensors, current.tensors, spec)
    reference = _moved(raw, moved)
    if ties:
        from ckptlint.run.report import restore_ties

        reference = restore_ties(reference, current)
    [proof] = build([reference])
    return Remap(rules, snippet(spec, rules), moved, tuple(raw.tensors), current, proof.load)


def built(result: BuildResult, spec: ModelSpec) -> Signature:
    if result.signature is None:
        raise CkptlintError(f"model `{spec.name}` could not be built: {result.error}")
    return result.signature


def refuse_adapter(raw: Signature, current: Signature, label: str) -> None:
    """A PEFT adapter's keys in the checkpoint but not in the code: say it needs merging.

    An adapter file is read as the keys it changes once merged (`readers.peft`), a
    PeftModel's whole state dict keeps the adapter's own keys beside the base layers'."""
    if raw.partial:
        raise PeftAdapterError(label)
    ours = {seg for key in current.tensors for seg in key.split(".")} & PEFT_SEGMENTS
    found = [k for k in natural_sorted(raw.tensors) if set(k.split(".")) & PEFT_SEGMENTS - ours]
    if found:
        raise PeftAdapterError(label, found)


def _moved(raw: Signature, moved: Mapping[str, str]) -> Signature:
    """`raw` as the hook leaves it: renamed keys, dropped ones gone."""
    tensors = {new: raw.tensors[old] for new, old in moved.items()}
    renamed = {old: new for new, old in moved.items()}
    return replace(prefix.rekey(raw, renamed), tensors=tensors,
                   aliases={renamed[k]: renamed[v] for k, v in raw.aliases.items()
                            if k in renamed and v in renamed})


def _strip_rules(spec: ModelSpec, raw: Signature, aligned: Signature) -> Rules:
    """The entry's `strip_prefix`, and the wrapper's own keys it takes off with it
    (AveragedModel's `n_averaged`)."""
    if not spec.strip_prefix:
        return Rules()
    gone = [k for k in raw.tensors if k not in aligned.tensors
            and k in prefix.EXTRAS.get(spec.strip_prefix, ())]
    return Rules((_strip_rule(spec.strip_prefix),), tuple(_exact(k) for k in gone))


def _exact(key: str) -> str:
    return f"^{re.escape(key)}$"


def _rules(aligned: Signature, current: Signature, result: BuildResult) -> Rules:
    """Rules (applied in order, each at most once per key) that take `aligned` to the code."""
    rules = Rules()
    wrapper = prefix.detect(aligned, current)
    if wrapper is not None:  # the build re-keyed its dry run the same way: `load` has new keys
        rules += Rules(tuple(_wrapper_rules(wrapper)), tuple(_exact(k) for k in wrapper.dropped))
        aligned = wrapper.apply(aligned)
    pairs = diff.rename_pairs(aligned, current, result.load, result.nonpersistent)
    lists = _lists(aligned)
    for old, new, subtree in diff.fold_renames(pairs):
        rules += Rules(tuple(_pair_rules(old, new, subtree, lists)))
    return rules


def _rekeyed(load: LoadReport | None, moved: Mapping[str, str],
             before: Signature) -> LoadReport | None:
    """torch's report as if the re-keying (`moved`: new key -> old key) had come first: its
    unexpected keys renamed (those it dropped gone), the keys it fills no longer missing."""
    if load is None:
        return None
    renamed = {old: new for new, old in moved.items()}
    return replace(load, unexpected=tuple(renamed.get(k, k) for k in load.unexpected
                                          if k in renamed or k not in before.tensors),
                   missing=tuple(k for k in load.missing if k not in moved))


def _lists(signature: Signature) -> dict[str, frozenset[str]]:
    """Module prefix -> the indices of the list (ModuleList, Sequential) it holds."""
    found: dict[str, set[str]] = {}
    for key in signature.tensors:
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part.isdigit():
                found.setdefault(".".join(parts[:i]), set()).add(part)
    return {p: frozenset(indices) for p, indices in found.items()}


def _whole_list(parts: list[str], position: int, lists: Mapping[str, frozenset[str]]) -> bool:
    """Whether the range at `position` covers every index of its list, under every prefix the
    folded pattern stands for: the rename is then the layer's own, at any depth."""
    indices = frozenset(expand(parts[position]))
    prefixes = expand(".".join(parts[:position])) if position else [""]
    return all(lists.get(p) == indices for p in prefixes)


def _strip_rule(p: str) -> tuple[str, str]:
    if p == prefix.CHECKPOINT_WRAPPER:
        return rf"(^|\.){re.escape(p)}", r"\g<1>"
    return f"^{re.escape(p)}", ""


def _wrapper_rules(wrapper: prefix.Wrapper) -> list[tuple[str, str]]:
    inner = prefix.CHECKPOINT_WRAPPER
    if wrapper.side == "checkpoint":
        rules = [_strip_rule(wrapper.prefix)] if wrapper.prefix != inner else []
        if any(inner in f".{k}" for k in wrapper.mapping):
            rules.append(_strip_rule(inner))
        return rules
    if wrapper.prefix != inner:
        return [("^", wrapper.prefix)]
    return [(f"^{re.escape(old)}$", new) for old, new in wrapper.mapping.items()]


def _pair_rules(old: str, new: str, subtree: bool,
                lists: Mapping[str, frozenset[str]]) -> list[tuple[str, str]]:
    r"""One rule for a folded pair, its ranges as groups; exact rules when that cannot work.

    A range over every index of its list becomes `(\d+)`: the old checkpoint the hook is for
    may be deeper than the registered config (a 2-layer entry, a 24-layer release); a range
    over some of them keeps its indices, `(0|3)`. (A list of one layer folds to no range, so
    its index stays literal: nothing tells a reference to it from a new literal `0`.)"""
    end = r"\." if subtree else "$"
    tail = "." if subtree else ""
    groups: list[str] = []
    pattern = []
    parts = segments(old)
    for position, seg in enumerate(parts):
        if _RANGE.match(seg):
            groups.append(seg)
            pattern.append(r"(\d+)" if _whole_list(parts, position, lists)
                           else "(" + "|".join(expand(seg)) + ")")
        else:
            pattern.append(re.escape(seg))
    replacement, free = [], list(range(len(groups)))
    for seg in segments(new):
        if _RANGE.match(seg):
            match = next((i for i in free if groups[i] == seg), None)
            if match is None:
                return [(f"^{re.escape(o)}{end}", n + tail)
                        for o, n in zip(expand(old), expand(new))]
            free.remove(match)
            replacement.append(f"\\g<{match + 1}>")
        else:
            replacement.append(seg.replace("\\", "\\\\"))
    return [("^" + r"\.".join(pattern) + end, ".".join(replacement) + tail)]


def hook_name(spec: ModelSpec) -> str:
    return "_remap_" + re.sub(r"\W", "_", spec.name) + "_checkpoint"


def registration(spec: ModelSpec, self_name: str = "self") -> str:
    """The statement `__init__` runs to register the hook."""
    return (f"{self_name}._register_load_state_dict_pre_hook({hook_name(spec)}, "
            "with_module=True)")


def function(spec: ModelSpec, rules: Rules) -> str:
    """The hook: one self-contained module-level function (what `--apply` writes)."""
    renames = "".join(f"        ({_raw_string(p)}, {_raw_string(r)}),\n" for p, r in rules.renames)
    drops = "".join(f"        {_raw_string(p)},\n" for p in rules.drops)
    dropping = (f"    dropped = [\n{drops}    ]\n", "        if any(re.search(p, rel) for p in "
                "dropped):\n            del state_dict[key]\n            continue\n") \
        if rules.drops else ("", "")
    return f'''def {hook_name(spec)}(module, state_dict, prefix, *args):
    """{MARKER} {spec.name}`: renames the keys of checkpoints saved before
    the refactor, so they load with strict=True. Rules apply in order, each at most once per
    key; keys the model already expects are left alone, so new checkpoints load unchanged."""
    import re

    renames = [
{renames}    ]
{dropping[0]}    expected = set(module.state_dict())
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        if rel in expected:
            continue
{dropping[1]}        new = rel
        for pattern, replacement in renames:
            new = re.sub(pattern, replacement, new, count=1)
        if new != rel:
            state_dict[prefix + new] = state_dict.pop(key)
'''


def snippet(spec: ModelSpec, rules: Rules) -> str:
    """The hook and where to register it: what `remap` prints."""
    cls = spec.target.rpartition(":")[2].rpartition(".")[2]
    return (function(spec, rules) + f"\n\n# and in {cls}.__init__, after super().__init__() "
            f"(`ckptlint remap {spec.name} --apply` writes both):\n#     {registration(spec)}\n")


def _raw_string(text: str) -> str:
    # repr escapes what is not printable: a key's ESC or newline never reaches the terminal
    if "'" not in text and not text.endswith("\\") and text.isprintable():
        return f"r'{text}'"
    return repr(text)


class _KeysOnly:
    """Stands in for the model inside the hook: its `state_dict()` keys are all the hook reads."""

    def __init__(self, keys: Sequence[str]):
        self._keys = keys

    def state_dict(self) -> dict[str, None]:
        return dict.fromkeys(self._keys)


def apply_rules(rules: Rules, old_keys: Sequence[str] | Mapping[str, Any],
                new_keys: Sequence[str] | Mapping[str, Any],
                spec: ModelSpec | None = None) -> dict[str, str]:
    """Run the hook `function` writes over the checkpoint's keys, as torch would call it:
    new key -> the old key it holds, for every key left in the state dict."""
    spec = spec or ModelSpec("keys", "keys:keys")
    namespace: dict[str, Any] = {}
    exec(compile(function(spec, rules), "<ckptlint remap>", "exec"), namespace)  # noqa: S102
    state = {k: k for k in old_keys}
    namespace[hook_name(spec)](_KeysOnly(list(new_keys)), state, "", {}, True, [], [], [])
    return state


def failures(proof: LoadReport | None) -> list[str]:
    """What still fails in torch's dry run, one line per kind."""
    if proof is None:
        return ["torch's dry run did not run"]
    return ([f"missing: {_quoted(natural_sorted(proof.missing))}"] if proof.missing else []) + \
        ([f"unexpected: {_quoted(natural_sorted(proof.unexpected))}"]
         if proof.unexpected else []) + \
        ([f"size mismatch: {_quoted(proof.mismatched)}"] if proof.mismatched else []) + \
        list(proof.errors) + list(proof.hook_errors)


def _quoted(keys: Sequence[str]) -> str:
    # each key in backticks: a key may hold a comma itself (a ModuleDict's "a,b")
    return ", ".join(f"`{k}`" for k in keys)
