"""Model bundles: the files a served model is made of, hashed, versioned and snapshotted.

A bundle is the run directory's trained model (``model/weights.safetensors`` +
``model/tower_config.json``), the catalogue and statistics the index is built from
(``data/items.parquet``, ``pairs/item_stats.parquet``), the co-engagement pairs used for
explanations, the content vectors the tower reads, the trained CAViaR re-ranker
(``rerank/``, every file of :data:`relrec.related.OPTIONAL_MODEL_FOLDERS`) and the exported
related lists when present.

``model/bundle.json`` records the SHA-256 of every file and the run's training fingerprint.
Loading (see :func:`stage_bundle`):

1. every file is copied into a fresh staging folder under the server's state directory, so
   the hashes below are the hashes of exactly what is loaded, and a later change to the run
   directory (a retrain, a truncated or corrupted file) cannot reach the loaded or the last good
   bundle (a hard link would share a damaged inode);
2. the staged files are hashed and compared with ``bundle.json``. A mismatch while the training
   fingerprint is unchanged means a corrupt or truncated file: the bundle is refused — except
   for derived files that legitimately change without a retrain: optional files that appear
   after sealing (content embedded later, lists exported later) and exported lists written
   again that parse completely; those are recorded anew with a note. When the
   run was retrained (fingerprint changed) or has no ``bundle.json`` yet, the manifest is
   (re)written from the files — the bundle is *sealed*;
3. the caller loads the model from the staging folder; only if that works is the snapshot
   recorded as the last good bundle, which a restarted server falls back to when the run
   directory's bundle is refused.

Version = the first 12 hex digits of the SHA-256 over the sorted (path, hash) list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from relrec.errors import RelrecError
from relrec.related import MODEL_FILES, OPTIONAL_MODEL_FILES, OPTIONAL_MODEL_FOLDERS
from relrec.manifest import atomic_write_json, file_sha256

log = logging.getLogger("relrec.serve")

BUNDLE_MANIFEST = "model/bundle.json"
# the files a trained model is made of: one list, shared with RelatedItems.save
REQUIRED_FILES = MODEL_FILES
OPTIONAL_FILES = OPTIONAL_MODEL_FILES
OPTIONAL_FOLDERS = OPTIONAL_MODEL_FOLDERS  # every file under them is staged and hashed
PRECOMPUTED_DEFAULT = "export/related.parquet"
PRECOMPUTED_STAGED = "export/related.parquet"
# manifest.json changes on every evaluate/export; it is staged but not part of the hash
UNHASHED = {"manifest.json"}


def _complete_export(path: Path) -> bool:
    """An exported list file whose Parquet footer and columns read back (a truncated or
    overwritten file does not)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        pq.read_metadata(path)
    except Exception:  # noqa: BLE001 - any parse failure means "not a complete export"
        return False
    return {"trigger", "item", "rank", "score"} <= set(schema.names)


class BundleError(RelrecError):
    """A bundle that must not be served (missing, corrupt, truncated, unloadable)."""


@dataclass
class StagedBundle:
    source: Path            # the run directory it came from
    path: Path              # the staging folder: a loadable run directory subset
    version: str
    hashes: dict[str, str]
    sealed: bool            # bundle.json was (re)written during this load
    precomputed: Path | None
    notes: list[str] = field(default_factory=list)


def _train_fingerprint(run_dir: Path) -> str:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{run_dir}/manifest.json: unreadable ({error})") from error
    train = manifest.get("train")
    if not train:
        raise BundleError(f"{run_dir}: no trained model in the manifest; run `relrec train` first")
    # a re-ranker trained (again) after sealing is a retrain of that part: the bundle is
    # sealed anew. Without one the fingerprint is the training section's alone, as before.
    trained = {"train": train, "rerank": manifest["rerank"]} if manifest.get("rerank") else train
    return hashlib.sha256(json.dumps(trained, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def bundle_version(hashes: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}\0{hashes[name]}\n".encode())
    return digest.hexdigest()[:12]


def bundle_files(run_dir: Path, precomputed: Path | None) -> dict[str, Path]:
    """Staged relative name -> source path of every file of the bundle."""
    files: dict[str, Path] = {}
    for name in REQUIRED_FILES:
        path = run_dir / name
        if not path.is_file():
            raise BundleError(f"{run_dir}: bundle file {name} is missing")
        files[name] = path
    for name in OPTIONAL_FILES:
        if (run_dir / name).is_file():
            files[name] = run_dir / name
    for folder in OPTIONAL_FOLDERS:
        for path in sorted((run_dir / folder).rglob("*")):
            if path.is_file():
                files[path.relative_to(run_dir).as_posix()] = path
    if precomputed is not None:
        if not precomputed.is_file():
            raise BundleError(f"{precomputed}: precomputed related lists not found")
        files[PRECOMPUTED_STAGED] = precomputed
    return files


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def stage_bundle(run_dir: str | Path, state_dir: str | Path,
                 precomputed: str | Path | None = None) -> StagedBundle:
    """Snapshot and verify a run's bundle (see the module docstring); raises BundleError."""
    run_dir = Path(run_dir).resolve()
    state_dir = Path(state_dir)
    if not run_dir.is_dir():
        raise BundleError(f"{run_dir}: not a directory")
    precomputed_path = Path(precomputed) if precomputed else None
    if precomputed_path is None and (run_dir / PRECOMPUTED_DEFAULT).is_file():
        precomputed_path = run_dir / PRECOMPUTED_DEFAULT
    files = bundle_files(run_dir, precomputed_path)
    fingerprint = _train_fingerprint(run_dir)
    staging = state_dir / "staging" / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    try:
        for name, source in files.items():
            _copy(source, staging / name)
        hashes = {name: file_sha256(staging / name) for name in files if name not in UNHASHED}
        recorded = None
        manifest_path = run_dir / BUNDLE_MANIFEST
        if manifest_path.is_file():
            try:
                recorded = json.loads(manifest_path.read_text())
            except json.JSONDecodeError as error:
                raise BundleError(f"{manifest_path}: corrupt bundle manifest ({error})") from None
        sealed = False
        notes: list[str] = []
        if recorded is None or recorded.get("train_fingerprint") != fingerprint:
            reason = "no bundle manifest" if recorded is None else "the run was retrained"
            payload = {"version": bundle_version(hashes), "train_fingerprint": fingerprint,
                       "sealed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "files": hashes}
            try:
                atomic_write_json(manifest_path, payload)
            except OSError as error:  # a read-only run directory still serves
                notes.append(f"could not write {manifest_path}: {error}")
            log.info("sealed bundle %s of %s (%s)", payload["version"], run_dir, reason)
            sealed = True
        else:
            expected = recorded.get("files", {})
            # optional files that appeared after sealing (lists exported, content embedded for
            # a content blend) are new, not corrupt: hashed now, recorded below
            appeared = {name for name in hashes if name not in expected
                        and (name == PRECOMPUTED_STAGED or name in OPTIONAL_FILES)}
            for name, digest in hashes.items():
                if name in appeared:
                    continue
                if name == PRECOMPUTED_STAGED and expected.get(name) != digest \
                        and _complete_export(staging / name):
                    # lists exported again (e.g. after `relrec tune-blend`): derived data that
                    # parses completely is a re-export, not corruption
                    appeared.add(name)
                    notes.append("precomputed lists changed since sealing (re-exported)")
                    continue
                if expected.get(name) != digest:
                    raise BundleError(
                        f"{run_dir}: {name} does not match its SHA-256 in {BUNDLE_MANIFEST} "
                        f"(expected {str(expected.get(name))[:12]}, found {digest[:12]}): "
                        "corrupt or truncated file")
            missing = sorted(set(expected) - set(hashes) - {PRECOMPUTED_STAGED})
            if missing:
                raise BundleError(f"{run_dir}: bundle files missing: {', '.join(missing)}")
            updates = {name: hashes[name] for name in appeared}
            if PRECOMPUTED_STAGED in hashes and expected.get(PRECOMPUTED_STAGED) != \
                    hashes[PRECOMPUTED_STAGED]:
                updates[PRECOMPUTED_STAGED] = hashes[PRECOMPUTED_STAGED]
            if updates:
                recorded["files"] = dict(expected, **updates)
                try:
                    atomic_write_json(manifest_path, dict(recorded, version=bundle_version(
                        recorded["files"])))
                except OSError as error:
                    notes.append(f"could not write {manifest_path}: {error}")
        return StagedBundle(source=run_dir, path=staging, version=bundle_version(hashes),
                            hashes=hashes, sealed=sealed,
                            precomputed=staging / PRECOMPUTED_STAGED
                            if PRECOMPUTED_STAGED in files else None, notes=notes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


LAST_GOOD = "last_good.json"


def record_last_good(state_dir: str | Path, name: str, staged: StagedBundle, keep: int = 2) -> None:
    """Remember a loaded bundle as the last good one for ``name``; prune older snapshots."""
    state_dir = Path(state_dir)
    path = state_dir / LAST_GOOD
    try:
        records = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        records = {}
    history = [entry for entry in records.get(name, []) if entry["path"] != str(staged.path)]
    history.insert(0, {"path": str(staged.path), "version": staged.version,
                       "source": str(staged.source), "hashes": staged.hashes,
                       "precomputed": staged.precomputed is not None})
    for old in history[keep:]:
        if not any(old["path"] == entry["path"] for other, entries in records.items()
                   if other != name for entry in entries):
            shutil.rmtree(old["path"], ignore_errors=True)
    records[name] = history[:keep]
    atomic_write_json(path, records)


def last_good(state_dir: str | Path, name: str, source: Path | None = None) -> StagedBundle | None:
    """The last good snapshot for ``name`` (of run ``source``), re-verified; None if none."""
    path = Path(state_dir) / LAST_GOOD
    try:
        records = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return None
    for entry in records.get(name, []):
        if source is not None and entry["source"] != str(Path(source).resolve()):
            continue
        staging = Path(entry["path"])
        try:
            hashes = {name_: file_sha256(staging / name_) for name_ in entry["hashes"]}
        except OSError:
            continue
        if hashes != entry["hashes"]:
            log.error("last good snapshot %s is damaged; skipped", staging)
            continue
        return StagedBundle(source=Path(entry["source"]), path=staging, version=entry["version"],
                            hashes=hashes, sealed=False,
                            precomputed=staging / PRECOMPUTED_STAGED if entry["precomputed"]
                            else None)
    return None


def discard(staged: StagedBundle) -> None:
    shutil.rmtree(staged.path, ignore_errors=True)
