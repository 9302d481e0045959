"""Where item media (images, videos) may come from: one declared folder, or http(s) URLs.

An item's ``image`` / ``video`` is either

* an ``http://`` or ``https://`` URL — kept as written, handed to the browser as is and never
  fetched by relrec (``embed`` skips it, the service never downloads it); or
* a local file inside the run's *images folder* (``prepare --images``, recorded in the run
  manifest as ``inputs.images.path``). A relative path is taken under that folder; every path
  is resolved with symlinks followed before it is checked, so a symlink inside the folder that
  points outside it is refused like any path outside it.

Anything else (a path outside the folder, a local path when no folder was given, another URL
scheme such as ``file://`` or ``data:``) is refused: ``prepare`` records it in
``rejected_rows.csv`` and keeps the item without that media, ``embed`` does not read it and the
service does not serve it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_HTTP_URL = re.compile(r"^https?://[^\s/]", re.IGNORECASE)
_ANY_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^data:", re.IGNORECASE)


def is_http_url(value: Any) -> bool:
    """An ``http(s)://host...`` URL (the only URLs an item's media may be)."""
    return isinstance(value, str) and bool(_HTTP_URL.match(value.strip()))


def is_url(value: Any) -> bool:
    """Any URL-looking value (``scheme://...`` or ``data:``)."""
    return isinstance(value, str) and bool(_ANY_URL.match(value.strip()))


def resolve_folder(folder: str | Path | None) -> Path | None:
    """The folder resolved (symlinks followed), or None."""
    if folder is None or str(folder) == "":
        return None
    try:
        return Path(folder).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def inside_folder(value: Any, folder: Path | None) -> Path | None:
    """The file ``value`` names (relative: under ``folder``), resolved with symlinks followed,
    when it lies inside ``folder`` (itself resolved); else None. Never reads the file."""
    if folder is None or not isinstance(value, str) or not value or is_url(value) \
            or "\x00" in value:
        return None
    try:
        path = Path(value).expanduser()
        path = (path if path.is_absolute() else folder / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path != folder and path.is_relative_to(folder) else None


def images_folder(manifest: dict | None) -> Path | None:
    """The images folder a run was prepared with (``inputs.images.path``), resolved."""
    images = ((manifest or {}).get("inputs") or {}).get("images")
    if isinstance(images, dict):
        images = images.get("path")
    return resolve_folder(images) if isinstance(images, str) else None
