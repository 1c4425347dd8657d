"""What check and update share: the config, the build interpreter, the builder and the cache."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ckptlint.build import interpreter
from ckptlint.config import find_pyproject, parse_config
from ckptlint.core.inputs import digest
from ckptlint.core.record import record, replace
from ckptlint.core.records import Config

if TYPE_CHECKING:
    from ckptlint.run.cache import Cache


@record
class Setup:
    config: Config
    builder: object
    cache: Cache | None
    # pyproject.toml's digest, taken before it was read (what a replay record may rest on);
    # None without the cache, which records nothing
    pyproject_digest: str | None = None


def prepare(args: argparse.Namespace, use_cache: bool) -> Setup:
    pyproject = find_pyproject(Path.cwd().resolve())
    before = digest(str(pyproject)) if use_cache else None
    config = parse_config(pyproject)
    if getattr(args, "state_dict_key", None):  # the command line wins over every entry
        config = replace(config, models=tuple(replace(m, state_dict_key=args.state_dict_key)
                                              for m in config.models))
    chosen = interpreter.choose(config)
    jobs = args.jobs or os.cpu_count() or 1
    store = None
    if use_cache:
        from ckptlint.run.cache import Cache

        store = Cache(config, chosen.fingerprint())
    return Setup(config, interpreter.builder(chosen, jobs), store, before)
