"""Compare a committed signature with the current one: a pure function from data to findings.

Torch's words, torch's sense: the committed signature (or checkpoint) plays the state dict being
loaded, the current code plays the model. When torch's own dry run (`LoadReport`) is given, it is
the verdict and the structure only explains it: keys the model's load hooks absorb are not
findings. No I/O, no printing, no torch.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

from ckptlint.compare import prefix, renames
from ckptlint.compare.messages import fold_findings, key_finding
from ckptlint.compare.ties import quoted_keys, tie_absent, tie_findings
from ckptlint.core.keys import EVERY_KEY, ancestors, expand, fold, natural_sorted, segments
from ckptlint.core.kinds import Kind
from ckptlint.core.record import replace
from ckptlint.core.records import Finding, LoadReport, Signature, TensorSpec
from ckptlint.core.sigfile import format_spec, tensor_count
from ckptlint.compare.subtrees import added_or_removed

_WRAPPED_BY = {
    "module.": "nn.DataParallel / DistributedDataParallel", "_orig_mod.": "torch.compile",
    "model.": "a Lightning-style wrapper module", "base_model.model.": "PEFT",
    prefix.CHECKPOINT_WRAPPER: "activation checkpointing",
}


def compare(model: str, old: Signature, new: Signature, load: LoadReport | None = None,
            nonpersistent: Iterable[str] = (), restored: Iterable[str] = (),
            evidence: renames.Evidence | None = None) -> list[Finding]:
    """Findings of loading `old` into code that now produces `new`, folded across layers.

    `nonpersistent` names the code's buffers registered with persistent=False, which explain
    keys that left the state dict although the module still holds them. `restored` names the
    tied keys the file lacks and `old` was given back from their tie (`engine.restore_ties`):
    plain strict loading still fails on them, which is said too. `evidence` is what the
    source says about same-shaped renames (`weighed_renames` says which to ask about).
    """
    return fold_findings(_raw(model, old, new, load, frozenset(nonpersistent),
                              frozenset(restored), evidence))


def _raw(model: str, old: Signature, new: Signature, load: LoadReport | None,
         nonpersistent: frozenset[str], restored: frozenset[str] = frozenset(),
         evidence: renames.Evidence | None = None) -> Iterator[Finding]:
    wrapper = prefix.detect(old, new)
    if wrapper is None:
        yield from _unwrapped(model, old, new, load, nonpersistent, restored, evidence)
        return
    # the build re-keyed the dry run's state dict the same way
    rest = list(_unwrapped(model, wrapper.apply(old), new, load, nonpersistent, restored,
                           evidence))
    yield _prefix_finding(model, wrapper, bool(rest))
    yield from rest


def _respecified(old: Mapping[str, TensorSpec], new: Mapping[str, TensorSpec]) -> list[str]:
    """Keys of both whose specs differ in dtype or role but not in shape. Specs are compared
    once per pair of spec objects: a signature shares one object among the keys with that
    spec, and 50,000 record comparisons cost a tenth of a second."""
    same: dict[tuple[int, int], bool] = {}
    found = []
    for key, spec in new.items():
        was = old.get(key)
        if was is None:
            continue
        pair = (id(was), id(spec))
        answer = same.get(pair)
        if answer is None:
            answer = same[pair] = was.shape != spec.shape or was == spec
        if not answer:
            found.append(key)
    return found


def _unwrapped(model: str, old: Signature, new: Signature, load: LoadReport | None,
               nonpersistent: frozenset[str], restored: frozenset[str],
               evidence: renames.Evidence | None = None) -> Iterator[Finding]:
    old_t, new_t = old.tensors, new.tensors
    if load is not None and load.hook_errors:
        yield _hook_finding(model, load)
    else:
        yield from _keys(model, old, new, load, nonpersistent, evidence)
    # only keys whose specs differ need ordering: a clean 50,000-key model sorts nothing
    common = natural_sorted(_respecified(old_t, new_t))
    if not old.partial:  # an adapter's dtypes are not the base's: merging casts them
        yield from _dtypes(model, old, new, common)
    for key in common:
        if old_t[key].dtype == new_t[key].dtype and None not in (
                old_t[key].role, new_t[key].role) and old_t[key].role != new_t[key].role:
            yield key_finding(Kind.ROLE_CHANGED, model, key, old_t[key], new_t[key])
    yield from tie_findings(model, old, new)
    for key in natural_sorted(restored):
        yield tie_absent(model, key, new)
    for error in load.errors if load else ():
        yield Finding(Kind.LOAD_ERROR, model, f"torch's load_state_dict failed: {error}")


def _dtypes(model: str, old: Signature, new: Signature,
            differing: list[str]) -> Iterator[Finding]:
    """Dtype changes among `differing`, the keys both sides hold with one shape and another spec.

    A change of the whole model (a bf16 checkpoint of fp32 code: every tensor the checkpoint
    holds in one dtype is in another one in the code, and nothing else is) is one finding
    listing every key; a change of some tensors is one finding per key, folded across layers.
    """
    old_t, new_t = old.tensors, new.tensors
    changed: dict[tuple[str, str], list[str]] = {}
    for key in differing:
        if old_t[key].dtype != new_t[key].dtype:
            changed.setdefault((old_t[key].dtype, new_t[key].dtype), []).append(key)
    for (was, now), keys in changed.items():
        if len(keys) > 1 and _every_of(old, new, was, now) == (len(keys), len(keys)):
            yield _whole_model_dtype(model, was, now, keys)
        else:
            yield from (key_finding(Kind.DTYPE_MISMATCH, model, k, old_t[k], new_t[k]) for k in keys)


def _every_of(old: Signature, new: Signature, was: str, now: str) -> tuple[int, int]:
    """How many shared keys of one shape the code holds in `now`, the checkpoint in `was`:
    both equal to the changed keys means every tensor of that dtype changed, and only those."""
    old_t, new_t = old.tensors, new.tensors
    shared = [k for k in new_t if k in old_t and old_t[k].shape == new_t[k].shape]
    return (sum(1 for k in shared if new_t[k].dtype == now),
            sum(1 for k in shared if old_t[k].dtype == was))


def _whole_model_dtype(model: str, was: str, now: str, keys: list[str]) -> Finding:
    return Finding(Kind.DTYPE_MISMATCH, model,
                   f"every {now} tensor of the code is {was} in the checkpoint ({len(keys)} "
                   "tensors): loading casts them all silently", key=EVERY_KEY,
                   keys=tuple(keys),
                   help=f"nothing breaks: loading casts them to {now}; if that cast is not "
                        f"wanted, build the model in {was} (`model.to(torch.{was})`) or save "
                        f"the checkpoint in {now}")


def _keys(model: str, old: Signature, new: Signature, load: LoadReport | None,
          nonpersistent: frozenset[str],
          evidence: renames.Evidence | None = None) -> Iterator[Finding]:
    """Missing, unexpected, renamed and mismatched keys: torch's verdict, explained."""
    old_t, new_t = old.tensors, new.tensors
    missing, unexpected = _unloaded(old, new, load)
    common = [k for k in new_t if k in old_t]
    mismatched = {k for k in common if old_t[k].shape != new_t[k].shape}
    if load is not None:
        mismatched = mismatched & set(load.mismatched) | (set(load.mismatched) - set(common))
    for key in natural_sorted(unexpected & nonpersistent):
        yield key_finding(Kind.BUFFER_NOT_PERSISTENT, model, key, old_t.get(key), None)
    unexpected -= nonpersistent
    pairing = _pairs(old, new, missing, unexpected, evidence)
    moved = renames.expand_pairs(pairing.pairs, unexpected)
    yield from _rename_findings(model, pairing, moved, old_t, new_t)
    yield from added_or_removed(Kind.MISSING_KEY, model, missing - set(moved.values()),
                                 new_t, old_t)
    silent = set(load.dropped) if load else set()
    for finding in added_or_removed(Kind.UNEXPECTED_KEY, model, unexpected - set(moved),
                                     old_t, new_t):
        yield _silent(finding, load) if silent.issuperset(finding.keys) else finding
    for key in natural_sorted(mismatched):
        yield key_finding(Kind.SHAPE_MISMATCH, model, key, old_t.get(key), new_t.get(key))


def _unloaded(old: Signature, new: Signature, load: LoadReport | None) -> tuple[set, set]:
    """The keys the code creates that the checkpoint does not fill (missing), and the keys of
    the checkpoint that land nowhere in the code (unexpected).

    With torch's dry run, its report decides, and the key diff guards the invariant a clean run
    promises: every tensor of the checkpoint is loaded, reported, or taken by a load hook of the
    model's own code (and every tensor of the code is filled, reported, or put in by a hook).
    What is none of these is reported too: keys torch drops under a None slot without a word,
    and anything a future torch might skip the same way. A partial state dict (an adapter)
    misses nothing: the base model's checkpoint holds the keys it lacks.
    """
    created, held = set(new.tensors), set(old.tensors)
    if old.partial:  # an adapter: the base model's own checkpoint fills what it lacks
        return set(), held - created
    if load is None:
        return created - held, held - created
    unaccounted_old = held - created - set(load.unexpected) - set(load.consumed)
    unaccounted_new = created - held - set(load.missing) - set(load.added)
    return (set(load.missing) | unaccounted_new,
            set(load.unexpected) | set(load.dropped) | unaccounted_old)


def _silent(finding: Finding, load: LoadReport | None) -> Finding:
    """An unexpected key torch's strict loading drops without an error: say so, and why."""
    slots = sorted({s for s in (load.none_slots if load else ())
                    if any(k.startswith(s + ".") for k in finding.keys)})
    where = ", ".join(f"`{s}`" for s in slots) or "a submodule slot"
    head = finding.message.partition(" is in the checkpoint")[0]
    return replace(finding, silent=True, message=(
        f"{head} is in the checkpoint but the code sets {where} to None: "
        "load_state_dict(strict=True) drops it without an error (torch skips keys under a "
        "None submodule), so its weights are silently lost"),
        help=f"restore the submodule at {where}, or accept the change with `ckptlint update "
             f"{finding.model}`")


def _pairs(old: Signature, new: Signature, missing: set[str], unexpected: set[str],
           evidence: renames.Evidence | None = None) -> renames.Pairing:
    old_t, new_t = old.tensors, new.tensors
    if not missing or not unexpected:
        return renames.Pairing({}, {})
    # the report asks again, for the groups to weigh, what the diff has just paired: pairing
    # is a pure function of these, so the last answer is kept (25,000 keys: a second each)
    asked = (old_t, new_t, missing, unexpected)
    last = _LAST_PAIRING.get("asked")
    if evidence is None and last is not None and last[0] is old_t and last[1] is new_t \
            and last[2:] == asked[2:]:
        return _LAST_PAIRING["answer"]
    answer = renames.pair({k: old_t[k] for k in unexpected if k in old_t},
                          {k: new_t[k] for k in missing if k in new_t}, old_t, new_t, evidence)
    if evidence is None:
        _LAST_PAIRING.update(asked=(old_t, new_t, set(missing), set(unexpected)), answer=answer)
    return answer


_LAST_PAIRING: dict = {}


def weighed_renames(old: Signature, new: Signature, load: LoadReport | None = None,
                    nonpersistent: Iterable[str] = ()) -> tuple:
    """The same-shaped groups `compare` had to pair on more than structure, as (old paths,
    new paths): what to ask the source about (`renames.Evidence`)."""
    wrapper = prefix.detect(old, new)
    if wrapper is not None:
        old = wrapper.apply(old)
    if load is not None and load.hook_errors:
        return ()
    missing, unexpected = _unloaded(old, new, load)
    return _pairs(old, new, missing, unexpected - set(nonpersistent)).groups


def rename_pairs(old: Signature, new: Signature, load: LoadReport | None = None,
                 nonpersistent: Iterable[str] = ()) -> dict[str, str]:
    """The renames `compare` reports, as subtree prefixes (`fc.`) or keys, old -> new.

    `old` must already be re-keyed past any wrapper prefix.
    """
    missing = set(new.tensors) - set(old.tensors) if load is None else set(load.missing)
    unexpected = set(old.tensors) - set(new.tensors) if load is None else set(load.unexpected)
    return dict(_pairs(old, new, missing, unexpected - set(nonpersistent)).pairs)


def wrapped_by(wrapper: prefix.Wrapper) -> str:
    """What wrote keys under the wrapper's prefix: `torch.compile`, `PEFT`, …"""
    if wrapper.dropped:
        return prefix.AVERAGED_MODEL
    return _WRAPPED_BY.get(wrapper.prefix.partition(".")[0] + ".", "a wrapper module")


def _prefix_finding(model: str, wrapper: prefix.Wrapper, more: bool) -> Finding:
    """`more`: other findings follow, which compare the keys with the wrapper taken off."""
    p, n = wrapper.prefix, len(wrapper.mapping)
    by = wrapped_by(wrapper)
    extra = f" and adds {quoted_keys(wrapper.dropped)}" if wrapper.dropped else ""
    if wrapper.side == "checkpoint":
        message = (f"every key of the checkpoint sits under `{p}` (saved through {by}{extra}): "
                   f"loading it into the bare model matches none of its {n} keys; ")
        message += ("the findings below compare its keys with the prefix stripped" if more else
                    "with the prefix stripped, every key matches")
    else:
        message = (f"every key of the code sits under `{p}` ({by}) but the checkpoint's keys do "
                   f"not: loading matches none of its {n} keys; ")
        message += ("the findings below compare its keys with the prefix added" if more else
                    "with the prefix added, every key matches")
    return Finding(Kind.PREFIX_MISMATCH, model, message, key=p,
                   keys=tuple(natural_sorted(wrapper.mapping)) + wrapper.dropped,
                   help=wrapper.help)


def _hook_finding(model: str, load: LoadReport) -> Finding:
    return Finding(Kind.NEEDS_REAL_LOAD, model,
                   f"a load hook of the model raised on meta tensors ({load.hook_errors[0]}): "
                   "the dry run cannot say whether the checkpoint loads",
                   help="load the checkpoint once for real (CPU, strict=True), or make the hook "
                        "skip meta tensors")


def _rename_findings(model: str, pairing: renames.Pairing, moved: Mapping[str, str],
                     old_t: Mapping[str, TensorSpec],
                     new_t: Mapping[str, TensorSpec]) -> Iterator[Finding]:
    under = _moved_under(moved)
    for old_pattern, new_pattern, subtree, reason in _fold_renames(pairing.pairs,
                                                                   pairing.reasons):
        keys = tuple(k for old in expand(old_pattern)
                     for k in (under.get(old, ()) if subtree else (old,)) if k in moved)
        key, new_key = (f"{old_pattern}.*", f"{new_pattern}.*") if subtree \
            else (old_pattern, new_pattern)
        old_spec = None if subtree else old_t.get(keys[0])
        new_spec = None if subtree else new_t.get(moved[keys[0]])
        what = tensor_count(len(keys)) if subtree else _spec(old_spec)
        said = f" ({reason})" if reason else ""
        yield Finding(
            Kind.RENAMED_KEY, model,
            f"`{key}` ({what}) moved to `{new_key}`{said}: strict loading of an old checkpoint "
            "fails with \"Missing/Unexpected key(s)\", and with strict=False the moved weights "
            "stay randomly initialised", key=key, keys=keys, new_key=new_key, old=old_spec,
            new=new_spec, new_keys=tuple(moved[k] for k in keys), evidence=reason,
            help=f"`ckptlint remap {model}` prints a key mapping and a load hook, "
                 "proven to load old checkpoints")


def _moved_under(moved: Mapping[str, str]) -> dict[str, list[str]]:
    """Each module prefix -> the moved keys below it (one pass, not one per pattern)."""
    under: dict[str, list[str]] = {}
    for key in moved:
        for owner in ancestors(key)[:-1]:
            under.setdefault(owner, []).append(key)
    return under


def fold_renames(pairs: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    """Fold per-layer renames into `(old pattern, new pattern, is subtree)`, in natural order.

    `blocks.3.fc.` -> `blocks.3.up.` for every block becomes `blocks.{0..11}.fc` ->
    `blocks.{0..11}.up`: an index of the new key that repeats one of the old key is a reference.
    """
    return [(old, new, subtree) for old, new, subtree, _ in _fold_renames(pairs, {})]


def _fold_renames(pairs: Mapping[str, str], reasons: Mapping[str, str]
                  ) -> list[tuple[str, str, bool, str]]:
    """`fold_renames` with each pair's reason; pairs made on different evidence do not fold
    together."""
    templates = {old.rstrip("."): (_template(old, new), old.endswith("."),
                                   reasons.get(old, ""))
                 for old, new in pairs.items()}
    folded = []
    for pattern, (template, subtree, reason) in fold(templates):
        parts = segments(pattern)
        new = ".".join(parts[int(t[1:])] if t.startswith("\0") else t for t in template)
        folded.append((pattern, new, subtree, reason))
    return folded


def _template(old: str, new: str) -> tuple[str, ...]:
    a, b = old.rstrip(".").split("."), new.rstrip(".").split(".")
    used: set[int] = set()
    out = []
    for j, seg in enumerate(b):
        same = [i for i in (j, len(a) - len(b) + j) if 0 <= i < len(a) and i not in used
                and a[i] == seg and seg.isdigit()]
        if same:
            used.add(same[0])
            out.append(f"\0{same[0]}")
        else:
            out.append(seg)
    return tuple(out)


def _spec(spec: TensorSpec | None) -> str:
    return format_spec(spec) if spec else "?"
