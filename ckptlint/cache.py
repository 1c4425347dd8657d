"""The no-op cache: a model whose inputs are unchanged since a clean check is not rebuilt.

An entry is keyed by the model's config entry, its committed signature, the ckptlint, torch and
Python versions, and holds the digest of every project file its build imported or read
(`replay.digest`: the content, or size and mtime for large files).
Only clean results are stored, so a failing state is always recomputed and printed. A corrupt or
foreign entry is ignored (and later overwritten), never trusted. Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ckptlint import __version__
from ckptlint.ftypes import BuildResult, Config, ModelReport, ModelSpec
from ckptlint.atomic import write_atomic
from ckptlint.replay import digest

DIRECTORY = ".ckptlint_cache"
ENV_DISABLE = "CKPTLINT_NO_CACHE"
_FORMAT = 1
_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
        "# This file is a cache directory tag created by ckptlint.\n"
        "# For information about cache directory tags see https://bford.info/cachedir/\n")


def enabled(no_cache_flag: bool) -> bool:
    return not no_cache_flag and os.environ.get(ENV_DISABLE, "") in ("", "0")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Cache:
    """Entries under `<project>/.ckptlint_cache/`, one JSON file per model."""

    def __init__(self, config: Config, environment: str):
        self.root = Path(config.root)
        self.directory = self.root / DIRECTORY / f"v{_FORMAT}"
        self.config = config
        self.environment = environment  # the build interpreter and its torch version
        self._docs: dict[str, dict] = {}  # entries read or written this run, read once

    def _key(self, spec: ModelSpec, inputs: Sequence[Path]) -> str:
        parts = {
            "ckptlint": __version__, "python": sys.version, "environment": self.environment,
            "spec": asdict(spec) | {"line": None}, "pythonpath": list(self.config.pythonpath),
            "inputs": [[str(p), digest(str(p))] for p in inputs],
        }
        return _digest(json.dumps(parts, sort_keys=True, default=str).encode())

    def files_of(self, spec: ModelSpec) -> list[str] | None:
        """The import closure recorded with a model's entry, if it has one."""
        try:
            files = self._read(spec)["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return list(files) if isinstance(files, dict) else None

    def _read(self, spec: ModelSpec) -> dict:
        if spec.name not in self._docs:
            self._docs[spec.name] = json.loads(self._entry(spec).read_text(encoding="utf-8"))
        return self._docs[spec.name]

    def _entry(self, spec: ModelSpec) -> Path:
        return self.directory / f"{spec.name}.json"

    def lookup(self, spec: ModelSpec, inputs: Sequence[Path]) -> ModelReport | None:
        """The cached clean report, if every input still hashes the same."""
        try:
            doc = self._read(spec)
            if doc["key"] != self._key(spec, inputs):
                return None
            if any(digest(str(self.root / f)) != h for f, h in doc["files"].items()):
                return None
            used = tuple((str(f), int(line)) for f, line in doc.get("used_suppressions", []))
            return ModelReport(name=spec.name, signature_file=doc["signature_file"],
                               old_parameters=doc["parameters"], new_parameters=doc["parameters"],
                               verdict="loads", used_suppressions=used)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store(self, spec: ModelSpec, inputs: Sequence[Path], report: ModelReport,
              result: BuildResult) -> None:
        if report.findings or report.notes or result.signature is None:
            return
        doc = {"key": self._key(spec, inputs), "signature_file": report.signature_file,
               "parameters": report.new_parameters,
               "files": {f: digest(str(self.root / f)) for f in result.files},
               "used_suppressions": [list(u) for u in report.used_suppressions]}
        self._prepare()
        write_atomic(self._entry(spec), json.dumps(doc, indent=1, sort_keys=True) + "\n")
        self._docs[spec.name] = doc

    def _prepare(self) -> None:
        top = self.root / DIRECTORY
        if not (top / "CACHEDIR.TAG").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(top / ".gitignore", "# created by ckptlint\n*\n")
            write_atomic(top / "CACHEDIR.TAG", _TAG)
