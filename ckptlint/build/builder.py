"""Build registered models on the meta device and read their state-dict signatures.

This module and the checkpoint readers are the only places that import torch. Everything it
returns is plain data (`BuildResult`), so the rest of ckptlint never touches a live model.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

from ckptlint.build.creation import describe_modules, recording
from ckptlint.build.dryrun import dry_run_load, nonpersistent_buffers, signature_of
from ckptlint.build.fallback import cpu_fallback
from ckptlint.build.loadtorch import import_torch
from ckptlint.build.metadevice import meta_device
from ckptlint.build.standins import no_dynamo_import, no_sympy_import
from ckptlint.build.tracking import document, fresh_bytecode, project_files, tracking
from ckptlint.config import entry_location
from ckptlint.core.paths import is_project_file, relative
from ckptlint.core.record import replace
from ckptlint.core.records import BuildResult, Config, Location, ModelSpec, Signature


class BuildFailure(Exception):
    """A model could not be built; carries the one-sentence reason and where to point."""

    def __init__(self, message: str, location: Location | None = None):
        super().__init__(message)
        self.location = location


@contextlib.contextmanager
def project_on_path(config: Config) -> Iterator[None]:
    """Put the project root and its `pythonpath` entries first on sys.path while building."""
    root = Path(config.root)
    entries = [str((root / p).resolve()) for p in config.pythonpath] + [str(root)]
    added = [e for e in entries if e not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def resolve_target(target: str) -> Any:
    """Import `package.module:attr.sub` and return the object."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def instantiate(value: Any) -> Any:
    """Build `_target_` tables depth first (the Hydra convention); other values pass through."""
    if isinstance(value, dict):
        built = {k: instantiate(v) for k, v in value.items() if k != "_target_"}
        if "_target_" in value:
            return resolve_target(value["_target_"])(**built)
        return built
    if isinstance(value, list):
        return [instantiate(v) for v in value]
    return value


@contextlib.contextmanager
def on_meta(stand_ins: bool = True) -> Iterator[None]:
    """Everything a meta build needs: the meta device, no pointless init, and (unless asked
    not to) no dynamo or sympy import for what plain values answer. A build that fails with
    the stand-ins is tried again without them (`build_module`): an import they upset (a first
    `import torch.distributed.tensor` meets the dynamo stand-in mid-import) then runs as
    torch's own."""
    with meta_device(), (no_dynamo_import() if stand_ins else contextlib.nullcontext()), \
            (no_sympy_import() if stand_ins else contextlib.nullcontext()):
        yield


def build_module(spec: ModelSpec,
                 config: Config) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    """Instantiate the model on meta; raise `BuildFailure`.

    Returns the module, notes, and the per-operation fallbacks' notes. When an operation has
    no meta kernel (whisper's `alignment_heads.to_sparse()`), the build is run on meta again
    with only such operations run on the CPU (`cpu_fallback`); when that fails too, the whole
    model is built on the CPU, with a note (it allocates every weight).
    """
    factory = _factory(spec, config)
    first: Exception | None = None
    error: Exception | None = None  # the last attempt's: a per-op retry follows only its kind
    for stand_ins in (True, False):  # without the sympy stand-ins, in case they were the cause
        for per_op in (False, True):
            if per_op and not _lacks_meta_kernel(error):
                continue
            fallback = cpu_fallback(config.root) if per_op else None
            try:
                with on_meta(stand_ins), \
                        fallback if fallback is not None else contextlib.nullcontext():
                    module = _checked(factory(**instantiate(spec.kwargs)), spec, config)
                return module, (), () if fallback is None else (fallback.note(spec.name),)
            except BuildFailure:
                raise
            except Exception as exc:
                error = exc
                first = first or exc
    return _on_cpu(factory, spec, config), (_cpu_note(spec, first),), ()


def _on_cpu(factory: Any, spec: ModelSpec, config: Config) -> Any:
    try:
        return _checked(factory(**instantiate(spec.kwargs)), spec, config)
    except BuildFailure:
        raise
    except Exception as exc:
        raise _failure(exc, f"building `{spec.target}` raised", spec, config) from None


def _cpu_note(spec: ModelSpec, meta_error: BaseException) -> str:
    # torch's message for a missing kernel runs to ~600 characters of compile advice: its
    # first sentence says what failed
    text = f"{type(meta_error).__name__}: {meta_error}".splitlines()[0]
    reason = text.split(". ", 1)[0].rstrip(".")[:_REASON_CHARS]
    return (f"{spec.name}: construction on the meta device failed ({reason}); "
            "built on the CPU instead, which allocates its weights")


_REASON_CHARS = 200


def _lacks_meta_kernel(exc: BaseException | None) -> bool:
    """Whether an operation without a meta kernel is behind the failure (torch raises
    NotImplementedError for it; user code may have wrapped it in another exception)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, NotImplementedError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _factory(spec: ModelSpec, config: Config) -> Any:
    try:
        factory = resolve_target(spec.target)
    except Exception as exc:
        raise _failure(exc, f"cannot import `{spec.target}`:", spec, config) from None
    if not callable(factory):
        raise BuildFailure(
            f"tool.ckptlint.models[{spec.index}].target `{spec.target}` is not callable "
            f"(it is {type(factory).__name__!s}); name a class or a function returning an "
            "nn.Module", entry_location(config, spec, "target"))
    return factory


def _checked(module: Any, spec: ModelSpec, config: Config) -> Any:
    torch = import_torch()
    if not isinstance(module, torch.nn.Module):
        raise BuildFailure(
            f"tool.ckptlint.models[{spec.index}].target `{spec.target}` returned "
            f"{type(module).__name__}, not a torch.nn.Module",
            entry_location(config, spec, "target"))
    return module


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # user code that prints while building must not corrupt machine-readable stdout
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _failure(exc: BaseException, doing: str, spec: ModelSpec, config: Config) -> BuildFailure:
    detail = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    location = _project_frame(exc, config) or entry_location(config, spec, "kwargs" if isinstance(exc, TypeError) else "target")
    return BuildFailure(f"{doing} {detail}", location)


def _project_frame(exc: BaseException, config: Config) -> Location | None:
    if isinstance(exc, SyntaxError) and exc.filename and is_project_file(exc.filename, config.root):
        return Location(relative(exc.filename, config.root), exc.lineno or 1, exc.offset or 1)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if is_project_file(frame.filename, config.root):
            return Location(relative(frame.filename, config.root), frame.lineno or 1)
    return None


def forget_project_modules(config: Config) -> None:
    """Drop imports of the project's own modules so the next build imports them afresh.

    Done before every model: a run sees the code as it is now (also when `main()` runs
    repeatedly in one process), and the modules a model needs appear in `sys.modules` during
    its own build, which is what `tracking` keys its cache entry on.
    """
    root = Path(config.root)
    names = set()
    for directory in [root / p for p in config.pythonpath] + [root]:
        if directory.is_dir():
            names |= {p.stem if p.suffix == ".py" else p.name for p in directory.iterdir()
                      if p.suffix == ".py" or (p.is_dir() and p.name.isidentifier())}
    names.discard(__name__.partition(".")[0])  # never ckptlint itself, e.g. in its own repo
    for name in [n for n in sys.modules if n.partition(".")[0] in names]:
        del sys.modules[name]
    importlib.invalidate_caches()  # finders list folders again, so the listings are recorded


def build_all(specs: Sequence[ModelSpec], config: Config,
              references: Sequence[Signature | None]) -> list[BuildResult]:
    """Build every model in this process, in order (see `isolate` for builds in a child)."""
    import_torch()  # one clear sentence when torch is missing, before anything touches it
    return [build(spec, config, ref) for spec, ref in zip(specs, references)]


def build(spec: ModelSpec, config: Config, reference: Signature | None = None) -> BuildResult:
    """Build one model and, given its committed signature, torch's verdict on loading it.

    Never raises for a problem of the model itself, `sys.exit` included: that becomes
    `BuildResult.error`. Everything user code runs (import, `__init__`, state-dict and load
    hooks) runs with stdout sent to stderr and `sys.argv` holding only the target's module.
    """
    import_torch()  # before tracking: torch is keyed by its version, not by what it reads
    forget_project_modules(config)
    with project_on_path(config), _as_program(spec), _stdout_to_stderr():
        with fresh_bytecode(), tracking(config.root):
            result = _built(spec, config, reference)
        inputs = document(config.root) if result.signature is not None else None
    return replace(result, inputs=inputs, files=project_files(inputs) or result.files)


def _built(spec: ModelSpec, config: Config, reference: Signature | None) -> BuildResult:
    try:
        with recording(config.root, sys._getframe()) as recorder:
            module, notes, fallbacks = build_module(spec, config)
        signature = signature_of(module, spec.name, spec.target)
        load = dry_run_load(module, _unwrapped(reference, signature), signature) \
            if reference is not None else None
        return BuildResult(spec.name, signature=signature, load=load, notes=notes,
                           fallbacks=fallbacks,
                           sites=recorder.sites(module),
                           modules=describe_modules(module, config.root),
                           nonpersistent=nonpersistent_buffers(module))
    except BuildFailure as failure:
        return BuildResult(spec.name, error=str(failure), error_location=failure.location)
    except SystemExit as exc:  # a model must not end the run; the other models go on
        location = _project_frame(exc, config) or entry_location(config, spec, "target")
        return BuildResult(spec.name, error=f"building `{spec.target}` called "
                           f"sys.exit({exc.code!r}), which would end the process",
                           error_location=location)
    except Exception as exc:  # state_dict(), a state-dict hook, named_modules… of user code
        failure = _failure(exc, f"reading the state dict of `{spec.target}` raised", spec,
                           config)
        return BuildResult(spec.name, error=str(failure), error_location=failure.location)


@contextlib.contextmanager
def _as_program(spec: ModelSpec) -> Iterator[None]:
    """`sys.argv` is the target's, not ckptlint's: a model module that parses arguments at
    import sees none, instead of ckptlint's own (`check`, `--format`, …)."""
    saved = sys.argv
    sys.argv = [spec.target.partition(":")[0]]
    try:
        yield
    finally:
        sys.argv = saved


def _unwrapped(reference: Signature, signature: Signature) -> Signature:
    """The reference re-keyed past a wrapper prefix, as `diff.compare` will read it."""
    from ckptlint.compare import prefix

    wrapper = prefix.detect(reference, signature)
    return wrapper.apply(reference) if wrapper else reference
