"""Content-hash keyed embedding cache, reused across runs.

Each item's vector is stored under a key that hashes its *content* (the embedded text, or the
image/video file bytes), in one file per ``model_id``: a run over the same catalogue computes
nothing, a changed text recomputes only that item, and another model never reads these
vectors.

Storage: ``<directory>/embeddings/<model slug>-<hash of model_id>.npz`` holding ``keys``
(unicode), ``vectors`` (float32) and ``model_id``. Only successful rows (``ok=True``) are
stored: failures — a missing or corrupt file — are cheap to retry and may be transient (a
permission fixed, a file copied in later), so they are recomputed on the next call. New rows
are merged under an advisory file lock (POSIX) and written atomically (temporary file in the
same folder, then renamed: :func:`relrec.manifest.atomic_path`), so concurrent runs and a kill mid-write never leave a corrupt
file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from relrec.manifest import atomic_path

log = logging.getLogger("relrec.content")

_CHUNK = 1 << 20


def default_cache_root() -> Path:
    """``$RELREC_CACHE`` or ``~/.cache/relrec``."""
    return Path(os.environ.get("RELREC_CACHE") or Path.home() / ".cache" / "relrec").expanduser()


def content_hash_text(text: str) -> str:
    """sha256 of the UTF-8 text."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def content_hash_file(path) -> str:
    """sha256 of the file bytes (so a moved or duplicated file reuses its vector).

    A missing or unreadable file hashes to the stable key ``"missing:<path>"``.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return f"missing:{path}"
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Exclusive advisory lock (no-op where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class EmbeddingCache:
    """Per-model vector store keyed by content hash (see the module docstring)."""

    def __init__(self, directory: str | Path | None = None):
        root = Path(directory).expanduser() if directory is not None else default_cache_root()
        self.directory = root / "embeddings"

    # -- files ---------------------------------------------------------------------------------

    def path_for(self, model_id: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._-")[:60] or "model"
        digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:12]
        return self.directory / f"{slug}-{digest}.npz"

    def load(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) stored for ``model_id``; empty when none (or the file is unusable)."""
        path = self.path_for(model_id)
        empty = np.zeros(0, dtype=str), np.zeros((0, 0), dtype=np.float32)
        if not path.exists():
            return empty
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["model_id"]) != model_id:
                    log.warning("embedding cache %s belongs to another model; ignored", path)
                    return empty
                keys, vectors = data["keys"], data["vectors"].astype(np.float32, copy=False)
        except Exception as err:  # noqa: BLE001 - a damaged cache is recomputed, not fatal
            log.warning("embedding cache %s is unreadable (%s); recomputing", path, err)
            return empty
        if vectors.ndim != 2 or len(keys) != len(vectors):
            log.warning("embedding cache %s is inconsistent; recomputing", path)
            return empty
        return keys, vectors

    def _append(self, model_id: str, new_keys: list[str], new_vectors: np.ndarray) -> None:
        """Merge rows into the model's file under a lock; atomic replace."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(model_id)
        with _locked(path.with_suffix(".lock")):
            keys, vectors = self.load(model_id)  # re-read: another process may have added rows
            if len(keys) and vectors.shape[1] != new_vectors.shape[1]:
                log.warning("embedding cache %s held %d-d vectors, the model now gives %d-d; "
                            "replacing it", path, vectors.shape[1], new_vectors.shape[1])
                keys, vectors = keys[:0], np.zeros((0, new_vectors.shape[1]), np.float32)
            if len(keys):
                known = set(keys.tolist())
                fresh = [i for i, key in enumerate(new_keys) if key not in known]
                keys = np.concatenate([keys, np.asarray([new_keys[i] for i in fresh], dtype=str)])
                vectors = np.concatenate([vectors, new_vectors[fresh]])
            else:
                keys, vectors = np.asarray(new_keys, dtype=str), new_vectors
            with atomic_path(path) as temporary, open(temporary, "xb") as handle:
                np.savez(handle, keys=keys, vectors=vectors.astype(np.float32),
                         model_id=np.asarray(model_id))

    # -- main entry ----------------------------------------------------------------------------

    def get_or_compute(self, keys: list[str], model_id: str,
                       compute: Callable[[list[int]], tuple[np.ndarray, np.ndarray]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and ok mask aligned with ``keys``; only keys not cached are computed.

        ``compute(positions)`` gets the positions (into ``keys``) of the first occurrence of
        each missing key and returns ``(vectors (len(positions), dim), ok (len(positions),))``.
        New successful rows are appended to the cache. Rows with ``ok=False`` are zero.
        """
        keys = [str(key) for key in keys]
        cached_keys, cached_vectors = self.load(model_id)
        lookup = {key: row for row, key in enumerate(cached_keys.tolist())}
        first: dict[str, int] = {}
        for position, key in enumerate(keys):
            if key not in lookup and key not in first:
                first[key] = position
        missing = list(first.values())

        computed: dict[str, tuple[np.ndarray, bool]] = {}
        dim = cached_vectors.shape[1] if len(cached_keys) else 0
        if missing:
            new_vectors, new_ok = self._compute(compute, missing)
            if len(cached_keys) and cached_vectors.shape[1] != new_vectors.shape[1]:
                # the model changed its output size under the same id: the cache is stale
                log.warning("embedding cache for %s holds %d-d vectors, the model now gives "
                            "%d-d; recomputing the cached items too", model_id,
                            cached_vectors.shape[1], new_vectors.shape[1])
                stale: dict[str, int] = {}
                for position, key in enumerate(keys):
                    if key in lookup and key not in stale:
                        stale[key] = position
                if stale:
                    more_vectors, more_ok = self._compute(compute, list(stale.values()))
                    missing += list(stale.values())
                    new_vectors = np.concatenate([new_vectors, more_vectors])
                    new_ok = np.concatenate([new_ok, more_ok])
                lookup = {}
            dim = new_vectors.shape[1]
            good = np.flatnonzero(new_ok)
            if len(good):
                self._append(model_id, [keys[missing[i]] for i in good], new_vectors[good])
            for i, position in enumerate(missing):
                computed[keys[position]] = (new_vectors[i], bool(new_ok[i]))

        out = np.zeros((len(keys), dim), dtype=np.float32)
        ok = np.zeros(len(keys), dtype=bool)
        for position, key in enumerate(keys):
            row = lookup.get(key)
            if row is not None:
                out[position] = cached_vectors[row]
                ok[position] = True
            else:
                out[position], ok[position] = computed[key]
        return out, ok

    @staticmethod
    def _compute(compute, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        vectors, ok = compute(list(positions))
        vectors = np.array(vectors, dtype=np.float32)
        ok = np.array(ok, dtype=bool).reshape(-1)
        if vectors.ndim != 2 or len(vectors) != len(positions) or len(ok) != len(positions):
            raise ValueError(f"compute returned {vectors.shape} vectors and {ok.shape} ok "
                             f"flags for {len(positions)} positions")
        ok &= np.isfinite(vectors).all(axis=1)
        vectors[~ok] = 0.0
        return vectors, ok
