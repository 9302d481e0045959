"""CAViaR contextual features (CAViaR §3.1) and the point-wise features they extend.

Item space (computed once per run, saved with the re-ranker):

* item vectors — the run's text content embeddings (the same "pretrained video embeddings"
  CAViaR uses), L2-normalised, reduced by PCA to ``dim`` dimensions and normalised again;
  without content, the main model's first head.
* derived topics — k-means (``faiss.Kmeans``, spherical) clusters of the normalised content
  embeddings. Never the evaluation topics.
* popularity — log(1 + training candidate frequency), scaled to [0, 1].

For a candidate ``c`` of trigger ``t`` with main-ranking score ``s_c`` (list top score
``s_1``, main rank ``r_c``) and the items already placed above it — the **context**, most
recent first, at most ``k`` (the trigger itself is the first context item: the user is
watching it) — the features are:

point-wise (the baseline model sees only these)
    ``s_c``, ``s_c - s_1``, ``log(1+r_c)/log(1+N)``, popularity(c), cos(t, c),
    [topic(t) = topic(c)], the candidate vector (``dim``).
contextual (added for the contextual model)
    the mean vector of the context items (``dim``); the dot product of ``c`` with each context
    item (``k``, 0 where absent) and a presence mask (``k``); their mean; the share of context
    items with ``c``'s derived topic; the run of most recent context items with ``c``'s topic
    (/k); position = number of items consumed before this slot (trigger included, capped at
    :data:`POSITION_CAP`, /cap) and the context length (/k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relrec.vectors import l2_normalize

POSITION_CAP = 20


@dataclass
class ItemSpace:
    vectors: np.ndarray  # (n_items, dim) float32 unit vectors (zeros: no content)
    topics: np.ndarray  # (n_items,) int64 derived topic (k-means cluster), -1 = none
    popularity: np.ndarray  # (n_items,) float32 in [0, 1]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def build_item_space(content: np.ndarray, ok: np.ndarray, candidate_frequency: np.ndarray,
                     dim: int = 32, n_topics: int | None = None, seed: int = 0) -> ItemSpace:
    """PCA-reduced unit vectors, k-means derived topics and scaled popularity."""
    import faiss

    content = l2_normalize(np.asarray(content, dtype=np.float32))
    usable = content[ok]
    dim = min(dim, content.shape[1])
    mean = usable.mean(axis=0)
    _, _, components = np.linalg.svd(usable - mean, full_matrices=False)
    reduced = l2_normalize((content - mean) @ components[:dim].T).astype(np.float32)
    reduced[~ok] = 0.0
    n_topics = n_topics or int(np.clip(round(np.sqrt(ok.sum() / 4)), 2, 100))
    n_topics = max(1, min(n_topics, int(ok.sum())))
    kmeans = faiss.Kmeans(content.shape[1], n_topics, niter=25, seed=seed, spherical=True,
                          verbose=False)
    kmeans.train(np.ascontiguousarray(usable))
    _, assigned = kmeans.index.search(np.ascontiguousarray(content), 1)
    topics = np.where(ok, assigned[:, 0], -1).astype(np.int64)
    popularity = np.log1p(np.asarray(candidate_frequency, dtype=np.float64))
    popularity = (popularity / max(popularity.max(), 1e-12)).astype(np.float32)
    return ItemSpace(reduced, topics, popularity)


def n_pointwise(dim: int) -> int:
    return 6 + dim


def n_contextual(dim: int, k: int) -> int:
    return dim + 2 * k + 5


def pointwise_features(space: ItemSpace, triggers: np.ndarray, candidates: np.ndarray,
                       scores: np.ndarray, top_scores: np.ndarray, ranks: np.ndarray,
                       list_length: int) -> np.ndarray:
    """(M, n_pointwise) features of candidates, one row per (trigger, candidate)."""
    vectors = space.vectors
    cand_vectors = vectors[candidates]
    cos = np.einsum("md,md->m", vectors[triggers], cand_vectors)
    same_topic = (space.topics[triggers] == space.topics[candidates]) & (space.topics[triggers] >= 0)
    columns = [np.asarray(scores, np.float32), np.asarray(scores - top_scores, np.float32),
               (np.log1p(ranks) / np.log1p(max(list_length, 1))).astype(np.float32),
               space.popularity[candidates], cos.astype(np.float32),
               same_topic.astype(np.float32)]
    return np.concatenate([np.stack(columns, axis=1), cand_vectors], axis=1).astype(np.float32)


def contextual_features(space: ItemSpace, candidates: np.ndarray, context: np.ndarray,
                        position: np.ndarray) -> np.ndarray:
    """(M, n_contextual) features; ``context`` (M, k) item indices, most recent first, -1 pad."""
    k = context.shape[1]
    present = context >= 0
    safe = np.maximum(context, 0)
    context_vectors = space.vectors[safe] * present[..., None]
    count = present.sum(axis=1).astype(np.float32)
    mean_vector = context_vectors.sum(axis=1) / np.maximum(count, 1.0)[:, None]
    cand_vectors = space.vectors[candidates]
    dots = np.einsum("mkd,md->mk", context_vectors, cand_vectors)
    mean_dot = dots.sum(axis=1) / np.maximum(count, 1.0)
    cand_topic = space.topics[candidates]
    same = present & (space.topics[safe] == cand_topic[:, None]) & (cand_topic[:, None] >= 0)
    share = same.sum(axis=1) / np.maximum(count, 1.0)
    run = np.cumprod(same, axis=1).sum(axis=1) / k
    columns = [mean_dot, share, run, np.minimum(position, POSITION_CAP) / POSITION_CAP,
               count / k]
    return np.concatenate([mean_vector, dots, present.astype(np.float32),
                           np.stack(columns, axis=1)], axis=1).astype(np.float32)


def similarity_to_recent(space: ItemSpace, candidates: np.ndarray, context: np.ndarray,
                         recent: int = 5) -> np.ndarray:
    """CAViaR Fig. 2's diversity measure: candidate · mean vector of the previous ``recent``
    items (here the context items, most recent first)."""
    context = context[:, :recent]
    present = context >= 0
    vectors = space.vectors[np.maximum(context, 0)] * present[..., None]
    mean = vectors.sum(axis=1) / np.maximum(present.sum(axis=1), 1)[:, None]
    return np.einsum("md,md->m", mean, space.vectors[candidates])
