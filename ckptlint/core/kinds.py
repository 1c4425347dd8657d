"""Every finding kind, each one `KindSpec`: its code, what breaks, how to fix it, how its message
and its help line read, which statement it points at, and what it makes of loading.

One entry per kind is all a new kind needs: the diff's messages, the locator, the SARIF help,
`ckptlint rules`, docs/rules.md, the Markdown diff and `assert_loads` read it from here.
"""

from __future__ import annotations

import enum

from ckptlint.core.record import record


class Severity(str, enum.Enum):
    """How bad a finding is, in SARIF's and GitHub's vocabulary."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class Outcome(enum.IntFlag):
    """Exit-code bits: a run can find drift and fail to check something at once."""

    CLEAN = 0
    DRIFT = 1
    UNCHECKED = 2


class _Word(str, enum.Enum):
    """An enum of words that prints and formats as its value, as the plain string it replaced."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Status(_Word):
    """A model's state after a run (JSON's `status`): what its findings' outcome bits say."""

    CLEAN = "clean"
    DRIFT = "drift"
    ERROR = "error"  # something could not be checked


class Verdict(_Word):
    """What loading a checkpoint into the code does; the value is what reports and JSON say."""

    LOADS = "loads"
    DROPS_SILENTLY = "drops-silently"
    LOADS_NON_STRICT = "loads-non-strict"
    DOES_NOT_LOAD = "does-not-load"
    NEEDS_REAL_LOAD = "needs-real-load"

    @property
    def text(self) -> str:
        """`net: loads strictly`."""
        return _VERDICT_TEXT[self][0]

    @property
    def of_it(self) -> str:
        """`the current code loads it strictly`."""
        return _VERDICT_TEXT[self][1]


_VERDICT_TEXT = {
    Verdict.LOADS: ("loads strictly", "loads it strictly"),
    Verdict.DROPS_SILENTLY: ("loads without an error but silently drops weights",
                             "loads it without an error but silently drops weights"),
    Verdict.LOADS_NON_STRICT: ("loads only with strict=False", "loads it only with strict=False"),
    Verdict.DOES_NOT_LOAD: ("does not load", "does not load it"),
    Verdict.NEEDS_REAL_LOAD: ("needs a real load to tell", "needs a real load to tell"),
}
# best first: how `inspect` ranks the models a checkpoint might fit
BEST_FIRST = (Verdict.LOADS, Verdict.LOADS_NON_STRICT, Verdict.DROPS_SILENTLY,
              Verdict.NEEDS_REAL_LOAD, Verdict.DOES_NOT_LOAD)
# when findings of several kinds meet, the first of these that one of them implies wins
WORST_FIRST = (Verdict.NEEDS_REAL_LOAD, Verdict.DOES_NOT_LOAD, Verdict.LOADS_NON_STRICT)

_ACCEPT = "If the change is intended, run `{cmd} update NAME` and commit the new signature file."


@record
class KindSpec:
    """Everything ckptlint says and decides about one kind of finding."""

    code: str  # stable, never renumbered: new kinds take new codes
    slug: str
    severity: Severity
    outcome: Outcome  # the exit-code bit a finding of this kind sets
    doc: str  # what breaks at load time (also the message of a finding with no key)
    fix: str  # how to fix it: `ckptlint rules`, docs/rules.md
    help: str  # SARIF's help: what to do, `{cmd}` being the command that ran
    verdict: Verdict | None = None  # what a finding of this kind makes of loading
    # the message of a finding about one key (or a folded pattern): {key}; {old} and {new} are
    # the two sides as `shows` says ("spec": dtype and shape, "dtype", "role")
    message: str = ""
    shows: str = "spec"
    # the `help:` line at the located statement, when no checkpoint file is involved:
    # {update} is `ckptlint update MODEL`, {model} the model's name
    advice: str = ""
    sides: str = ""  # the Markdown signature diff: "-" old key, "+" new key, "-+" both, "->" moved
    existing: bool = False  # the code still creates the key: its own statement is the answer
    per_tensor: bool = False  # about one tensor's key, located at what creates that tensor
    strict_only: bool = False  # only strict loading fails: `assert_loads(strict=False)` passes
    remaps: bool = False  # a key mapping (`ckptlint remap --against FILE`) can make a file load


class Kind(enum.Enum):
    """A finding kind; its value is its `KindSpec` (`kind.spec`), whose fields it also answers."""

    MISSING_KEY = KindSpec(
        "CKL101", "missing-key", Severity.ERROR, Outcome.DRIFT,
        "the code creates this tensor but the checkpoint lacks it: "
        "load_state_dict(strict=True) fails with \"Missing key(s)\", "
        "and with strict=False it stays randomly initialised",
        fix="If the new layer is intended, run `ckptlint update NAME` and give old checkpoints a "
            "load hook that initialises it; otherwise restore it.",
        help="Restore the layer in the code or map the key when loading. " + _ACCEPT,
        verdict=Verdict.LOADS_NON_STRICT,
        message="`{key}` ({new}) is created by the code but absent from the checkpoint: strict "
                "loading fails with \"Missing key(s)\"; with strict=False it stays randomly "
                "initialised",
        advice="old checkpoints lack it: remove what creates it here, or accept it with {update} "
               "and let it initialise when loading them",
        sides="+", per_tensor=True, strict_only=True, remaps=True)
    UNEXPECTED_KEY = KindSpec(
        "CKL102", "unexpected-key", Severity.ERROR, Outcome.DRIFT,
        "the checkpoint has this tensor but the code no longer creates it: "
        "load_state_dict(strict=True) fails with \"Unexpected key(s)\", "
        "and with strict=False its weights are silently dropped",
        fix="If dropping it is intended, `ckptlint update NAME`; old checkpoints then need "
            "strict=False or a hook that discards the key.",
        help="Restore the layer, or drop/remap the key when loading old checkpoints. " + _ACCEPT,
        verdict=Verdict.LOADS_NON_STRICT,
        message="`{key}` ({old}) is in the checkpoint but the code no longer creates it: strict "
                "loading fails with \"Unexpected key(s)\"; with strict=False its weights are "
                "dropped",
        advice="restore what created it here, or accept the removal with {update} and drop the "
               "key when loading old checkpoints",
        sides="-", per_tensor=True, strict_only=True, remaps=True)
    SHAPE_MISMATCH = KindSpec(
        "CKL103", "shape-mismatch", Severity.ERROR, Outcome.DRIFT,
        "the shapes differ: load_state_dict fails with \"size mismatch\", even with strict=False",
        fix="Restore the old size, or accept the change with `ckptlint update NAME` and retrain "
            "or convert the old checkpoints.",
        help="Restore the old size (check the constructor arguments and kwargs in "
             "pyproject.toml). " + _ACCEPT,
        verdict=Verdict.DOES_NOT_LOAD,
        message="`{key}` is {old} in the checkpoint but {new} in the code: loading fails with "
                "\"size mismatch\", even with strict=False",
        advice="restore the checkpoint's shape here, or accept the new one with {update} and "
               "convert old checkpoints",
        sides="-+", existing=True, per_tensor=True)
    DTYPE_MISMATCH = KindSpec(
        "CKL104", "dtype-mismatch", Severity.WARNING, Outcome.DRIFT,
        "the dtypes differ: load_state_dict casts the weights silently",
        fix="Usually harmless; set the dtype explicitly if precision matters, or "
            "`ckptlint update NAME`.",
        help="Loading still works but casts the weights; make the dtype explicit if that is "
             "not wanted. " + _ACCEPT,
        message="`{key}` is {old} in the checkpoint but {new} in the code: loading casts it "
                "silently",
        shows="dtype",
        advice="restore the checkpoint's dtype here, or accept the new one with {update}",
        sides="-+", existing=True, per_tensor=True, strict_only=True)
    RENAMED_KEY = KindSpec(
        "CKL105", "renamed-key", Severity.ERROR, Outcome.DRIFT,
        "the tensor moved to a new key: the old checkpoint loads only with a key remap",
        fix="`ckptlint remap NAME` prints a key mapping and a load hook, proven to load old "
            "checkpoints (`--apply` writes it into the class); or rename the attribute back.",
        help="Rename the attribute back, or remap the old key in a load hook "
             "(`_load_from_state_dict`) so old checkpoints load. " + _ACCEPT,
        verdict=Verdict.LOADS_NON_STRICT,
        advice="accept the rename with {update} and load old checkpoints through "
               "`ckptlint remap {model}`, or rename it back",
        sides="->", per_tensor=True, remaps=True)
    PREFIX_MISMATCH = KindSpec(
        "CKL106", "prefix-mismatch", Severity.ERROR, Outcome.DRIFT,
        "every key of the checkpoint carries a wrapper prefix: strip it before loading",
        fix="Strip the wrapper prefix before loading, or set `strip_prefix` in the model's entry.",
        help="Strip the wrapper prefix (`module.`, `_orig_mod.`, `model.`) from the checkpoint's "
             "keys before loading, or save the unwrapped model.",
        verdict=Verdict.DOES_NOT_LOAD, remaps=True)
    LOAD_ERROR = KindSpec(
        "CKL107", "load-error", Severity.ERROR, Outcome.DRIFT,
        "torch's load_state_dict dry run on meta tensors failed",
        fix="Read torch's message; a custom `_load_from_state_dict` or hook may raise.",
        help="Read torch's message: a load hook or `_version` metadata of the model rejects the "
             "committed signature. " + _ACCEPT,
        verdict=Verdict.DOES_NOT_LOAD)
    BUILD_ERROR = KindSpec(
        "CKL201", "build-error", Severity.ERROR, Outcome.UNCHECKED,
        "the model could not be imported or built, so it was not checked",
        fix="Fix the import or constructor error shown at the location; a model that exits or "
            "hangs while it is built is reported here too.",
        help="Fix the import or constructor error at the location shown; run `{cmd} check "
             "NAME` locally to see it. The other models were still checked.")
    SIGNATURE_MISSING = KindSpec(
        "CKL202", "signature-missing", Severity.ERROR, Outcome.UNCHECKED,
        "no committed signature exists for this model, so it was not checked",
        fix="Run `ckptlint update NAME` and commit the file.",
        help="Record the signature with `{cmd} update NAME` and commit the file.")
    SIGNATURE_ORPHANED = KindSpec(
        "CKL203", "signature-orphaned", Severity.NOTE, Outcome.CLEAN,
        "a signature file that no configured model uses",
        fix="Delete the file, or register the model it describes.",
        help="Delete the file, or register the model it describes in [tool.ckptlint] in "
             "pyproject.toml.")
    SIGNATURE_INVALID = KindSpec(
        "CKL204", "signature-invalid", Severity.ERROR, Outcome.UNCHECKED,
        "the committed signature file cannot be read, so the model was not checked",
        fix="Restore it from version control or run `ckptlint update NAME`.",
        help="Restore the file from version control or rewrite it with `{cmd} update NAME`.")
    ROLE_CHANGED = KindSpec(
        "CKL108", "role-changed", Severity.WARNING, Outcome.DRIFT,
        "a parameter became a buffer or a buffer a parameter: the weights still load, but "
        "the optimizer, `parameters()` and weight decay now see it differently",
        fix="Intended? `ckptlint update NAME`. Otherwise register it as it was (`nn.Parameter` "
            "vs `register_buffer`).",
        help="Register the tensor as it was (`nn.Parameter` or `register_buffer`), or check "
             "that optimizers and weight decay treat it as intended. " + _ACCEPT,
        message="`{key}` was a {old} in the checkpoint and is a {new} in the code: it still "
                "loads, but optimizers and `parameters()` now see it differently",
        shows="role", existing=True, per_tensor=True)
    BUFFER_NOT_PERSISTENT = KindSpec(
        "CKL109", "buffer-not-persistent", Severity.ERROR, Outcome.DRIFT,
        "the buffer is now registered with persistent=False: it left the state dict, so "
        "strict loading fails with \"Unexpected key(s)\" and the checkpoint's value is dropped",
        fix="Register it with persistent=True again, or give old checkpoints a load hook that "
            "drops the key.",
        help="Register the buffer with persistent=True again, or drop the key when loading old "
             "checkpoints. " + _ACCEPT,
        verdict=Verdict.LOADS_NON_STRICT,
        message="`{key}` ({old}) is in the checkpoint but the code registers it with "
                "persistent=False: strict loading fails with \"Unexpected key(s)\"; with "
                "strict=False the checkpoint's value is dropped and the buffer keeps its "
                "initial value",
        advice="register it with persistent=True again, or accept it with {update} and drop "
               "the key when loading old checkpoints",
        existing=True, per_tensor=True)
    TIE_CHANGED = KindSpec(
        "CKL110", "tie-changed", Severity.WARNING, Outcome.DRIFT,
        "weights that shared one tensor are now separate, or the other way round: the load "
        "succeeds, but tied copies silently overwrite each other or drift apart in training",
        fix="Restore the tie (`self.head.weight = self.embed.weight`), or accept it with "
            "`ckptlint update NAME`.",
        help="Restore the tie as it was (`self.head.weight = self.embed.weight`), or untie it "
             "on purpose. " + _ACCEPT,
        advice="restore the tie as it was here, or accept the change with {update}",
        per_tensor=True)
    NEEDS_REAL_LOAD = KindSpec(
        "CKL111", "needs-real-load", Severity.WARNING, Outcome.DRIFT,
        "a load hook of the model needs real tensor values, so the dry run on meta tensors "
        "cannot tell whether the checkpoint loads: load it for real once",
        fix="Load the checkpoint once for real on the CPU, or let the hook skip meta tensors "
            "(`if t.is_meta: return`).",
        help="Load the checkpoint once for real on the CPU, or let the hook skip meta tensors "
             "(`if t.is_meta: return`) so the dry run can decide.",
        verdict=Verdict.NEEDS_REAL_LOAD)
    TIED_KEY_ABSENT = KindSpec(
        "CKL112", "tied-key-absent", Severity.WARNING, Outcome.DRIFT,
        "the checkpoint lacks a key the code ties to another one it has (a tie-aware saver "
        "wrote the shared tensor once): plain load_state_dict(strict=True) fails with "
        "\"Missing key(s)\"; tie-aware loaders (safetensors.torch.load_model, transformers' "
        "from_pretrained) and strict=False load it fully",
        fix="Load the file with a tie-aware loader (safetensors.torch.load_model, "
            "from_pretrained) or strict=False, or save every key "
            "(`torch.save(model.state_dict())`).",
        help="Load it with a tie-aware loader (safetensors.torch.load_model, from_pretrained) or "
             "strict=False, or save every key with `torch.save(model.state_dict())`.",
        verdict=Verdict.LOADS_NON_STRICT, strict_only=True)
    UNUSED_SUPPRESSION = KindSpec(
        "CKL205", "unused-suppression", Severity.NOTE, Outcome.CLEAN,
        "a suppression (an `ignore` pattern of the model's entry, or a `# ckptlint: ignore` "
        "comment in its code) silences no finding: stale suppressions hide future drift",
        fix="Remove the `ignore` pattern or the comment, or narrow it to the keys and codes it "
            "is for.",
        help="Remove the `ignore` pattern or the `# ckptlint: ignore` comment, or narrow it to "
             "the keys and codes it is for.")
    CHECKPOINT_UNREADABLE = KindSpec(
        "CKL206", "checkpoint-unreadable", Severity.ERROR, Outcome.UNCHECKED,
        "a checkpoint the model must keep loading cannot be read safely, so it was not checked",
        fix="Read the sentence: a file ckptlint refuses (one whose pickle runs code, or whose "
            "structure two readers could see differently) is one torch.load should not be "
            "trusted with either; re-save it with `torch.save(model.state_dict())` or as "
            "safetensors, or fix its path in `checkpoints`.",
        help="Re-save the checkpoint from a trusted copy (`torch.save(model.state_dict())` or "
             "safetensors), or correct its path in the model's `checkpoints`.")

    @property
    def spec(self) -> KindSpec:
        return self.value

    @property
    def code(self) -> str:
        return self.value.code

    @property
    def slug(self) -> str:
        return self.value.slug

    @property
    def severity(self) -> Severity:
        return self.value.severity

    @property
    def outcome(self) -> Outcome:
        return self.value.outcome

    @property
    def doc(self) -> str:
        return self.value.doc
