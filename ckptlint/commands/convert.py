"""`ckptlint convert OLD OUT.safetensors`: migrate a checkpoint file to the keys the code expects.

The file is read as `inspect` reads it (a file it refuses is refused here, in the same words,
before anything is built or written), the proven remap (`ckptlint.run.hook`) names the old key of
every new one, `ckptlint.run.migrate` streams the tensors into a staged safetensors file, and the
file is kept only when `check --against` it says the model loads it strictly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from ckptlint.commands.remap import builder
from ckptlint.commands.setup import Setup, prepare
from ckptlint.core.atomic import SCRATCH
from ckptlint.core.errors import CkptlintError
from ckptlint.core.keys import printable
from ckptlint.core.kinds import Outcome, Verdict
from ckptlint.core.paths import inside
from ckptlint.core.records import Config, ModelSpec
from ckptlint.core.urls import RemotePath, location
from ckptlint.readers import read_checkpoint
from ckptlint.readers.data import open_data
from ckptlint.run import engine, hook, migrate, plan
from ckptlint.run.cache import DIRECTORY


def run(args: argparse.Namespace) -> int:
    old, out = location(args.old), Path(args.out)
    label = str(old)  # a URL as shown: without its credentials or query
    _check_paths(old, out)
    setup = prepare(args, use_cache=False)
    spec = _model(setup.config, args.model, label)
    if read_checkpoint(old, spec.state_dict_key).signature.partial:  # as inspect reads it
        print(f"ckptlint convert: {hook.PeftAdapterError(label)}")
        return 1
    with open_data(old, spec.state_dict_key) as data:
        try:
            remap = hook.plan(spec, data.checkpoint.signature, builder(setup, spec), label,
                              ties=True)
        except hook.PeftAdapterError as exc:
            print(f"ckptlint convert: {exc}")
            return 1
        if not remap.proved:
            print(_unproven(spec, label, remap))
            return 1
        try:
            done = migrate.convert(data, remap, out, _verifier(setup, spec), spec.name,
                                   _scratch(setup.config, out))
        except migrate.NotProvenError as exc:
            print(f"ckptlint convert: {printable(str(exc))}")
            return 1
    sys.stdout.write(_summary(spec, label, done))
    return 0


def _check_paths(old: Path | RemotePath, out: Path) -> None:
    if out.suffix != ".safetensors":
        raise CkptlintError(f"{out}: convert writes safetensors: name the file *.safetensors")
    if out.is_dir():
        raise CkptlintError(f"{out}: is a folder; name the file to write")
    if not out.parent.is_dir():
        raise CkptlintError(f"{out}: its folder {out.parent} does not exist")
    try:
        same = isinstance(old, Path) and out.exists() and old.exists() and out.samefile(old)
    except OSError:
        same = False
    if same:
        raise CkptlintError(f"{out}: is the file being converted; write to another file")


def _model(config: Config, name: str | None, old: str) -> ModelSpec:
    if name is None and len(config.models) > 1:
        names = ", ".join(m.name for m in config.models)
        raise CkptlintError(f"name the model whose keys {old} should get with --model "
                            f"(configured: {names}); `ckptlint inspect {old}` shows which ones it "
                            "fits")
    return plan.select(config, [name] if name else [])[0]


def _verifier(setup: Setup, spec: ModelSpec) -> Callable[[Path], str | None]:
    """`check NAME --against FILE`, through the normal check path: None when it loads strictly."""
    def verify(path: Path) -> str | None:
        report = engine.check(setup.config, [spec.name], setup.builder, None, path)
        model = report.models[0]
        if model.verdict == Verdict.LOADS and not report.outcome & Outcome.UNCHECKED:
            return None
        said = Verdict(model.verdict).text if model.verdict else "could not be checked"
        why = model.verdict_note or "; ".join(f.message for f in model.findings[:3])
        return f"`ckptlint check {spec.name} --against` it says it {said}" + (
            f" ({why})" if why else "")

    return verify


def _scratch(config: Config, out: Path) -> Path | None:
    """The cache's scratch folder for the temp file, when OUT is inside the project."""
    scratch = Path(config.root) / DIRECTORY / SCRATCH
    return scratch if inside(out.parent, config.root) and inside(scratch, config.root) else None


def _unproven(spec: ModelSpec, old: str, remap: hook.Remap) -> str:
    failing = "\n".join(f"  {printable(f)}" for f in hook.failures(remap.proof))
    return (f"ckptlint convert: {printable(old)} does not load into `{spec.name}` even with the "
            f"keys ckptlint can remap, so nothing was written:\n{failing}")


def _summary(spec: ModelSpec, old: str, done: migrate.Converted) -> str:
    parts = [f"{len(done.mapping)} keys renamed"]
    if done.tied:
        parts.append(f"{len(done.tied)} tied keys written as copies")
    if done.dropped:
        parts.append(f"{len(done.dropped)} dropped ({', '.join(done.dropped[:3])})")
    return (f"wrote {printable(done.out)}: {done.tensors} tensors, {_size(done.nbytes)}, with the "
            f"keys of `{spec.name}` from {printable(old)} ({'; '.join(parts)}); "
            f"`ckptlint check {spec.name} --against` it: loads strictly\n")


def _size(nbytes: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    return ""
