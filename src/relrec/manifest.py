"""The run manifest: config, input hashes, row counts, rejected counts, metrics, versions.

Every number a report shows is read from a manifest; writes are atomic (temp file + rename).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import secrets
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relrec.errors import RunDirError

MANIFEST_NAME = "manifest.json"


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for a writer that wants a file name (safetensors
    ``save_file``, a ``ParquetWriter``, ``np.savez``, ``faiss.write_index``): renamed onto
    ``path`` when the block succeeds, removed when it raises, so readers see the old file or
    the whole new one. The name is unique per call (``.<name>.<pid>.<random><suffix>``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=False, default=str).encode())


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit relrec runs from (``+dirty`` when its checkout has uncommitted changes),
    so that every number in a manifest names the code that produced it; None outside git."""
    package = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(package), "status", "--porcelain",
                                "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def library_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version(), "machine": platform.machine(),
                "platform": platform.platform()}
    commit = source_commit()
    if commit:
        versions["relrec_commit"] = commit
    for name in ("relrec", "torch", "numpy", "pandas", "pyarrow", "duckdb", "faiss-cpu",
                 "scipy", "safetensors", "sentence-transformers"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def read_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / MANIFEST_NAME
    if not path.exists():
        raise RunDirError(f"{run_dir}: no {MANIFEST_NAME}; run `relrec prepare` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: corrupt manifest ({error})") from error


def update_manifest(run_dir: str | Path, section: str, payload: Any) -> dict:
    """Replace one top-level section of the manifest and stamp the update time."""
    path = Path(run_dir) / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[section] = payload
    manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["versions"] = library_versions()
    atomic_write_json(path, manifest)
    return manifest
