"""`ckptlint init`: propose the project's models (found statically by `ckptlint.source.discover`), let
the user pick, register the picked ones in pyproject.toml (appending text, leaving every other
byte alone), then record their signatures."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from ckptlint.core.atomic import write_atomic
from ckptlint.core.errors import CkptlintError
from ckptlint.core.paths import display
from ckptlint.core.record import record, replace
from ckptlint.source.discover import Discovery, Proposal, discover

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from ckptlint.commands.pyproject import (commented_targets, entry_lines, newline_of, pyproject_near,
                                         pythonpath_of, tool_table, validate, Candidate, merged,
                                         render)

# a dimension suffix (`2D`), a capital and its lowercase run (`Vi`, `Transformer`), digits,
# lowercase, or separators
_TOKEN = re.compile(r"[0-9]+D(?![a-z])|[A-Z][a-z]*|[0-9]+|[a-z]+|[^A-Za-z0-9]+")
_FACTORY_PREFIX = re.compile(r"^(build|create)_")
# a terminal's classic height: more commented-out TODO text than this is written only on request
SCREEN_LINES = 24
_SHOWN_PARTS = 5  # parts named in the one line that summarises them


@record
class Survey:
    """The candidates not yet in pyproject.toml, and what the search found besides."""

    candidates: tuple[Candidate, ...]
    known: tuple[str, ...]  # targets already in pyproject.toml, registered or commented out
    unresolved: tuple[str, ...]
    files: int


def run(args: argparse.Namespace) -> int:
    pyproject = pyproject_near(Path.cwd())
    text = pyproject.read_bytes().decode("utf-8") if pyproject.exists() else ""
    table = tool_table(pyproject, text)
    pythonpath = pythonpath_of(pyproject.parent, table)
    survey = survey_of(discover(pyproject.parent, pythonpath), table or {},
                       commented_targets(text))
    out = sys.stdout
    interactive = not (args.yes or args.dry_run or args.select) and sys.stdin.isatty()
    describe(survey, out, interactive)
    chosen = _choose(survey, args, interactive, out)
    if not chosen:
        out.write("nothing to add to pyproject.toml\n")
        return 0
    new_text = merged(text, render(chosen, table, pythonpath, newline_of(text)))
    validate(pyproject, text, new_text, chosen)
    if args.dry_run:
        out.write(f"would append to {display(pyproject)}:\n\n{new_text[len(text):].lstrip()}")
        return 0
    if interactive and not _confirm(f"append {len(chosen)} model(s) to {display(pyproject)}?"):
        out.write("nothing written\n")
        return 0
    write_atomic(pyproject, new_text)
    return _first_update(args, pyproject, chosen, out)


def _choose(survey: Survey, args: argparse.Namespace, interactive: bool,
            out: TextIO) -> list[Candidate]:
    if args.select:
        return select(survey.candidates, args.select)
    if interactive:
        return ask_arguments(pick(survey.candidates))
    return preselected(survey.candidates, out)


def _first_update(args: argparse.Namespace, pyproject: Path, chosen: Sequence[Candidate],
                  out: TextIO) -> int:
    active = [c.name for c in chosen if c.complete]
    waiting = [c for c in chosen if not c.complete]
    out.write(f"added {len(active)} model(s) to {display(pyproject)}"
              + (f"; {len(waiting)} left commented out with a TODO: fill in their kwargs, "
                 "uncomment them and run `ckptlint update NAME`" if waiting else "") + "\n")
    if not active:
        return 0
    from ckptlint.commands import update  # the very `ckptlint update` a user would run next

    code = update.run(argparse.Namespace(names=active, from_file=None, jobs=args.jobs,
                                         state_dict_key=None))
    if code == 0:
        out.write("commit pyproject.toml and the signatures; `ckptlint check` then guards them\n")
    return code


# -- from proposals to candidates ------------------------------------------------------------


def survey_of(found: Discovery, table: dict[str, Any],
              commented: frozenset[str] = frozenset()) -> Survey:
    """Candidates for the proposals pyproject.toml does not register yet, uniquely named."""
    registered = [m for m in table.get("models", []) if isinstance(m, dict)]
    targets = {m.get("target") for m in registered} | commented
    fresh = [p for p in found.proposals if p.target not in targets]
    names = unique_names([_base_name(p) for p in fresh], [_module_of(p) for p in fresh],
                         {str(m.get("name")) for m in registered})
    candidates = tuple(_candidate(p, name) for p, name in zip(fresh, names))
    known = tuple(p.target for p in found.proposals if p.target in targets)
    return Survey(candidates, known, found.unresolved, found.files)


def _candidate(proposal: Proposal, name: str) -> Candidate:
    configs = dict(proposal.configs)
    required = proposal.required
    return Candidate(name=name, target=proposal.target, file=proposal.file, line=proposal.line,
                     kwargs=tuple((a, f'{{ _target_ = "{configs[a]}" }}') for a in required
                                  if a in configs),
                     missing=tuple(a for a in required if a not in configs),
                     unknown_init=proposal.params is None, main=proposal.main,
                     role=proposal.role)


def _base_name(proposal: Proposal) -> str:
    qualname = proposal.target.partition(":")[2]
    if proposal.kind == "factory":
        return _FACTORY_PREFIX.sub("", qualname)
    return "_".join(snake(part) for part in qualname.split("."))


def _module_of(proposal: Proposal) -> str:
    return proposal.target.partition(":")[0].rpartition(".")[2]


def snake(name: str) -> str:
    """snake_case that keeps acronyms whole: CaiT -> cait, LLaMAMoE -> llama_moe, ViViT ->
    vivit, SigLIPViT -> siglip_vit, XTransformer -> x_transformer, UNet2DModel -> unet2d_model.

    A capital with three or more lowercase letters starts a word (Transformer); a bare capital
    stays in the acronym it follows and closes it (Cai|T, Vi|T); a capital with one or two
    lowercase letters starts a word after a real word, after a closed acronym (ViT|Det,
    LLaMA|MoE) or after two lowercase letters (Two|Way, Max|ViT), and joins otherwise (Vi+ViT,
    U+Net)."""
    words: list[str] = []
    closed = False  # the current word ends an acronym with a bare capital (ViT, LLaMA, GPT)
    for token in _TOKEN.findall(name):
        if not token[0].isalnum():
            words.append("")
            closed = False
            continue
        if words and words[-1] and (not token[0].isupper() or _joins(words[-1], token, closed)):
            words[-1] += token  # digits and lowercase continue the word
        else:
            words.append(token)
        if token[0].isupper():
            closed = len(token) == 1 and len(words[-1]) > 1
    return "_".join(w.lower() for w in words if w)


def _joins(word: str, token: str, closed: bool) -> bool:
    """Whether the capitalised `token` continues `word` rather than starting a new one."""
    lower = len(token) - 1
    real = re.search(r"[a-z]{3}", word) is not None  # a word, not an acronym: Mobile, Encoder
    if lower >= 3:
        return False
    if lower == 0:
        return not real
    tail = re.search(r"[a-z]*$", word)
    return not (real or closed) and tail is not None and len(tail.group()) <= 1


def unique_names(names: Sequence[str], modules: Sequence[str], taken: set[str]) -> list[str]:
    """Names clashing with each other or with registered ones get their module's name:
    vit.py's ViT stays `vit`, vit_1d.py's becomes `vit_1d`, ats_vit.py's `ats_vit`."""
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    result: list[str] = []
    used = set(taken)
    for name, module in zip(names, modules):
        clash = counts[name] > 1 or name in taken
        chosen = _qualified(name, module) if clash else name
        number = 2
        while chosen in used:
            chosen = f"{_qualified(name, module)}_{number}"
            number += 1
        used.add(chosen)
        result.append(chosen)
    return result


def _qualified(name: str, module: str) -> str:
    flat, module_flat = name.replace("_", ""), module.replace("_", "")
    if flat == module_flat:
        return name
    return module if flat in module_flat else f"{module}_{name}"


# -- describing and choosing -----------------------------------------------------------------


def listed(candidates: Sequence[Candidate]) -> list[Candidate]:
    """What the numbered list shows: main models first, then wrappers and the classes a
    factory builds; parts of other models are summarised in one line."""
    first = [c for c in candidates if c.main]
    return first + [c for c in candidates if not c.main and not _is_part(c)]


def _is_part(candidate: Candidate) -> bool:
    return candidate.role.startswith(("part of", "base of", "variant of", "chosen by",
                                      "builds "))


def describe(survey: Survey, out: TextIO, numbered: bool) -> None:
    shown, parts = listed(survey.candidates), [c for c in survey.candidates if _is_part(c)]
    main = sum(c.main for c in survey.candidates)
    out.write(f"found {len(survey.candidates)} new model class(es) and factories in "
              f"{survey.files} file(s); {main} look like main models ([x]: proposed)\n")
    width = max((len(c.name) for c in shown), default=0)
    for number, c in enumerate(shown, 1):
        note = c.role or (f"needs {', '.join(c.missing)}" if c.missing else
                          "arguments unknown" if c.unknown_init else "")
        out.write(f"{number:4d} [{'x' if c.main else ' '}] {c.name:<{width}}  {c.target}"
                  + (f"  ({note})" if note else "") + "\n")
    if parts:
        names = ", ".join(c.target.partition(":")[2] for c in parts[:_SHOWN_PARTS])
        out.write(f"     {len(parts)} part(s) of other models not listed ({names}"
                  f"{', ...' if len(parts) > _SHOWN_PARTS else ''}); "
                  "`ckptlint init --select NAME` registers any of them\n")
    if survey.known:
        out.write(f"already in pyproject.toml: {', '.join(survey.known)}\n")
    if survey.unresolved:
        more = len(survey.unresolved) - _SHOWN_PARTS
        out.write(f"not proposed, a base class could not be followed to torch.nn.Module: "
                  f"{', '.join(survey.unresolved[:_SHOWN_PARTS])}"
                  f"{f' and {more} more' if more > 0 else ''}\n")


def preselected(candidates: Sequence[Candidate], out: TextIO) -> list[Candidate]:
    """The main models; those needing arguments only while their TODOs fit on a screen."""
    main = [c for c in candidates if c.main]
    waiting = [c for c in main if not c.complete]
    if sum(len(entry_lines(c)) + 1 for c in waiting) <= SCREEN_LINES:
        return main
    out.write(f"{len(waiting)} proposed model(s) need constructor arguments: more TODOs than "
              f"a screen holds, so they are not written; pick some with "
              f"`ckptlint init --select NAME...` (or run `ckptlint init` on a terminal)\n")
    return [c for c in main if c.complete]


def select(candidates: Sequence[Candidate], wanted: Sequence[str]) -> list[Candidate]:
    """`--select NAME...`: each a proposed name, a target or a class name."""
    chosen: list[Candidate] = []
    for word in wanted:
        matches = _matching(candidates, word)
        if not matches:
            raise CkptlintError(f"--select {word}: no new model of that name, target or class "
                                f"was found (see the list above)")
        if len(matches) > 1:
            raise CkptlintError(f"--select {word} matches {len(matches)} classes ("
                                f"{', '.join(c.target for c in matches)}): name one target")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def _matching(candidates: Sequence[Candidate], word: str) -> list[Candidate]:
    exact = [c for c in candidates if word in (c.name, c.target)]
    return exact or [c for c in candidates if c.target.partition(":")[2] == word]


def pick(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Ask which of the numbered candidates to register (a terminal only)."""
    shown = listed(candidates)
    while True:
        answer = _input(f"register which? Enter: the {sum(c.main for c in shown)} marked; "
                        "or numbers (1 3 5-7), names, `all`, `none`: ")
        if answer is None:
            return []
        chosen = _picked(answer, shown, candidates)
        if chosen is not None:
            return chosen
        print("  not understood: give numbers from the list, ranges like 2-5, model names, "
              "`all` or `none`")


def _picked(answer: str, shown: Sequence[Candidate],
            candidates: Sequence[Candidate]) -> list[Candidate] | None:
    words = answer.replace(",", " ").split()
    if not words:
        return [c for c in shown if c.main]
    if words in (["all"], ["none"]):
        return list(shown) if words == ["all"] else []
    chosen: list[Candidate] = []
    for word in words:
        span = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
        if span:
            low, high = int(span.group(1)), int(span.group(2) or span.group(1))
            if not 1 <= low <= high <= len(shown):
                return None
            found = list(shown[low - 1:high])
        else:
            found = _matching(candidates, word)[:1]
            if not found:
                return None
        chosen += [c for c in found if c not in chosen]
    return chosen


# -- asking for arguments ------------------------------------------------------------------


def ask_arguments(chosen: list[Candidate]) -> list[Candidate]:
    waiting = [c for c in chosen if not c.complete and not c.unknown_init]
    if len(waiting) > 1 and not _confirm(f"{len(waiting)} of them need constructor arguments; "
                                         "answer now (otherwise they get a TODO)?"):
        return chosen
    return [ask(c) if c in waiting or c.unknown_init else c for c in chosen]


def ask(candidate: Candidate) -> Candidate:
    """Ask for each required argument's value as a TOML literal; an empty answer leaves the
    entry commented out."""
    if candidate.unknown_init:
        print(f"{candidate.target} inherits its __init__ from code ckptlint could not read: "
              "its entry is left commented out for you to fill in")
        return candidate
    print(f"{candidate.target} ({candidate.file}:{candidate.line}) needs "
          f"{', '.join(candidate.missing)}; answer with TOML values (e.g. 64, \"relu\", "
          "{ _target_ = \"pkg.mod:Config\" }), or press Enter to leave it commented out")
    given: list[tuple[str, str]] = []
    for arg in candidate.missing:
        literal = _ask_literal(f"  {arg} = ")
        if literal is None:
            return candidate
        given.append((arg, literal))
    return replace(candidate, kwargs=candidate.kwargs + tuple(given), missing=())


def _ask_literal(prompt: str) -> str | None:
    while True:
        answer = _input(prompt)
        if not answer:
            return None
        try:
            tomllib.loads(f"v = {answer}")
            return answer
        except tomllib.TOMLDecodeError as exc:
            print(f"  not a TOML value ({exc}); strings need quotes, e.g. \"gelu\"")


def _input(prompt: str) -> str | None:
    try:
        return input(prompt).strip()
    except EOFError:
        return None


def _confirm(question: str) -> bool:
    answer = _input(f"{question} [Y/n] ")
    return answer is not None and answer.lower() in ("", "y", "yes")


# -- writing pyproject.toml ----------------------------------------------------------------
