"""Why an item is related, vectorised over (rows × k) candidates: training co-engagement and
text similarity (shared topics are bit masks in :mod:`relrec.serve.render`). Display only:
reasons never rank anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def load_pair_counts(path: Path, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted pair keys low * n + high, summed counts) of the training pairs; co-engagement
    is symmetric for explanations, so both directions count. Empty without the file."""
    if not path.is_file():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    frame = pd.read_parquet(path)
    count_column = "pair_count" if "pair_count" in frame else "count"
    n = np.int64(n_items)
    t = frame["trigger_index"].to_numpy(np.int64)
    c = frame["candidate_index"].to_numpy(np.int64)
    counts = frame[count_column].to_numpy(np.int64)
    keys = np.minimum(t, c) * n + np.maximum(t, c)
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    unique, starts = np.unique(keys, return_index=True)
    return unique, (np.add.reduceat(counts, starts) if len(counts) else counts)


def co_engagement(pair_keys: np.ndarray, pair_counts: np.ndarray, n_items: int,
                  triggers: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(rows, k) summed training co-engagement of each candidate with its row's triggers
    (``triggers`` (rows, t); -1 pads and run-time items count 0)."""
    rows, k = indices.shape
    if not len(pair_keys) or triggers.shape[1] == 0:
        return np.zeros((rows, k), np.int64)
    a = indices[:, :, None]
    b = triggers[:, None, :]
    valid = (a >= 0) & (a < n_items) & (b >= 0) & (b < n_items)
    keys = np.minimum(a, b) * np.int64(n_items) + np.maximum(a, b)
    position = np.minimum(np.searchsorted(pair_keys, keys), len(pair_keys) - 1)
    found = valid & (pair_keys[position] == keys)
    return np.where(found, pair_counts[position], 0).sum(axis=2)


def text_similarity(candidates, trigger_rows, trigger_text: np.ndarray | None, shape
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, k) best text cosine of each candidate with its row's triggers and the new
    item's text, and whether any pair had text on both sides. ``candidates`` /
    ``trigger_rows``: (vectors, ok) shaped (rows, k|t, dim) / (rows, k|t), or None."""
    best = np.full(shape, -np.inf, np.float32)
    if candidates is None:
        return best, np.zeros(shape, bool)
    vectors, ok = candidates
    dim = vectors.shape[-1]
    if trigger_rows is not None:
        trigger_vectors, trigger_ok = trigger_rows
        similarity = np.einsum("rkd,rtd->rkt", vectors, trigger_vectors)
        similarity[~(ok[:, :, None] & trigger_ok[:, None, :])] = -np.inf
        best = similarity.max(axis=2)
    if trigger_text is not None and len(trigger_text) == dim:
        best = np.maximum(best, np.where(ok, vectors @ np.asarray(trigger_text, np.float32),
                                         -np.inf))
    return best, np.isfinite(best)
