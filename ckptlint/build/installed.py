"""Where a loaded file comes from: the standard library, an installed distribution (keyed by its
RECORD, found through a `top_level.txt` index), or the project; worked out once per process."""

from __future__ import annotations

import os
import site
import sys
import sysconfig

from ckptlint.core import inputs


class _Places:
    """The standard library and site-packages folders of this interpreter (computed once)."""

    def __init__(self) -> None:
        paths = sysconfig.get_paths()
        self.stdlib = _variants(paths.get("stdlib"), paths.get("platstdlib"))
        sites = set(site.getsitepackages()) | {site.getusersitepackages()}
        sites |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
        self.sites = _variants(*sites)
        self.path = list(sys.path)
        self.owners = _OWNERS
        self.dist_infos = _DIST_INFOS


def _variants(*paths: str | None) -> tuple[str, ...]:
    found = set()
    for p in paths:
        if p:
            found |= {os.path.join(p, ""), os.path.join(os.path.realpath(p), "")}
    return tuple(sorted(found, key=len, reverse=True))


_PLACES: _Places | None = None


_OWNERS: dict[tuple[str, str], str | None] = {}  # (site folder, top-level name) -> RECORD


_DIST_INFOS: dict[str, list[str]] = {}


def _places() -> _Places:
    """Found again when sys.path changed (a build's `pythonpath` may add a site folder); what
    each folder's distributions own is remembered for the whole process."""
    global _PLACES
    if _PLACES is None or _PLACES.path != sys.path:
        _PLACES = _Places()
    return _PLACES


def site_of(path: str) -> str | None:
    return next((s for s in _places().sites if path.startswith(s)), None)


def installed_file(path: str) -> bool:
    return site_of(path) is not None or in_stdlib(path)


def in_stdlib(path: str) -> bool:
    places = _places()
    return any(path.startswith(s) for s in places.stdlib) and site_of(path) is None


def record_of(path: str) -> str | None:
    """The RECORD file of the distribution that installed `path` (in a site-packages folder)."""
    places = _places()
    site_dir = site_of(path)
    if site_dir is None:
        return None
    top = path[len(site_dir):].split(os.sep, 1)[0]
    name = top.partition(".")[0]
    if (site_dir, name) not in places.owners:
        places.owners[(site_dir, name)] = _find_owner(site_dir, top, name)
    return places.owners[(site_dir, name)]


def _find_owner(site_dir: str, top: str, name: str) -> str | None:
    infos = _places().dist_infos.setdefault(site_dir, _dist_infos(site_dir))
    wanted = name.lower().replace("-", "_")
    for info in infos:  # the usual case: the import name is the distribution's name
        if os.path.basename(info).partition("-")[0].lower().replace(".", "_") == wanted:
            return os.path.join(info, "RECORD")
    index = _TOP_LEVEL.get(site_dir)
    if index is None:  # torchgen is torch's, yaml is PyYAML's: what each one installed, once
        index = _TOP_LEVEL[site_dir] = _top_level_index(infos)
    return index.get(top) or index.get(name)


_TOP_LEVEL: dict[str, dict[str, str]] = {}


def _top_level_index(infos: list[str]) -> dict[str, str]:
    """Top-level name -> RECORD, from each distribution's top_level.txt when it has one (a few
    bytes), else from its RECORD's first path components."""
    index: dict[str, str] = {}
    for info in infos:
        record = os.path.join(info, "RECORD")
        listed = inputs.read_regular(os.path.join(info, "top_level.txt"), 1 << 20)
        if listed is not None:
            names = listed.decode("utf-8", "replace").split()
        else:
            data = inputs.read_regular(record, 64 << 20) or b""
            names = {line.partition(",")[0].split("/", 1)[0]
                     for line in data.decode("utf-8", "replace").splitlines()}
        for entry in names:
            index.setdefault(entry, record)
            index.setdefault(entry.partition(".")[0], record)
    return index


def _dist_infos(site_dir: str) -> list[str]:
    try:
        return sorted(os.path.join(site_dir, n) for n in os.listdir(site_dir)
                      if n.endswith(".dist-info"))
    except OSError:
        return []
