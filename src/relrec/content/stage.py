"""The ``embed`` stage: item content → RUN_DIR/content/{text,visual}.npy (+ ok masks).

Vectors come from the shared embedding cache (keyed by content hash and model), so a second
run over the same catalogue computes nothing. A modality with no data at all (no item has an
image or a video) is dropped with a note in the manifest, never an error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from relrec.config import ContentConfig
from relrec.manifest import update_manifest
from relrec.run import RunData
from relrec.content.store import content_path, load_content
from relrec.content.embed import embed_items
from relrec.data.media import images_folder, inside_folder


def ensure_content(run: RunData, modalities: list[str], config: ContentConfig, *,
                   progress: bool = True, notes: dict | None = None,
                   force: bool = False) -> dict[str, int]:
    """Make sure each modality's vectors exist in the run; returns {modality: dim} usable."""
    notes = notes if notes is not None else {}
    available: dict[str, int] = {}
    missing = []
    for modality in modalities:
        loaded = None if force else load_content(run, modality)
        if loaded is not None and loaded[1].any():
            available[modality] = loaded[0].shape[1]
        elif loaded is not None:
            notes[f"{modality}_dropped"] = "no item has usable content for this modality"
        else:
            missing.append(modality)
    if missing:
        items = run.items
        if "visual" in missing:
            items, refused = media_inside_images_folder(items, run.manifest)
            if refused:
                notes["visual_media_refused"] = (
                    f"{refused} image/video values not read: outside the run's images folder "
                    "(symlinks resolved), no images folder recorded, or a URL (never fetched)")
        computed = embed_items(items, config, modalities=tuple(missing), progress=progress)
        for modality, (vectors, ok) in computed.items():
            vectors_path, ok_path = content_path(run.run_dir, modality)
            vectors_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(vectors_path, vectors.astype(np.float32))
            np.save(ok_path, ok.astype(bool))
            summary = {"dim": int(vectors.shape[1]), "items_with_content": int(ok.sum()),
                       "items_without_content": int((~ok).sum())}
            notes[modality] = summary
            if ok.any():
                available[modality] = int(vectors.shape[1])
            else:
                notes[f"{modality}_dropped"] = "no item has usable content for this modality"
    if missing:
        manifest_content = dict(run.manifest.get("content", {}))
        manifest_content.update({m: notes.get(m) for m in missing})
        manifest_content["config"] = config.model_dump(mode="json")
        for key, value in notes.items():
            if key.endswith("_dropped"):
                manifest_content[key] = value
        run.manifest = update_manifest(run.run_dir, "content", manifest_content)
    return available


def media_inside_images_folder(items: pd.DataFrame, manifest: dict) -> tuple[pd.DataFrame, int]:
    """``items`` with every ``image`` / ``video`` that is not a file inside the run's images
    folder (``inputs.images.path``, symlinks resolved; see :mod:`relrec.data.media`) set to None —
    so ``embed`` never reads a file outside it and never fetches a URL — and how many were
    removed."""
    folder = images_folder(manifest)
    items = items.copy()
    refused = 0
    for column in ("image", "video"):
        if column not in items.columns:
            continue
        kept = []
        for value in items[column].to_numpy(dtype=object):
            if not isinstance(value, str) or not value:
                kept.append(None)
                continue
            inside = inside_folder(value, folder)
            refused += inside is None
            kept.append(None if inside is None else str(inside))
        items[column] = kept
    return items, refused


def write_content(run: RunData, modality: str, vectors: np.ndarray, ok: np.ndarray | None = None,
                  source: str = "user-provided vectors") -> None:
    """Bring your own content vectors (n_items × dim, aligned with item_index) into a run."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != run.n_items:
        raise ValueError(f"{modality} vectors must have shape ({run.n_items}, dim), "
                         f"got {vectors.shape}")
    ok = np.ones(len(vectors), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    vectors_path, ok_path = content_path(run.run_dir, modality)
    vectors_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(vectors_path, vectors)
    np.save(ok_path, ok)
    manifest_content = dict(run.manifest.get("content", {}))
    manifest_content[modality] = {"dim": int(vectors.shape[1]), "source": source,
                                  "items_with_content": int(ok.sum()),
                                  "items_without_content": int((~ok).sum())}
    run.manifest = update_manifest(run.run_dir, "content", manifest_content)
