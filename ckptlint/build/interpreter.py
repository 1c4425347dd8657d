"""Which Python builds the models, and how: in this process, or in worker processes.

Order: the `python` key of [tool.ckptlint], the CKPTLINT_PYTHON environment variable, the
project's `.venv` or `venv`, and finally the interpreter running ckptlint. A pre-commit hook's
isolated environment has no torch and no user code; the project's own interpreter has both.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Sequence

from ckptlint.core.constants import ENV_PYTHON, VENVS
from ckptlint.core.environment import site_packages, torch_dists, venv_python
from ckptlint.core.errors import CkptlintError
from ckptlint.core.record import record
from ckptlint.core.records import BuildResult, Config, ModelSpec, Signature



@record
class Interpreter:
    python: str
    reason: str
    external: bool

    def fingerprint(self) -> str:
        """What identifies the build environment for the cache, without importing torch."""
        prefix = sys.prefix if not self.external else str(Path(self.python).parent.parent)
        return f"{prefix} {os.path.realpath(self.python)} torch={torch_version(self)}"


def _bin(venv: Path) -> Path:
    return Path(venv_python(str(venv)))


def choose(config: Config) -> Interpreter:
    root = Path(config.root)
    if config.python:
        path = root / Path(config.python).expanduser()
        return _checked(path, f"tool.ckptlint.python = {config.python!r} in pyproject.toml")
    if os.environ.get(ENV_PYTHON):
        return _checked(Path(os.environ[ENV_PYTHON]), f"{ENV_PYTHON}={os.environ[ENV_PYTHON]}")
    for name in VENVS:
        venv = root / name
        if _bin(venv).exists() and not _is_current(venv):
            return Interpreter(str(_bin(venv)), f"the project's {name}", True)
    return Interpreter(sys.executable, "this interpreter", False)


def _is_current(venv: Path) -> bool:
    try:
        return Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        return False


def _checked(path: Path, source: str) -> Interpreter:
    if path.is_dir():  # a virtualenv directory
        path = _bin(path)
    if not path.exists():
        raise CkptlintError(f"{source} names no Python ({path} does not exist); point it at the "
                            "Python of the environment that has torch and your models")
    return Interpreter(str(path), source, not _is_current(path.parent.parent))


def torch_version(interpreter: Interpreter) -> str:
    """The installed torch's version from its dist-info folder name (importlib.metadata and
    torch itself are both too slow to import for a cached run)."""
    if interpreter.external:
        places = site_packages(str(Path(interpreter.python).parent.parent))
    else:
        places = [p for p in sys.path if p]
    for place in places:
        found = torch_dists([place])
        if found:
            return found[-1].split("-")[1]
    return "none"


def builder(interpreter: Interpreter, jobs: int):  # -> engine.Builder
    """Children forked from this interpreter; the project's interpreter through a worker."""
    if not interpreter.external:
        return partial(in_process, processes=jobs)
    from ckptlint.build.worker import build_in_worker

    return partial(build_in_worker, interpreter.python, jobs)


def in_process(specs: Sequence[ModelSpec], config: Config,
               references: Sequence[Signature | None], processes: int = 1) -> list[BuildResult]:
    """Build in children forked from this process (`ckptlint.build.isolate`)."""
    # torch is imported only when something is built
    from ckptlint.build.isolate import build_isolated

    return build_isolated(specs, config, references, processes)
