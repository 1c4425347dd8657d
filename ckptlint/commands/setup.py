"""What check and update share: the config, the build interpreter, the builder and the cache."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ckptlint import cache, interpreter
from ckptlint.config import load_config
from ckptlint.ftypes import Config


@dataclass(frozen=True)
class Setup:
    config: Config
    builder: object
    cache: cache.Cache | None


def prepare(args: argparse.Namespace, use_cache: bool) -> Setup:
    config = load_config(Path.cwd())
    if getattr(args, "state_dict_key", None):  # the command line wins over every entry
        config = replace(config, models=tuple(replace(m, state_dict_key=args.state_dict_key)
                                              for m in config.models))
    chosen = interpreter.choose(config)
    jobs = args.jobs or os.cpu_count() or 1
    store = cache.Cache(config, chosen.fingerprint()) if use_cache else None
    return Setup(config, interpreter.builder(chosen, jobs), store)
