"""`ckptlint remap NAME`: what loads an old checkpoint into the current code, proven first.

The key renames ckptlint found (wrapper prefixes, moved layers) become regex rules inside a
ready-to-paste load-state-dict pre-hook. ckptlint runs that very hook over the checkpoint's keys
and loads the result with torch's own `load_state_dict` on meta tensors: only a strict, clean
load counts as proof. Otherwise it says what still fails and exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from ckptlint import diff, engine, prefix, sigfile
from ckptlint.commands.setup import prepare
from ckptlint.errors import CkptlintError
from ckptlint.ftypes import BuildResult, Config, LoadReport, ModelSpec, Signature
from ckptlint.keys import expand, natural_sorted, printable, segments
from ckptlint.paths import relative
from ckptlint.urls import location

_RANGE = re.compile(r"^\{(\d+)\.\.(\d+)\}$")


@dataclass(frozen=True, slots=True)
class Remap:
    """The rules, the snippet that applies them, the mapping it produced, and torch's verdict."""

    rules: tuple[tuple[str, str], ...]
    snippet: str
    mapping: Mapping[str, str]
    proof: LoadReport | None
    # keys the hook deletes: a wrapper's own (AveragedModel's `n_averaged`)
    dropped: tuple[str, ...] = ()

    @property
    def proved(self) -> bool:
        p = self.proof
        return p is not None and not (p.missing or p.unexpected or p.mismatched or p.errors
                                      or p.hook_errors)


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=False)
    spec = engine.select(setup.config, [args.name])[0]
    raw, label = _reference(setup.config, spec, args.against)
    aligned = prefix.strip(raw, spec.strip_prefix)
    [first] = setup.builder([spec], setup.config, [aligned])
    current = _built(first, spec)
    rules = tuple(_rules(spec, raw, aligned, current, first))
    drops = _drops(spec, raw, aligned, current)
    snippet = hook_snippet(spec, rules, drops)
    mapping, dropped = run_snippet(snippet, hook_name(spec), list(raw.tensors),
                                   list(current.tensors))
    remapped = prefix.rekey(prefix.without(raw, dropped), mapping)
    [proof] = setup.builder([spec], setup.config, [remapped])
    remap = Remap(rules, snippet, mapping, proof.load, dropped)
    out = sys.stdout
    out.write(_json(spec, label, remap) if args.format == "json" else _text(spec, label, remap))
    return 0 if remap.proved else 1


def _reference(config: Config, spec: ModelSpec, against: str | None) -> tuple[Signature, str]:
    if against:
        ref = engine.read_reference(config, spec, location(against), committed=False)
        if ref.signature is None:
            raise CkptlintError(ref.problem.message if ref.problem else f"cannot read {against}")
        return ref.signature, ref.label
    path = engine.signature_path(config, spec.name)
    label = relative(path, config.root)
    if not path.exists():
        raise CkptlintError(f"no committed signature {label} for model `{spec.name}`: run "
                            f"`ckptlint update {spec.name}` first, or pass --against FILE")
    return sigfile.read(path, label), label


def _built(result: BuildResult, spec: ModelSpec) -> Signature:
    if result.signature is None:
        raise CkptlintError(f"model `{spec.name}` could not be built: {result.error}")
    return result.signature


def _rules(spec: ModelSpec, raw: Signature, aligned: Signature, current: Signature,
           result: BuildResult) -> list[tuple[str, str]]:
    """Regex rules (pattern, replacement), applied in order, each at most once per key."""
    rules = []
    if spec.strip_prefix:
        rules.append(_strip_rule(spec.strip_prefix))
    wrapper = prefix.detect(aligned, current)
    if wrapper is not None:
        rules += _wrapper_rules(wrapper)
        aligned = wrapper.apply(aligned)
    pairs = diff.rename_pairs(aligned, current, result.load, result.nonpersistent)
    lists = _lists(aligned)
    for old, new, subtree in diff.fold_renames(pairs):
        rules += _pair_rules(old, new, subtree, lists)
    return rules


def _drops(spec: ModelSpec, raw: Signature, aligned: Signature,
           current: Signature) -> tuple[str, ...]:
    """Exact keys the hook deletes: those a wrapper added beside the model's own."""
    stripped = tuple(k for k in raw.tensors if k not in aligned.tensors
                     and k in prefix.EXTRAS.get(spec.strip_prefix, ()))
    wrapper = prefix.detect(aligned, current)
    return stripped + (wrapper.dropped if wrapper else ())


def _lists(signature: Signature) -> dict[str, frozenset[str]]:
    """Module prefix -> the indices of the list (ModuleList, Sequential) it holds."""
    found: dict[str, set[str]] = {}
    for key in signature.tensors:
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part.isdigit():
                found.setdefault(".".join(parts[:i]), set()).add(part)
    return {prefix: frozenset(indices) for prefix, indices in found.items()}


def _whole_list(parts: list[str], position: int, lists: Mapping[str, frozenset[str]]) -> bool:
    """Whether the range at `position` covers every index of its list, under every prefix the
    folded pattern stands for: the rename is then the layer's own, at any depth."""
    indices = frozenset(expand(parts[position]))
    prefixes = expand(".".join(parts[:position])) if position else [""]
    return all(lists.get(prefix) == indices for prefix in prefixes)


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


def hook_snippet(spec: ModelSpec, rules: tuple[tuple[str, str], ...],
                 drops: tuple[str, ...] = ()) -> str:
    name = hook_name(spec)
    table = "".join(f"    ({_raw_string(p)}, {_raw_string(r)}),\n" for p, r in rules)
    # only a hook that deletes keys carries the lines that do it
    drop_table = "" if not drops else (
        "# keys the wrapper that saved the checkpoint added beside the model's own\n"
        f"_DROP = {{{', '.join(repr(k) for k in drops)}}}\n")
    drop_step = "" if not drops else (
        "        if rel in _DROP:\n"
        "            del state_dict[key]\n"
        "            continue\n")
    cls = spec.target.rpartition(":")[2].rpartition(".")[2]
    return f'''import re

# Written by `ckptlint remap {spec.name}`: renames the keys of checkpoints saved before the
# refactor, so they load with strict=True. Rules apply in order, each at most once per key;
# keys the model already expects are left alone, so new checkpoints load unchanged.
_RENAMES = [
{table}]
{drop_table}

def {name}(module, state_dict, prefix, *args):
    expected = set(module.state_dict())
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rel = key[len(prefix):]
        if rel in expected:
            continue
{drop_step}        new = rel
        for pattern, replacement in _RENAMES:
            new = re.sub(pattern, replacement, new, count=1)
        if new != rel:
            state_dict[prefix + new] = state_dict.pop(key)


# and at the end of {cls}.__init__:
#     self._register_load_state_dict_pre_hook({name}, with_module=True)
'''


def _raw_string(text: str) -> str:
    # repr escapes what is not printable: a key's ESC or newline never reaches the terminal
    if "'" not in text and not text.endswith("\\") and text.isprintable():
        return f"r'{text}'"
    return repr(text)


class _KeysOnly:
    """Stands in for the model inside the hook: its `state_dict()` keys are all the hook reads."""

    def __init__(self, keys: list[str]):
        self._keys = keys

    def state_dict(self) -> dict[str, None]:
        return dict.fromkeys(self._keys)


def run_snippet(snippet: str, name: str, old_keys: list[str],
                new_keys: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Run the emitted hook over the checkpoint's keys: old key -> new key for the keys it
    moves, and the keys it deletes."""
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "<ckptlint remap>", "exec"), namespace)  # noqa: S102 - our own text
    state = {k: k for k in old_keys}
    namespace[name](_KeysOnly(new_keys), state, "", {}, True, [], [], [])
    kept = set(state.values())
    return ({old: new for new, old in state.items() if new != old},
            tuple(k for k in old_keys if k not in kept))


def _failures(proof: LoadReport | None) -> list[str]:
    if proof is None:
        return ["torch's dry run did not run"]
    return ([f"missing: {_quoted(natural_sorted(proof.missing))}"] if proof.missing else []) + \
        ([f"unexpected: {_quoted(natural_sorted(proof.unexpected))}"]
         if proof.unexpected else []) + \
        ([f"size mismatch: {_quoted(proof.mismatched)}"] if proof.mismatched else []) + \
        list(proof.errors) + list(proof.hook_errors)


def _quoted(keys) -> str:
    # each key in backticks: a key may hold a comma itself (a ModuleDict's "a,b")
    return ", ".join(f"`{k}`" for k in keys)


def _json(spec: ModelSpec, label: str, remap: Remap) -> str:
    doc = {
        "model": spec.name, "reference": label, "proved": remap.proved,
        "mapping": {k: remap.mapping[k] for k in natural_sorted(remap.mapping)},
        "dropped": list(remap.dropped),
        "rules": [list(r) for r in remap.rules], "snippet": remap.snippet,
        "still_failing": _failures(remap.proof) if not remap.proved else [],
    }
    return json.dumps(doc, indent=2) + "\n"


def _text(spec: ModelSpec, label: str, remap: Remap) -> str:
    if remap.proved and not (remap.mapping or remap.dropped):
        return (f"{printable(label)} already loads into `{spec.name}` with strict=True: "
                "nothing to remap.\n")
    gone = f" and {', '.join(f'`{printable(k)}`' for k in remap.dropped)} is dropped" \
        if remap.dropped else ""
    lines = [f"# {len(remap.mapping)} keys of {printable(label)} move{gone}; "]
    if remap.proved:
        lines[0] += (f"with this hook the checkpoint loads into `{spec.name}` with strict=True "
                     "(checked with torch's load_state_dict on meta tensors).")
        return "\n".join(lines) + "\n\n" + remap.snippet
    lines[0] += f"even with these renames it does not load into `{spec.name}`:"
    lines += [f"#   {printable(failure)}" for failure in _failures(remap.proof)]
    return "\n".join(lines) + "\n\n" + remap.snippet
