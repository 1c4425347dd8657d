"""The records every stage of ckptlint passes along: specs, signatures, findings, locations.

Nothing here imports torch or libcst; every record is frozen and built once.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ckptlint.core.kinds import Kind, Outcome, Severity, Status
from ckptlint.core.record import field, record


FORMAT_VERSION = 1
# `Signature.source` of a PEFT adapter read as the keys it changes in its base model
ADAPTER_SOURCE = "peft-adapter"
# a build that takes longer is stopped: minutes for a large model built on the CPU, not a hang
DEFAULT_BUILD_TIMEOUT = 300.0


@record
class TensorSpec:
    """One state-dict entry: dtype (torch's name, e.g. "float32"), shape, and what holds it.

    `role` is "parameter" or "buffer" when built from code, None when read from a file
    that does not say.
    """

    dtype: str
    shape: tuple[int, ...]
    role: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@record
class Signature:
    """The state-dict signature of a model or checkpoint.

    `versions` holds the per-module `_version` metadata torch's loader passes to load hooks
    (module prefix -> version); `has_metadata` says whether the source had such metadata at all.
    `aliases` maps each tied key to the key it shares its tensor with. `source` says where it
    came from: "code", "checkpoint", or `ADAPTER_SOURCE` for a PEFT adapter, whose keys are a
    subset (the base model's own checkpoint provides the rest).
    """

    tensors: Mapping[str, TensorSpec]
    versions: Mapping[str, int] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    has_metadata: bool = True
    model: str = ""
    target: str = ""
    torch_version: str = ""
    source: str = "code"
    # the file says which tensors share storage (a torch.save pickle does; safetensors and DCP
    # keep no such record), so no alias means no tie; the code's own signature always says
    ties_recorded: bool = False

    @property
    def partial(self) -> bool:
        """Only some keys of a state dict: the others come from elsewhere (a base model)."""
        return self.source == ADAPTER_SOURCE

    @property
    def num_parameters(self) -> int:
        """Values in the state dict, parameters and buffers alike, tied tensors once.

        Buffers count too: a checkpoint file cannot tell one from the other, and a count
        that differed between the code and a checkpoint of it would report a change that
        is not one.
        """
        counted: dict[int, list] = {}  # per spec object: keys repeat a few specs thousands of times
        for key, spec in self.tensors.items():
            if key not in self.aliases:
                counted.setdefault(id(spec), [spec, 0])[1] += 1
        return sum(spec.numel * n for spec, n in counted.values())


@record
class Location:
    """A span in a file relative to the project root (`/` separators).

    Lines and columns are 1-based; `end_column` is exclusive (one past the last character),
    as in SARIF. `note` says how the location was found when that is not obvious; `source`
    holds the located lines for code frames (not part of the location's identity).
    """

    file: str
    line: int
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None
    note: str = ""
    source: tuple[str, ...] = field(default=(), compare=False, repr=False)


@record
class Finding:
    """One coded problem with one model (or one signature file).

    `against` names the checkpoint file compared with, when it is not the committed signature.
    A rename lists each new key in `new_keys`, in the order of `keys`, and the evidence that
    paired them in `evidence`. A finding that stands for a cause (one edit, or one statement)
    holds the findings it explains in `members`, each at the statement creating its keys.
    """

    kind: Kind
    model: str
    message: str
    key: str = ""
    keys: tuple[str, ...] = ()
    new_key: str = ""
    old: TensorSpec | None = None
    new: TensorSpec | None = None
    location: Location | None = None
    help: str = ""
    against: str = ""
    # torch's strict loading raises nothing for these keys, yet drops them (a None slot)
    silent: bool = False
    new_keys: tuple[str, ...] = ()
    evidence: str = ""
    members: tuple["Finding", ...] = ()

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def severity(self) -> Severity:
        return self.kind.severity


@record
class ModelSpec:
    """One `[[tool.ckptlint.models]]` entry, validated."""

    name: str
    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    line: int | None = None
    strip_prefix: str = ""
    # key pattern (fnmatch) -> codes it may ignore, in config order
    ignore: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    checkpoints: tuple[str, ...] = ()
    state_dict_key: str | None = None


@record
class Config:
    """The `[tool.ckptlint]` table of one project, validated."""

    root: str
    pyproject: str
    signatures: str = "signatures"
    pythonpath: tuple[str, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    line: int | None = None
    python: str = ""
    # seconds one model's build may take before it is stopped and reported
    build_timeout: float = DEFAULT_BUILD_TIMEOUT


@record
class LoadReport:
    """What torch's own load_state_dict said when the committed signature was loaded on meta.

    `mismatched` lists the keys torch refused for size; `errors` any other message it raised.
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    # a load hook raised (it needs real values, which meta tensors lack): no verdict
    hook_errors: tuple[str, ...] = ()
    # keys torch dropped without a word, under these submodule slots that hold None
    dropped: tuple[str, ...] = ()
    none_slots: tuple[str, ...] = ()
    # keys the model's own load hooks took out of the state dict, or put in (renames on purpose)
    consumed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


# how a recorded statement produced its attribute (`Site.via`)
CREATED = ""       # a new module, parameter or buffer
TIED = "tie"       # a tensor or module already held under another name: a tie (or a share)
EMPTIED = "none"   # None: the slot is named, but holds nothing any more


# (file, line) of the statements on the way to a key, innermost first
Frames = tuple[tuple[str, int], ...]


@record
class Site:
    """Where the build saw a submodule, parameter or buffer created: a project file and line.

    `via` says what the statement assigned (`CREATED`, `TIED`, `EMPTIED`); `stack` holds the
    project frames that led to it, innermost first (the parent's statement creating the
    module, a helper's caller, ...), so a changed line anywhere on the way can be found.
    """

    file: str
    line: int
    via: str = CREATED
    stack: tuple[tuple[str, int], ...] = ()


@record
class ModuleInfo:
    """A live submodule as plain data: its type name and the project classes in its MRO.

    `classes` holds (file relative to the project root, `__qualname__`) pairs, most derived
    first, for the static search when the build recorded no site.
    """

    type_name: str
    classes: tuple[tuple[str, str], ...] = ()


@record
class BuildResult:
    """Everything the build step learned about one model, as plain data.

    Either `signature` is set, or `error` (one sentence) with its `error_location`.
    `load` holds torch's verdict on the committed signature, when one was given. `sites` maps
    state-dict keys and module paths to where the build created them; `modules` describes every
    submodule by path ("" is the root). `files` is the model's import closure within the
    project (relative paths), what a cached result depends on.
    """

    model: str
    signature: Signature | None = None
    load: LoadReport | None = None
    error: str = ""
    error_location: Location | None = None
    notes: tuple[str, ...] = ()
    # notes of operations run on the CPU for want of a meta kernel (`build.cpu_fallback`):
    # the signature is exact; unlike `notes`, a cache hit does not say them again
    fallbacks: tuple[str, ...] = ()
    sites: Mapping[str, Site] = field(default_factory=dict)
    modules: Mapping[str, ModuleInfo] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    # state-dict names of buffers registered with persistent=False
    nonpersistent: tuple[str, ...] = ()
    # every input the build used (`ckptlint.core.inputs`); None when one changed while it ran, or
    # when the build failed: such a result is never cached
    inputs: Mapping[str, Any] | None = None


@record
class ModelReport:
    """The outcome for one model: its findings and what a summary table needs."""

    name: str
    findings: tuple[Finding, ...] = ()
    signature_file: str = ""
    old_parameters: int | None = None
    new_parameters: int | None = None
    notes: tuple[str, ...] = ()
    # what loading the checkpoint into the code does (a `Verdict`), or "" when not checked
    verdict: str = ""
    verdict_note: str = ""
    # the `# ckptlint: ignore` comments (file, line) that silenced a finding of this model
    used_suppressions: tuple[tuple[str, int], ...] = ()

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.findings)

    @property
    def status(self) -> Status:
        if self.outcome & Outcome.UNCHECKED:
            return Status.ERROR
        return Status.DRIFT if self.outcome & Outcome.DRIFT else Status.CLEAN


def outcome_of(findings: Iterable[Finding]) -> Outcome:
    """The exit-code bits of some findings: each kind's outcome, OR-ed."""
    bits = Outcome.CLEAN
    for finding in findings:
        bits |= finding.kind.outcome
    return bits


@record
class Report:
    """Everything one `check` (or `diff`) run found, in output order.

    `against` names the file the models were checked against instead of their committed
    signatures; `compared` is set by `diff` (the two files' names).
    """

    models: tuple[ModelReport, ...] = ()
    extra: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    root: str = "."
    against: str = ""
    compared: tuple[str, str] | None = None

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for m in self.models for f in m.findings) + self.extra

    @property
    def outcome(self) -> Outcome:
        return outcome_of(self.findings)
