"""The content vectors of a run (written by ``relrec embed``): loaded per modality, checked
against the catalogue, and fused into one vector per item."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relrec.errors import RunDirError
from relrec.run import RunData
from relrec.vectors import l2_normalize

MODALITIES = ("text", "visual")


def content_path(run_dir: Path, modality: str) -> tuple[Path, Path]:
    return run_dir / "content" / f"{modality}.npy", run_dir / "content" / f"{modality}_ok.npy"


def load_content(run: RunData, modality: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors, ok) aligned with item_index, or None when the run has none."""
    vectors_path, ok_path = content_path(run.run_dir, modality)
    if not vectors_path.exists():
        return None
    vectors = np.load(vectors_path, allow_pickle=False)
    ok = np.load(ok_path, allow_pickle=False)
    if len(vectors) != run.n_items or len(ok) != run.n_items:
        raise RunDirError(f"{vectors_path}: {len(vectors)} rows for {run.n_items} items; "
                          "run `relrec embed` again")
    return vectors.astype(np.float32), ok.astype(bool)


def required_content(run: RunData, modalities) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(vectors, ok) of each named modality, e.g. the ones a tower reads
    (``ItemTower.content_modalities``); a missing one is an error naming the file."""
    content = {}
    for modality in modalities:
        loaded = load_content(run, modality)
        if loaded is None:
            raise RunDirError(f"{run.run_dir}: the model uses {modality} content but "
                              f"content/{modality}.npy is missing; run `relrec embed`")
        content[modality] = loaded
    return content


def fused_content(run: RunData, modalities=("text", "visual")) -> tuple[np.ndarray, np.ndarray,
                                                                        list[str]]:
    """One content vector per item (the MTMH teacher, the serving blend):
    normalise(normalise(text) ⊕ normalise(visual)), and a mask of items with at least one
    modality. Missing modalities of an item are zeros."""
    parts, masks, used = [], [], []
    for modality in modalities:
        loaded = load_content(run, modality)
        if loaded is None or not loaded[1].any():
            continue
        vectors, ok = loaded
        vectors = l2_normalize(vectors)
        parts.append(np.where(ok[:, None], vectors, 0.0))
        masks.append(ok)
        used.append(modality)
    if not parts:
        raise FileNotFoundError(f"{run.run_dir}: no {'/'.join(modalities)} content vectors "
                                "(run `relrec embed`)")
    fused = l2_normalize(np.concatenate(parts, axis=1))
    return fused.astype(np.float32), np.logical_or.reduce(masks), used
