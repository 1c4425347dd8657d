"""The Python API for a project's own tests: one line to prove a model still loads a checkpoint.

    import ckptlint
    from mypkg.models import GPT, GPTConfig

    def test_gpt_still_loads_the_release_checkpoint():
        ckptlint.assert_loads(GPT, "checkpoints/gpt-v1.safetensors", GPTConfig(n_layer=12))

Models are built on the meta device (no weights allocated) and checked with torch's own
`load_state_dict` on meta tensors, so it takes milliseconds and needs no weights in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ckptlint.compare.diff import compare
from ckptlint.core.kinds import Kind, Verdict
from ckptlint.core.record import replace
from ckptlint.core.records import BuildResult, Finding, ModelSpec, Signature
from ckptlint.run.report import restore_ties

if TYPE_CHECKING:
    from ckptlint.run.migrate import Converted

ModelOrFactory = Any  # an nn.Module, or a class / callable returning one


def build(target: ModelOrFactory, *args: Any, **kwargs: Any) -> Any:
    """An nn.Module as given, or built by calling `target(*args, **kwargs)` on meta."""
    from ckptlint.build.builder import on_meta
    from ckptlint.build.loadtorch import import_torch

    torch = import_torch()
    if isinstance(target, torch.nn.Module):
        return target
    with on_meta():
        return target(*args, **kwargs)


def signature(target: ModelOrFactory, *args: Any, **kwargs: Any) -> Signature:
    """The state-dict signature of a model (built on meta when given a class or factory)."""
    from ckptlint.build.dryrun import signature_of

    return signature_of(build(target, *args, **kwargs))


def read(path: str | os.PathLike[str], state_dict_key: str | None = None) -> Signature:
    """The signature of a checkpoint or signature file, read without tensor data or pickle code.

    Keys a writer left out as ties of a kept tensor are not in it; `check` and `assert_loads`
    restore them only when the model ties them too, as loading does.
    """
    from ckptlint.readers import read_checkpoint, remote
    from ckptlint.core.urls import location

    remote.new_run()  # a URL is asked afresh on every call, never answered from an earlier one
    return read_checkpoint(location(path), state_dict_key).signature


def check(target: ModelOrFactory, checkpoint: str | os.PathLike[str] | Signature, *args: Any,
          state_dict_key: str | None = None, **kwargs: Any) -> list[Finding]:
    """Every finding of loading `checkpoint` (a file or a Signature) into the model."""
    from ckptlint.build.dryrun import dry_run_load, signature_of

    model = build(target, *args, **kwargs)
    old = checkpoint if isinstance(checkpoint, Signature) else read(checkpoint, state_dict_key)
    new = signature_of(model)
    restored = restore_ties(old, new)
    load = dry_run_load(model, old)
    load = replace(load, missing=tuple(k for k in load.missing if k not in restored.tensors))
    return compare(_name(target), restored, new, load,
                   restored=set(restored.tensors) - set(old.tensors))




def assert_loads(target: ModelOrFactory, checkpoint: str | os.PathLike[str] | Signature,
                 *args: Any, strict: bool = True, state_dict_key: str | None = None,
                 **kwargs: Any) -> None:
    """Fail (AssertionError) unless the checkpoint loads into the model.

    `strict=False` tolerates missing and unexpected keys, as `load_state_dict(strict=False)`
    does; dtype changes never fail (torch casts them).
    """
    findings = [f for f in check(target, checkpoint, *args, state_dict_key=state_dict_key,
                                 **kwargs)
                if f.kind is not Kind.DTYPE_MISMATCH and (strict or not f.kind.spec.strict_only)]
    if findings:
        lines = "\n".join(f"  {f.code} {f.message}" for f in findings)
        raise AssertionError(f"{_name(target)} does not load {_shown(checkpoint)}:\n{lines}")


def convert(target: ModelOrFactory, checkpoint: str | os.PathLike[str],
            out: str | os.PathLike[str], *args: Any, state_dict_key: str | None = None,
            **kwargs: Any) -> Converted:
    """Write `out` (safetensors) with `checkpoint`'s tensors under the keys the model expects.

    The key mapping is the one `ckptlint remap` proves (wrapper prefixes, an EMA wrapper,
    renamed and wrapped layers); tied keys are written as copies. The checkpoint is read without
    running pickle code, one tensor at a time, and `out` is kept only when the model loads it
    strictly (`check`). Raises `CkptlintError` (`NotProvenError` when it would not load).
    """
    from ckptlint.run import hook
    from ckptlint.run import migrate
    from ckptlint.readers.data import open_data

    model = build(target, *args, **kwargs)
    spec = ModelSpec(_name(target), f"{type(model).__module__}:{type(model).__qualname__}")
    with open_data(checkpoint, state_dict_key) as data:
        remap = hook.plan(spec, data.checkpoint.signature, _builds(model, spec),
                          os.fspath(checkpoint), ties=True)
        if not remap.proved:
            raise migrate.NotProvenError(os.fspath(out), "even remapped, it does not load: "
                                         + "; ".join(hook.failures(remap.proof)))
        return migrate.convert(data, remap, Path(out), lambda path: _loads(model, path),
                               spec.name)


def _builds(model: Any, spec: ModelSpec) -> Callable[[Sequence[Signature | None]],
                                                      list[BuildResult]]:
    """`hook.Build` for a model already built: torch's dry run of each reference, in-process."""
    from ckptlint.compare import prefix
    from ckptlint.build.dryrun import dry_run_load, nonpersistent_buffers, signature_of

    def builds(references: Sequence[Signature | None]) -> list[BuildResult]:
        current = signature_of(model, spec.name, spec.target)
        results = []
        for ref in references:
            wrapper = prefix.detect(ref, current) if ref is not None else None
            ref = prefix.rekey(ref, wrapper.mapping) if wrapper and ref else ref  # as a build
            load = dry_run_load(model, ref, current) if ref is not None else None
            results.append(BuildResult(spec.name, signature=current, load=load,
                                       nonpersistent=nonpersistent_buffers(model)))
        return results

    return builds


def _loads(model: Any, path: Path) -> str | None:
    from ckptlint.compare.verdict import verdict

    name, note = verdict(check(model, path))
    return None if name is Verdict.LOADS else f"the model {name.text} it" + (
        f" ({note})" if note else "")


def _name(target: Any) -> str:
    return getattr(target, "__qualname__", None) or type(target).__name__


def _shown(checkpoint: Any) -> str:
    return "the signature" if isinstance(checkpoint, Signature) else os.fspath(checkpoint)


__all__ = ["assert_loads", "build", "check", "convert", "read", "signature"]
