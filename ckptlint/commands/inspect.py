"""`ckptlint inspect FILE`: the signature of any checkpoint or signature file, and what it fits.

The text output escapes what the file says (keys, notes) with `keys.printable`; JSON keeps
it exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ckptlint.commands.setup import prepare
from ckptlint.core import sigfile
from ckptlint.core.errors import NoProjectError
from ckptlint.core.keys import fold, printable
from ckptlint.core.records import Signature
from ckptlint.core.urls import RemotePath, location
from ckptlint.readers import CheckpointRead, read_checkpoint
from ckptlint.run import fit


def run(args: argparse.Namespace) -> int:
    path = location(args.file)
    read = read_checkpoint(path, args.state_dict_key)
    fits = _fits(args, path) if args.fits else None
    out = sys.stdout
    name = str(path) if isinstance(path, RemotePath) else args.file  # a URL without secrets
    if args.format == "toml":
        out.write(_toml(read.signature))
    elif args.format == "json":
        out.write(json.dumps(_document(name, read, fits), indent=2) + "\n")
    else:
        out.write(_text(name, read, fits))
    return 0


# header keys a checkpoint file cannot fill (no model, target or torch version is stored in
# it): left out rather than written empty; a signature file without them reads the same
_UNKNOWN = tuple(f'{key} = ""' for key in ("model", "target", "torch"))


def _toml(sig: Signature) -> str:
    lines = sigfile.dumps(sig).splitlines(keepends=True)
    return "".join(line for line in lines if line.rstrip("\n") not in _UNKNOWN)


def _fits(args: argparse.Namespace, path: Path | RemotePath) -> list[fit.Fit] | None:
    """Inside a configured project: which registered models this file would load into."""
    try:
        setup = prepare(args, use_cache=False)
    except NoProjectError:
        return None  # not in a project: nothing to fit
    return fit.fits(setup.config, path.resolve() if isinstance(path, Path) else path,
                       setup.builder,
                       build=getattr(args, "build", False))


def _document(name: str, read: CheckpointRead, fits: list[fit.Fit] | None) -> dict:
    from ckptlint.reporters.json import spec_dict

    sig = read.signature
    return {
        "file": name, "format": read.format, "note": read.note or None,
        "parameters": sig.num_parameters,
        "tensors": {k: spec_dict(v) for k, v in sig.tensors.items()},
        "versions": dict(sig.versions), "aliases": dict(sig.aliases),
        "fits": None if fits is None else [{"model": f.model, "verdict": f.verdict,
                                            "detail": f.detail} for f in fits],
    }


def _text(name: str, read: CheckpointRead, fits: list[fit.Fit] | None) -> str:
    sig: Signature = read.signature
    lines = [f"{printable(name)}: {read.format}, {sigfile.tensor_count(len(sig.tensors))}, "
             f"{sig.num_parameters:,} values (parameters and buffers)"]
    if read.note:
        lines.append(f"note: {printable(read.note)}")
    entries = {k: sigfile.format_spec(v) for k, v in sig.tensors.items()}
    folded = [(printable(key), spec) for key, spec in fold(entries)]
    width = min(max((len(k) for k, _ in folded), default=0), 72)
    lines += [f"  {key:<{width}}  {spec}" for key, spec in folded]
    if sig.aliases:
        lines += [f"  {printable(k)} = {printable(v)} (tied)"
                  for k, v in sorted(sig.aliases.items())]
    if fits:
        lines += ["", "Fits the registered models (best first):"]
        lines += [f"  {f.model}: {printable(f.verdict)}"
                  + (f" ({printable(f.detail)})" if f.detail else "") for f in fits]
    elif fits is not None:
        lines += ["", "No registered model shares a key with it."]
    return "\n".join(lines) + "\n"
