"""Blending content similarity into the serving score (issue 3: "blending the content
similarity into the serving score").

The model's top ``candidate_pool`` candidates of a trigger are re-scored as

    score(t, c) = z_t(model score) + w · z_t(cos(content_t, content_c))

where ``z_t`` standardises a score over the trigger's candidate row (mean 0, standard
deviation 1), so ``w`` is scale-free: the same weight means the same trade-off whatever the
model's score scale (raw inner products, cosines, logQ-shifted logits). ``w = 0`` is the model
alone. The candidate set never grows, so the blend changes the order of what the model already
retrieves (engagement stays the gate) and costs one small batched dot product per trigger.

Content vectors come from ``relrec embed`` (title + description + tags, posters); evaluation
topics never enter them. Pairs where either side has no content get content similarity 0.
"""

from __future__ import annotations

import numpy as np


def standardize_rows(scores: np.ndarray) -> np.ndarray:
    """Per row: (x − mean) / std over the finite entries; −inf (padding) stays −inf and a row
    with no spread becomes 0."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    values = np.where(finite, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    spread = np.sqrt((np.where(finite, values - mean, 0.0) ** 2).sum(axis=1, keepdims=True)
                     / count)
    standardized = np.where(spread > 1e-12, (values - mean) / np.maximum(spread, 1e-12), 0.0)
    return np.where(finite, standardized, -np.inf)


def content_similarity(triggers: np.ndarray, candidates: np.ndarray, vectors: np.ndarray,
                       ok: np.ndarray) -> np.ndarray:
    """cos(content_t, content_c) for each (trigger row, candidate column); 0 where either item
    has no content or the candidate is padding (−1). ``vectors`` are unit rows."""
    safe = np.maximum(candidates, 0)
    similarity = np.einsum("td,tkd->tk", vectors[triggers], vectors[safe])
    usable = ok[triggers][:, None] & ok[safe] & (candidates >= 0)
    return np.where(usable, similarity, 0.0)


def blend_scores(model_scores: np.ndarray, similarity: np.ndarray, weight: float) -> np.ndarray:
    """``z(model) + weight · z(similarity)`` per row (see the module docstring)."""
    if weight < 0:
        raise ValueError("content blend weight must be >= 0")
    blended = standardize_rows(model_scores)
    if weight > 0:
        finite = np.isfinite(blended)
        similarity = np.where(finite, similarity, -np.inf)
        blended = np.where(finite, blended + weight * standardize_rows(similarity), -np.inf)
    return blended


def rerank_by_blend(model_scores: np.ndarray, candidates: np.ndarray, triggers: np.ndarray,
                    vectors: np.ndarray, ok: np.ndarray, weight: float, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row of ``candidates`` by the blended score: (scores, item indices)."""
    blended = blend_scores(model_scores, content_similarity(triggers, candidates, vectors, ok),
                           weight)
    order = np.argsort(-blended, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(blended, order, axis=1).astype(np.float32),
            np.take_along_axis(candidates, order, axis=1))
