"""`ckptlint remap NAME`: what loads an old checkpoint into the current code, proven first.

Prints the load hook (text) or the key mapping (json) of `ckptlint.run.hook`, proven by torch's
dry run on the re-keyed checkpoint, or says what still fails and exits 1. `--apply` writes the
hook into the model's class (`ckptlint.source.apply`), re-builds the model in a fresh child and keeps
the edit only when the old checkpoint then loads strictly through it; otherwise it restores
the file byte for byte and says why. `--diff` prints that edit and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ckptlint.commands.setup import Setup, prepare
from ckptlint.compare import prefix
from ckptlint.config import signature_path
from ckptlint.core.atomic import SCRATCH, write_atomic
from ckptlint.core.errors import CkptlintError
from ckptlint.core.keys import natural_sorted, printable
from ckptlint.core.paths import inside, relative
from ckptlint.core.record import record
from ckptlint.core.records import BuildResult, Config, ModelSpec, Signature
from ckptlint.core.urls import location
from ckptlint.readers.sigtoml import read_signature
from ckptlint.run import hook, plan
from ckptlint.run.cache import DIRECTORY

if TYPE_CHECKING:
    from ckptlint.source.apply import Edit


def run(args: argparse.Namespace) -> int:
    setup = prepare(args, use_cache=False)
    spec = plan.select(setup.config, [args.name])[0]
    raw, label = _reference(setup.config, spec, args.against)
    build = builder(setup, spec)
    out = sys.stdout
    try:
        if args.apply or args.diff:
            fix = _fix(setup.config, spec, raw, label, build, write=not args.diff)
            out.write(_fix_json(spec, label, fix) if args.format == "json" else fix.text)
            return 0 if fix.ok else 1
        remap = hook.plan(spec, raw, build, label)
    except hook.PeftAdapterError as exc:  # a verdict on the file, not a failure to check it
        out.write(_refused_json(spec, label, str(exc)) if args.format == "json"
                  else f"# {exc}\n")
        return 1
    out.write(_json(spec, label, remap) if args.format == "json" else _text(spec, label, remap))
    return 0 if remap.proved else 1


def builder(setup: Setup, spec: ModelSpec) -> hook.Build:
    """Builds of `spec` through the run's builder (children forked after `import torch`)."""
    def build(references: list[Signature | None]) -> list[BuildResult]:
        return setup.builder([spec] * len(references), setup.config, references)

    return build


def _reference(config: Config, spec: ModelSpec, against: str | None) -> tuple[Signature, str]:
    if against:
        ref = plan.read_reference(config, spec, location(against), committed=False)
        if ref.signature is None:
            raise CkptlintError(ref.problem.message if ref.problem else f"cannot read {against}")
        return ref.signature, ref.label
    path = signature_path(config, spec.name)
    label = relative(path, config.root)
    if not path.exists():
        raise CkptlintError(f"no committed signature {label} for model `{spec.name}`: run "
                            f"`ckptlint update {spec.name}` first, or pass --against FILE")
    return read_signature(path, label), label


# -- --apply and --diff -------------------------------------------------------------------------

@record
class Fix:
    """What `--apply` (or `--diff`) did: the sentence to print, the edit, and whether it holds."""

    text: str
    ok: bool
    file: str = ""
    diff: str = ""
    written: bool = False
    failing: tuple[str, ...] = ()


def _fix(config: Config, spec: ModelSpec, raw: Signature, label: str, build: hook.Build,
         write: bool) -> Fix:
    aligned = prefix.strip(raw, spec.strip_prefix)
    [first] = build([aligned])
    current = hook.built(first, spec)
    hook.refuse_adapter(raw, current, label)
    file, qualname = _model_class(first, spec)
    path = Path(config.root) / file
    before = _source(path, file)
    from ckptlint.source import apply  # libcst, only when there is a source to edit

    name = hook.hook_name(spec)
    base = apply.existing_rules(file, before, name)
    problem: str | None = None
    if base is not None and apply.is_registered(file, before, qualname, name):
        problem = _proven(build, spec, aligned, current, first)
        if problem is None:
            return Fix(f"{file}: `{name}` already loads {printable(label)} into `{spec.name}` "
                       "with strict=True: nothing changed\n", True, file)
    remap = hook.plan(spec, raw, build, label, base or hook.Rules(), known=first)
    if not remap.proved or (not remap.mapping and not remap.dropped and base is None):
        return Fix(_text(spec, label, remap), remap.proved, file,
                   failing=tuple(hook.failures(remap.proof)) if not remap.proved else ())
    edit = apply.with_hook(file, before, qualname, name, hook.function(spec, remap.rules),
                           hook.registration(spec))
    if not edit.changed:  # the hook is there and registered, yet the load failed above
        return Fix(f"{file}: `{name}` is written and registered already, yet {problem}\n",
                   False, file, failing=(problem,))
    if not write:
        return Fix(edit.diff(), True, file, edit.diff())
    return _write_and_prove(config, spec, path, edit, qualname, label, aligned, remap, build)


def _write_and_prove(config: Config, spec: ModelSpec, path: Path, edit: Edit, qualname: str,
                     label: str, aligned: Signature, remap: hook.Remap,
                     build: hook.Build) -> Fix:
    """Write the edit, re-build, keep it only if the old checkpoint loads through it."""
    scratch = Path(config.root) / DIRECTORY / SCRATCH
    scratch_dir = scratch if inside(scratch, config.root) else None
    write_atomic(path, edit.after, scratch_dir)
    try:
        problem = _proven(build, spec, aligned, remap.current)
    except BaseException:
        write_atomic(path, edit.before, scratch_dir)
        raise
    moved = len(remap.mapping) + len(remap.dropped)
    if problem is not None:
        write_atomic(path, edit.before, scratch_dir)
        return Fix(f"{edit.file}: reverted the edit: after it, {problem}\n", False, edit.file,
                   edit.diff(), failing=(problem,))
    text = (f"{edit.file}: wrote `{hook.hook_name(spec)}` and registered it in "
            f"`{qualname}.__init__`; rebuilt `{spec.name}`: {printable(label)} now loads with "
            f"strict=True ({moved} keys move; torch's load_state_dict on meta tensors)\n")
    wrapper = prefix.detect(aligned, remap.current)
    if wrapper is not None:
        # check re-keys a checkpoint past a wrapper prefix before torch's dry run, so it never
        # sees the hook handle it, and still reports the prefix
        text += (f"note: `ckptlint check` still reports the `{wrapper.prefix}` prefix of "
                 f"{printable(label)}, which it takes off before torch's dry run"
                 + (f"; strip_prefix = \"{wrapper.prefix}\" in the model's entry says it is "
                    "handled" if wrapper.side == "checkpoint" else "") + "\n")
    return Fix(text, True, edit.file, edit.diff(), written=True)


def _proven(build: hook.Build, spec: ModelSpec, aligned: Signature, current: Signature,
            known: BuildResult | None = None) -> str | None:
    """Why the code as it is on disk does not load `aligned` strictly, or None when it does.

    torch's dry run re-keys a checkpoint past a wrapper prefix before loading it, so a hook
    that strips that prefix is never asked to: a probe keeping one key wrapped, which the dry
    run then hands to the code as it is, shows the hook does it.
    """
    probe = _probe(aligned, current)
    references = ([] if known else [aligned]) + ([probe] if probe else [])
    results = ([known] if known else []) + (build(references) if references else [])
    for result in results:
        if result.signature is None:
            return f"`{spec.name}` no longer builds: {result.error}"
        if dict(result.signature.tensors) != dict(current.tensors):
            return f"`{spec.name}` creates other tensors than before the edit"
        if not hook.clean(result.load):
            return "the checkpoint still does not load strictly (" + "; ".join(
                hook.failures(result.load)) + ")"
    return None


def _probe(aligned: Signature, current: Signature) -> Signature | None:
    wrapper = prefix.detect(aligned, current)
    if wrapper is None or not wrapper.mapping:
        return None
    first = natural_sorted(wrapper.mapping)[0]
    probe = prefix.rekey(aligned, {k: v for k, v in wrapper.mapping.items() if k != first})
    # an activation-checkpointing segment is unwrapped wherever it is: no probe can keep it
    return probe if prefix.detect(probe, current) is None else None


def _model_class(result: BuildResult, spec: ModelSpec) -> tuple[str, str]:
    """(file relative to the project, qualified name) of the class of the model's root."""
    info = result.modules.get("")
    if info is None or not info.classes:
        shown = f"`{info.type_name}`" if info else "its class"
        raise CkptlintError(f"model `{spec.name}` is a {shown} defined outside the project, so "
                            "--apply has no class of yours to write the hook into: register "
                            "the hook printed by `ckptlint remap` where you build the model, or "
                            f"migrate the file with `ckptlint convert OLD OUT.safetensors "
                            f"--model {spec.name}`")
    return info.classes[0]


def _source(path: Path, file: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CkptlintError(f"{file}: is not UTF-8 text, which --apply edits") from None
    except OSError as exc:
        raise CkptlintError(f"{file}: cannot be read ({exc.strerror or exc})") from None


def _fix_json(spec: ModelSpec, label: str, fix: Fix) -> str:
    doc = {"model": spec.name, "reference": label, "file": fix.file, "proved": fix.ok,
           "written": fix.written, "diff": fix.diff, "still_failing": list(fix.failing)}
    return json.dumps(doc, indent=2) + "\n"


# -- the printed hook ---------------------------------------------------------------------------

def _refused_json(spec: ModelSpec, label: str, reason: str) -> str:
    doc = {"model": spec.name, "reference": label, "proved": False, "mapping": {}, "rules": [],
           "dropped": [], "snippet": "", "still_failing": [reason]}
    return json.dumps(doc, indent=2) + "\n"


def _json(spec: ModelSpec, label: str, remap: hook.Remap) -> str:
    mapping = remap.mapping
    doc = {
        "model": spec.name, "reference": label, "proved": remap.proved,
        "mapping": {k: mapping[k] for k in natural_sorted(mapping)},
        "rules": [list(r) for r in remap.rules.renames], "dropped": remap.dropped,
        "snippet": remap.snippet,
        "still_failing": hook.failures(remap.proof) if not remap.proved else [],
    }
    return json.dumps(doc, indent=2) + "\n"


def _text(spec: ModelSpec, label: str, remap: hook.Remap) -> str:
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
    lines += [f"#   {printable(failure)}" for failure in hook.failures(remap.proof)]
    return "\n".join(lines) + "\n\n" + remap.snippet
