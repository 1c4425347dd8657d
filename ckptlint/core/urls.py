"""Checkpoint locations that are URLs (`s3://`, `gs://`, `https://`, `hf://`): how they are
recognised, named in messages and walked like paths. Standard library only.

A URL may carry secrets (`user:password@`, a presigned query string): the full URL is kept
only to make requests; everything shown or stored uses `shown`, which leaves them out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from ckptlint.core.record import record

# `scheme://` as fsspec's protocols spell it; a Windows path (`C:\x`) has no `//`
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str | os.PathLike[str]) -> bool:
    """A remote location: `scheme://...` other than `file://` (which is a local path)."""
    return isinstance(text, (str, RemotePath)) and bool(_SCHEME.match(str(text))) \
        and not str(text).lower().startswith("file://")


def shown(url: str) -> str:
    """The URL without what may be a secret: no user or password, no query, no fragment."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def has_secrets(url: str) -> bool:
    """Whether `shown` leaves part of the URL out: such a URL is never written to disk."""
    parts = urlsplit(url)
    return bool(parts.username or parts.password or parts.query or parts.fragment)


def scrub(text: str, url: str) -> str:
    """Text that may quote `url` (a library's error message) with its secrets taken out."""
    parts = urlsplit(url)
    text = text.replace(url, shown(url))
    for secret in (parts.password, parts.query, parts.username):
        if secret:
            text = text.replace(secret, "…")
    return text


@record(order=True)
class RemotePath:
    """A remote file or folder, with the few `Path` operations the readers use.

    `str()` is the URL as shown in messages (`shown`); `url` is the full one, for requests
    only. No `__fspath__`: nothing may hand it to `os` by mistake.
    """

    url: str

    def __str__(self) -> str:
        return shown(self.url)

    @property
    def _path(self) -> str:
        return urlsplit(self.url).path

    @property
    def name(self) -> str:
        return self._path.rstrip("/").rpartition("/")[2]

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rindex("."):] if "." in name.strip(".") else ""

    @property
    def parent(self) -> RemotePath:
        # siblings are addressed without the query: a presigned query signs one object only
        parts = urlsplit(self.url)
        folder = parts.path.rstrip("/").rpartition("/")[0]
        return RemotePath(urlunsplit((parts.scheme, parts.netloc, folder, "", "")))

    def __truediv__(self, name: str) -> RemotePath:
        parts = urlsplit(self.url)
        path = parts.path.rstrip("/") + "/" + name
        return RemotePath(urlunsplit((parts.scheme, parts.netloc, path, "", "")))


def location(text: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
             ) -> Path | RemotePath:
    """A checkpoint location as written in the config or on the command line: a URL stays a
    URL, `file://` becomes its local path, anything else is a path (relative to `root`)."""
    if isinstance(text, RemotePath):
        return text
    if is_url(text):
        return RemotePath(str(text))
    raw = str(text)
    if raw.lower().startswith("file://"):
        raw = unquote(urlsplit(raw).path)
    return Path(root) / raw if root is not None else Path(raw)
