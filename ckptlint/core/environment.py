"""The Python environments a run may build in, read without importing anything heavy: their
site-packages folders and installed torch versions. Standard library only (the replay and the
builders both need it)."""

from __future__ import annotations

import os
from typing import Iterable


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" \
        else os.path.join(venv, "bin", "python")


def torch_dists(places: Iterable[str]) -> list[str]:
    """The `torch-<version>.dist-info` folders of these places, place by place (sorted within
    one): what is installed, without importing torch or importlib.metadata."""
    found = []
    for place in places:
        try:
            found += sorted(name for name in os.listdir(place)
                            if name.startswith("torch-") and name.endswith(".dist-info"))
        except OSError:
            continue
    return found


def site_packages(prefix: str) -> list[str]:
    """The site-packages folders of the Python environment at `prefix` (POSIX or Windows)."""
    lib = os.path.join(prefix, "lib")
    try:
        versions = sorted(v for v in os.listdir(lib) if v.startswith("python"))
    except OSError:
        versions = []
    candidates = [os.path.join(lib, v, "site-packages") for v in versions]
    candidates.append(os.path.join(prefix, "Lib", "site-packages"))
    return [p for p in candidates if os.path.isdir(p)]
