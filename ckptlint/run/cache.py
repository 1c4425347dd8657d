"""The no-op cache: a model whose inputs are unchanged since a clean check is not rebuilt.

An entry is keyed by the model's config entry, its signature and checkpoint files, the
ckptlint, torch and Python versions and the build interpreter, and holds every input its build
used (`ckptlint.core.inputs`: sources, data files, distributions, environment variables, existence
checks, folder listings), each digested when the build first read it.
Assumptions (tests/test_trust_cache.py tries to break each):
- the key's file digests are taken before the files are read (`key` runs first), and the
  entry's before the build read them, so an edit made during the run is never stored as clean;
- only clean results are stored, so a failing state is always recomputed and printed;
- an entry that is missing, foreign, damaged, a symlink, a FIFO or a directory is ignored and
  later overwritten, never trusted; a cache that cannot be written is a warning, not a failure.
Never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ckptlint.core.atomic import write_atomic
from ckptlint.core.constants import CACHE_DIRECTORY, CACHE_VERSION, VERSION as __version__
from ckptlint.core.inputs import digest, load_json, seal, unsealed
from ckptlint.core.kinds import Verdict
from ckptlint.core.record import asdict
from ckptlint.core.records import BuildResult, Config, ModelReport, ModelSpec
from ckptlint.core.urls import RemotePath, has_secrets
from ckptlint.run.replay import cache_enabled, verified

DIRECTORY = CACHE_DIRECTORY
_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
        "# This file is a cache directory tag created by ckptlint.\n"
        "# For information about cache directory tags see https://bford.info/cachedir/\n")


def enabled(no_cache_flag: bool) -> bool:
    return cache_enabled(no_cache_flag)


class Cache:
    """Entries under `<project>/.ckptlint_cache/v2/`, one JSON file per model."""

    def __init__(self, config: Config, environment: str):
        self.root = Path(config.root)
        self.directory = self.root / CACHE_DIRECTORY / CACHE_VERSION
        self.config = config
        self.environment = environment  # the build interpreter and its torch version
        self._docs: dict[str, dict] = {}  # entries read or written this run, read once
        self._memo: dict = {}  # digests taken this run, shared by every entry's check
        self.problem = ""  # why the cache could not be used, for one warning
        self.read_first: dict[str, dict[str, str | None]] = {}  # key inputs, for the replay
        self.remote_first: dict[str, dict[str, str | None]] = {}  # key URLs -> identities

    def key(self, spec: ModelSpec, inputs: Sequence[Path | RemotePath]) -> str | None:
        """Taken before the signature and checkpoint files are read, and kept for `store`;
        None when one of them cannot be digested (missing, a FIFO): nothing is cached then.

        A URL is keyed on what its server says identifies the version (one metadata request,
        `remote.identity`); one that names no version, cannot be asked, or carries secrets
        (which must not be written into the cache) is never cached."""
        urls = [p.url for p in inputs if isinstance(p, RemotePath)]
        if any(has_secrets(u) for u in urls):
            return None
        remote = _remote_identities(urls)
        files = {str(p): digest(str(p)) for p in inputs if not isinstance(p, RemotePath)}
        if None in files.values() or None in remote.values():
            return None
        self.read_first[spec.name] = {_name(p, self.root): d for p, d in files.items()}
        self.remote_first[spec.name] = dict(remote)
        parts = {
            "ckptlint": __version__, "python": sys.version, "environment": self.environment,
            "spec": asdict(spec) | {"line": None}, "pythonpath": list(self.config.pythonpath),
            "timeout": self.config.build_timeout,
            "inputs": sorted(files.items()), "remote": sorted(remote.items()),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def _read(self, spec: ModelSpec) -> dict | None:
        if spec.name not in self._docs:
            doc = unsealed(load_json(str(self._entry(spec)))) if self._usable() else None
            self._docs[spec.name] = doc or {}
        return self._docs[spec.name] or None

    def _entry(self, spec: ModelSpec) -> Path:
        return self.directory / f"{spec.name}.json"

    def lookup(self, spec: ModelSpec, key: str) -> ModelReport | None:
        """The cached clean report, if its key matches and every input still reads the same."""
        doc = self._read(spec)
        try:
            if doc is None or doc["key"] != key or not verified(doc["inputs"], str(self.root),
                                                                 self._memo):
                return None
            used = tuple((str(f), int(line)) for f, line in doc.get("used_suppressions", []))
            notes = doc.get("notes", [])
            if not all(isinstance(n, str) for n in notes):
                return None
            return ModelReport(name=spec.name, signature_file=str(doc["signature_file"]),
                               old_parameters=doc["parameters"], new_parameters=doc["parameters"],
                               verdict=Verdict.LOADS, notes=tuple(notes), used_suppressions=used)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def inputs_of(self, spec: ModelSpec) -> dict | None:
        """Everything a model's clean result this run rests on: its entry's inputs and the key's
        files (after a lookup that hit, or a store)."""
        doc = self._read(spec)
        inputs = doc.get("inputs") if doc else None
        if not isinstance(inputs, dict) or spec.name not in self.read_first:
            return None
        return {**inputs, "files": {**inputs.get("files", {}), **self.read_first[spec.name]},
                "remote": {**inputs.get("remote", {}), **self.remote_first[spec.name]}}

    def files_of(self, spec: ModelSpec) -> list[str] | None:
        """The project files recorded with a model's entry, if it has one."""
        inputs = self.inputs_of(spec)
        files = inputs.get("files") if inputs else None
        if not isinstance(files, dict):
            return None
        return [f for f in files if isinstance(f, str) and not os.path.isabs(f)]

    def store(self, spec: ModelSpec, key: str, report: ModelReport,
              results: Sequence[BuildResult],
              remote: Mapping[str, str | None] | None = None) -> None:
        """Keep a clean result whose every build recorded stable inputs. `remote` holds the
        identity of every remote file its checkpoints were read from (a sharded index's
        shards too), each re-validated by `lookup` and by the replay."""
        from ckptlint.core.inputs import merge

        # a clean report's notes (how a sharded folder or an adapter was read) come from the
        # inputs the key covers: kept with it and said again on a hit, as a cold run says them
        if report.findings or any(r.signature is None for r in results):
            return
        inputs = merge(r.inputs for r in results) if all(r.inputs for r in results) else None
        remote = dict(remote or {})
        if None in remote.values() or any(has_secrets(u) for u in remote):
            inputs = None  # a file that cannot be re-validated, or a URL that must not be stored
        if inputs is None:
            self._docs[spec.name] = {}
            return
        if remote:
            inputs = {**inputs, "remote": {**inputs.get("remote", {}), **remote}}
        doc = {"key": key, "signature_file": report.signature_file,
               "parameters": report.new_parameters, "inputs": inputs,
               "notes": list(report.notes),
               "used_suppressions": [list(u) for u in report.used_suppressions]}
        doc = seal(doc)
        if self._write(self._entry(spec), json.dumps(doc, indent=1, sort_keys=True) + "\n"):
            self._docs[spec.name] = doc

    def _usable(self) -> bool:
        """The cache folders are real folders of this project (or absent), never symlinks
        that would send reads and writes elsewhere."""
        for folder in (self.root / CACHE_DIRECTORY, self.directory):
            try:
                mode = os.lstat(folder).st_mode
            except FileNotFoundError:
                return True
            except OSError as exc:
                return self._unusable(folder, exc.strerror or "unreadable")
            if not stat.S_ISDIR(mode):
                return self._unusable(folder, "it is not a folder")
        return True

    def _unusable(self, folder: Path, why: str) -> bool:
        self.problem = self.problem or (f"{folder.relative_to(self.root)} cannot be used as the "
                                        f"cache ({why}); checked without it")
        return False

    def _write(self, path: Path, text: str) -> bool:
        if not self._usable():
            return False
        top = self.root / CACHE_DIRECTORY
        try:
            if not (top / "CACHEDIR.TAG").exists():
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(top / ".gitignore", "# created by ckptlint\n*\n")
                write_atomic(top / "CACHEDIR.TAG", _TAG)
            write_atomic(path, text)
        except OSError as exc:
            self.problem = self.problem or (f"cannot write the cache in {CACHE_DIRECTORY}/ "
                                            f"({exc.strerror or type(exc).__name__}); checked "
                                            "without it")
            return False
        return True

    def writable(self) -> bool:
        """Whether the replay record may be written beside the entries."""
        return not self.problem and self._usable()



def _remote_identities(urls: Sequence[str]) -> dict[str, str | None]:
    if not urls:
        return {}
    from ckptlint.readers import remote

    return remote.identities(urls)


def _name(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (OSError, ValueError):
        return os.path.abspath(path)
