"""Semantic pseudo-labels (paper eq. 3): ``I(sem) = 1`` when ``cos(text_t, text_c) >= τ``.

The text vectors come from title + description + tags only (never the evaluation topics), so
the labels carry no evaluation information.

Threshold rules (:func:`choose_semantic_threshold`):

* ``"quantile"`` — τ is the ``q``-quantile of the cosine over the co-engaged training pairs
  (pass each pair once, or repeated by its count to weight by engagement): with ``q = 0.5``
  half of the co-engaged pairs are labelled semantically related.
* ``"random-baseline"`` — τ is the 95th percentile of the cosine between *random* item pairs,
  so ``I(sem)=1`` means "more similar than 95% of random pairs"; it does not depend on how
  related the co-engaged pairs happen to be.
"""

from __future__ import annotations

import numpy as np

RULES = ("quantile", "random-baseline")
RANDOM_BASELINE_PERCENTILE = 95.0


def pair_cosine(vectors: np.ndarray, triggers: np.ndarray, candidates: np.ndarray,
                chunk: int = 1_000_000) -> np.ndarray:
    """Cosine (dot product of the L2-normalised rows) for each (trigger, candidate) pair,
    float32.

    Computed in chunks of ``chunk`` pairs so memory stays bounded on large pair tables.
    Zero rows (items without content) give 0.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    # user-provided vectors (relrec.content.stage.write_content) need not be unit length
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    triggers = np.asarray(triggers, dtype=np.int64).reshape(-1)
    candidates = np.asarray(candidates, dtype=np.int64).reshape(-1)
    if triggers.shape != candidates.shape:
        raise ValueError(f"{len(triggers)} triggers but {len(candidates)} candidates")
    chunk = max(1, int(chunk))
    out = np.empty(len(triggers), dtype=np.float32)
    for start in range(0, len(triggers), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", vectors[triggers[start:stop]],
                                    vectors[candidates[start:stop]])
    return out


def _finite(scores, what: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        raise ValueError(f"no {what} scores to choose a semantic threshold from")
    return scores


def choose_semantic_threshold(pair_scores: np.ndarray, rule: str = "quantile",
                              quantile: float = 0.5,
                              random_pair_scores: np.ndarray | None = None
                              ) -> tuple[float, str]:
    """``(threshold, description)``; the description is recorded in the manifest.

    ``rule="quantile"``: the ``quantile`` of ``pair_scores`` (co-engaged training pairs).
    ``rule="random-baseline"``: the 95th percentile of ``random_pair_scores`` (cosine between
    random item pairs); ``pair_scores`` then only feeds the description (share labelled 1).
    """
    if rule == "quantile":
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {quantile}")
        scores = _finite(pair_scores, "co-engaged pair")
        threshold = float(np.quantile(scores, quantile))
        return threshold, (f"quantile rule: the {quantile:g}-quantile of text cosine over "
                           f"{len(scores)} co-engaged training pairs = {threshold:.4f}")
    if rule == "random-baseline":
        if random_pair_scores is None:
            raise ValueError("rule 'random-baseline' needs random_pair_scores (cosine between "
                             "random item pairs)")
        randoms = _finite(random_pair_scores, "random pair")
        threshold = float(np.percentile(randoms, RANDOM_BASELINE_PERCENTILE))
        description = (f"random-baseline rule: the {RANDOM_BASELINE_PERCENTILE:g}th percentile "
                       f"of text cosine over {len(randoms)} random item pairs = {threshold:.4f} "
                       f"(I(sem)=1: more similar than {RANDOM_BASELINE_PERCENTILE:g}% of random "
                       "pairs)")
        pairs = np.asarray(pair_scores, dtype=np.float64).reshape(-1) \
            if pair_scores is not None else np.zeros(0)
        pairs = pairs[np.isfinite(pairs)]
        if len(pairs):
            description += (f"; {float((pairs >= threshold).mean()):.1%} of {len(pairs)} "
                            "co-engaged training pairs reach it")
        return threshold, description
    raise ValueError(f"unknown semantic threshold rule '{rule}' (expected one of {RULES})")


def semantic_labels(pair_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``I(sem)``: score ≥ threshold (a NaN score is never a positive)."""
    scores = np.asarray(pair_scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(scores) & (scores >= float(threshold))
