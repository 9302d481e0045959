"""The server's state folder: one server at a time, no orphaned staging, persisted admin state.

The state folder (default ``RUN_DIR/serve_state``) holds the staged bundle snapshots
(``staging/``), the record of the last good ones (``last_good.json``), serve-side caches and
what the admin endpoints changed (``admin_state.json``: items added at run time, availability
marks). It belongs to one server process:

* :func:`lock_state_dir` takes an exclusive ``fcntl.flock`` on ``serve.lock`` for the process'
  lifetime; a second server on the same folder gets :class:`StateDirLocked` before it touches
  anything (the CLI prints it as one line and exits 2). The lock is per process: services
  built again in the same process (tests, an in-process restart) share it;
* :func:`clean_orphaned_staging` removes staging folders no ``last_good.json`` entry refers to
  (a server killed during a reload leaves its half-staged copy behind); it runs once, when the
  lock is first taken;
* :func:`load_admin_state` / :func:`save_admin_state` read and atomically write the admin
  state, which the service re-applies at start and after every reload.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from relrec.errors import RelrecError
from relrec.manifest import atomic_write_json
from relrec.serve.bundle import LAST_GOOD

log = logging.getLogger("relrec.serve")

LOCK_FILE = "serve.lock"
ADMIN_STATE = "admin_state.json"
STAGING = "staging"  # see relrec.serve.bundle.stage_bundle

_held: dict[str, object] = {}  # resolved state folder -> the open, locked lock file


class StateDirError(RelrecError):
    """The state folder cannot be used (locked by another server, unreadable admin state)."""


class StateDirLocked(StateDirError):
    """Another process serves from this state folder."""


def lock_state_dir(state_dir: str | Path) -> bool:
    """Take the exclusive lock on ``state_dir`` for this process' lifetime.

    Returns True when this call took it (the first time in this process), False when the
    process already holds it; raises :class:`StateDirLocked` when another process does."""
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        key = str(state_dir.resolve())
        if key in _held:
            return False
        descriptor = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StateDirError(f"state folder {state_dir}: cannot be used ({error})") from None
    handle = os.fdopen(descriptor, "r+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = handle.read().strip()
        handle.close()
        raise StateDirLocked(
            f"state folder {state_dir} is in use by another relrec serve"
            f"{f' (pid {holder})' if holder.isdigit() else ''}: give this server its own "
            "--state-dir (or stop the other one)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[key] = handle  # never closed: the lock lasts as long as the process
    return True


def _referenced_snapshots(state_dir: Path) -> set[Path] | None:
    path = state_dir / LAST_GOOD
    if not path.is_file():
        return set()
    try:
        records = json.loads(path.read_text())
        return {Path(entry["path"]).resolve() for entries in records.values()
                for entry in entries}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("%s unreadable (%s): staging folders left as they are", path, error)
        return None


def clean_orphaned_staging(state_dir: str | Path) -> list[Path]:
    """Delete staging folders that no last-good record refers to; returns them."""
    state_dir = Path(state_dir)
    staging = state_dir / STAGING
    if not staging.is_dir():
        return []
    referenced = _referenced_snapshots(state_dir)
    if referenced is None:
        return []
    removed = []
    for child in sorted(staging.iterdir()):
        if child.is_dir() and not child.is_symlink() and child.resolve() not in referenced:
            size = sum(p.stat().st_size for p in child.rglob("*") if p.is_file())
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
            log.info("removed orphaned staging folder %s (%.1f MB)", child, size / 1e6)
    return removed


def load_admin_state(state_dir: str | Path) -> tuple[tuple[dict, ...], frozenset[str]]:
    """(added item records, unavailable ids) persisted by the admin endpoints."""
    path = Path(state_dir) / ADMIN_STATE
    if not path.is_file():
        return (), frozenset()
    try:
        payload = json.loads(path.read_text())
        added = tuple(dict(record) for record in payload.get("added", []))
        if not all(isinstance(r.get("item_id"), str) for r in added):
            raise ValueError("an added item without a string item_id")
        unavailable = frozenset(str(item_id) for item_id in payload.get("unavailable", []))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise StateDirError(f"{path}: unreadable admin state ({error}); fix or delete it "
                            "(it holds the items added at run time and availability marks)"
                            ) from None
    return added, unavailable


def save_admin_state(state_dir: str | Path, added, unavailable) -> Path:
    """Write the admin state atomically (temp file + fsync + rename)."""
    path = Path(state_dir) / ADMIN_STATE
    atomic_write_json(path, {"relrec_admin_state": 1, "added": list(added),
                             "unavailable": sorted(unavailable)})
    return path
