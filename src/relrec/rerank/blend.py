"""Blending content similarity (and co-engagement memory) into the serving score.

The model's top ``candidate_pool`` candidates of a trigger are re-scored as

    score(t, c) = z_t(model score) + w · z_t(cos(content_t, content_c))

where ``z_t`` standardises a score over the trigger's candidate row (mean 0, standard
deviation 1), so ``w`` is scale-free: the same weight means the same trade-off whatever the
model's score scale (raw inner products, cosines, logQ-shifted logits). ``w = 0`` is the model
alone. The candidate set never grows, so the blend changes the order of what the model already
retrieves (engagement stays the gate) and costs one small batched dot product per trigger.
Candidates beyond the pool (``k`` larger than the pool) follow in the model's order, so the
top of a list never depends on ``k``.

Content vectors come from ``relrec embed`` (title + description + tags, posters); evaluation
topics never enter them. A pair where either side has no content gets the row's mean content
term (z = 0): neither a bonus nor a penalty.

The same standardised sum takes further signals (:func:`blend_terms`): ``[rank] ease_blend``
adds ``w_e · z_t(B̂[t, c])``, the EASE weight of the pair (:mod:`relrec.rerank.neighbours`) —
the model generalises, EASE memorises what is watched together.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# triggers per block: bounds the (block × pool × dim) gather of candidate content vectors
BLOCK_TRIGGERS = 256


def standardize_rows(scores: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """Per row: (x − mean) / std over the usable finite entries. Non-finite entries (−inf
    padding) stay −inf; usable=False entries and rows with no spread become 0."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    counted = finite if usable is None else finite & usable
    count = np.maximum(counted.sum(axis=1, keepdims=True), 1)
    values = np.where(counted, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    spread = np.sqrt((np.where(counted, values - mean, 0.0) ** 2).sum(axis=1, keepdims=True)
                     / count)
    standardized = np.where(counted & (spread > 1e-12),
                            (values - mean) / np.maximum(spread, 1e-12), 0.0)
    return np.where(finite, standardized, -np.inf)


def content_similarity(triggers: np.ndarray, candidates: np.ndarray, vectors: np.ndarray,
                       ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos(content_t, content_c), usable) per (trigger row, candidate column); usable is
    False where either item has no content or the candidate is padding (−1)."""
    safe = np.maximum(candidates, 0)
    similarity = np.einsum("td,tkd->tk", vectors[triggers], vectors[safe])
    usable = ok[triggers][:, None] & ok[safe] & (candidates >= 0)
    return np.where(usable, similarity, 0.0), usable


#: one signal of a blend: ``lookup(triggers, candidates) -> (values, usable)`` and its weight
Signal = tuple[Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], float]


def content_signal(vectors: np.ndarray, ok: np.ndarray) -> Callable:
    """The content cosine as a blend signal (:func:`content_similarity` over these vectors)."""
    return lambda triggers, candidates: content_similarity(triggers, candidates, vectors, ok)


def blend_terms(model_scores: np.ndarray,
                terms: list[tuple[np.ndarray, np.ndarray | None, float]]) -> np.ndarray:
    """``z(model) + Σ weight · z(signal)`` per row over ``terms`` of (signal values, usable,
    weight); each signal is standardised over its usable entries (the others add 0)."""
    blended = standardize_rows(model_scores)
    finite = np.isfinite(blended)
    for values, usable, weight in terms:
        if weight < 0:
            raise ValueError("blend weights must be >= 0")
        if weight == 0:
            continue
        usable = finite if usable is None else usable & finite
        term = np.where(finite, standardize_rows(np.where(finite, values, -np.inf), usable),
                        0.0)
        blended = np.where(finite, blended + weight * term, -np.inf)
    return blended


def blend_scores(model_scores: np.ndarray, similarity: np.ndarray, weight: float,
                 usable: np.ndarray | None = None) -> np.ndarray:
    """``z(model) + weight · z(similarity)`` per row (see the module docstring)."""
    return blend_terms(model_scores, [(similarity, usable, weight)])


def rerank_by_blend(model_scores: np.ndarray, candidates: np.ndarray, triggers: np.ndarray,
                    signals: list[Signal], k: int, pool: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row by the blended score (:func:`blend_terms` of ``signals``) over
    the first ``pool`` columns, then the remaining columns in the model's order: (scores, item
    indices)."""
    pool = candidates.shape[1] if pool is None else min(pool, candidates.shape[1])
    out_scores, out_items = [], []
    for start in range(0, len(triggers), BLOCK_TRIGGERS):
        rows = slice(start, start + BLOCK_TRIGGERS)
        terms = [(*lookup(triggers[rows], candidates[rows, :pool]), weight)
                 for lookup, weight in signals if weight != 0]
        scores, items = order_by_blend(model_scores[rows], candidates[rows], terms, k, pool)
        out_scores.append(scores)
        out_items.append(items)
    if not out_scores:
        return (np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
    return np.concatenate(out_scores), np.concatenate(out_items)


def order_by_blend(model_scores: np.ndarray, candidates: np.ndarray,
                   terms: list[tuple[np.ndarray, np.ndarray | None, float]], k: int,
                   pool: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rerank_by_blend` for signal values already looked up over the first ``pool``
    columns (``terms`` as in :func:`blend_terms`)."""
    head_items = candidates[:, :pool]
    blended = blend_terms(model_scores[:, :pool], terms)
    order = np.argsort(-blended, axis=1, kind="stable")
    scores = np.take_along_axis(blended, order, axis=1)
    items = np.take_along_axis(head_items, order, axis=1)
    if candidates.shape[1] > pool:  # beyond the pool: model order, below every blended
        tail_items = candidates[:, pool:]
        floor = np.nanmin(np.where(np.isfinite(scores), scores, np.nan), axis=1,
                          initial=0.0, keepdims=True) if scores.size else np.zeros((0, 1))
        tail = floor - 1.0 - np.arange(tail_items.shape[1])[None, :]
        tail = np.where(tail_items >= 0, tail, -np.inf)
        scores = np.concatenate([scores, tail], axis=1)
        items = np.concatenate([items, tail_items], axis=1)
    return scores[:, :k].astype(np.float32), items[:, :k]
