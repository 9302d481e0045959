"""Offline related-list metrics, as pure functions of numpy / scipy arrays.

Conventions (docs/ARCHITECTURE.md): items are dense integer indices ``0..n_items-1``; a
recommendation matrix ``ranked`` of shape ``(n_triggers, K_max)`` holds item indices best
first and ``-1`` pads a list shorter than ``K_max``. "Top-k" always means the first ``k``
columns (slots) of ``ranked``; padding slots inside them are ignored. ``k`` larger than
``K_max`` simply uses every column.

Every metric except :func:`coverage_at_k` returns a :class:`PerTrigger` — one numerator and
one denominator per row of ``ranked`` (per test trigger) — so that
:mod:`relrec.evaluate.bootstrap` can resample triggers. The metric is always the ratio of
sums ``numerator.sum() / denominator.sum()``; a trigger whose denominator is 0 takes no part
(e.g. a trigger without topic labels in the topic metrics) and is counted in
:attr:`PerTrigger.n_excluded`.

Two aggregation styles occur:

* pooled — the denominator is a count (test pairs for recall/NDCG, recommended slots for
  popular share / novelty), so the metric is a share over pairs or slots;
* mean over triggers — the numerator is the trigger's own value and the denominator 1
  (topic match rate, Jaccard, intra-list diversity, content similarity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from relrec.vectors import l2_normalize

__all__ = [
    "PerTrigger",
    "recall_at_k",
    "ndcg_at_k",
    "topic_match_rate_at_k",
    "topic_jaccard_at_k",
    "popular_share_at_k",
    "novelty_at_k",
    "coverage_at_k",
    "intra_list_diversity_at_k",
    "content_similarity_at_k",
    "popularity_masks",
]

# Upper bound on the number of elements materialised at once by the chunked gathers.
_CHUNK_ELEMENTS = 1 << 22


@dataclass
class PerTrigger:
    """Per-trigger numerator and denominator of a ratio-of-sums metric.

    ``metric = numerator.sum() / denominator.sum()``; triggers with denominator 0 are
    excluded (they add nothing to either sum). Both arrays are float64 of shape
    ``(n_triggers,)`` and aligned with the rows of the recommendation matrix, so two
    systems evaluated on the same triggers can be compared with a paired bootstrap.
    """

    numerator: np.ndarray
    denominator: np.ndarray

    def __post_init__(self) -> None:
        self.numerator = np.asarray(self.numerator, dtype=np.float64).reshape(-1)
        self.denominator = np.asarray(self.denominator, dtype=np.float64).reshape(-1)
        if self.numerator.shape != self.denominator.shape:
            raise ValueError(
                f"numerator and denominator differ in length: "
                f"{self.numerator.shape[0]} vs {self.denominator.shape[0]}"
            )
        if np.any(self.denominator < 0):
            raise ValueError("denominators must be non-negative")

    def value(self) -> float:
        """The metric on all triggers; NaN when no trigger has a positive denominator."""
        den = float(self.denominator.sum())
        if den == 0.0:
            return float("nan")
        return float(self.numerator.sum()) / den

    def __len__(self) -> int:
        return int(self.numerator.shape[0])

    @property
    def included(self) -> np.ndarray:
        """Boolean mask of the triggers that take part (denominator > 0)."""
        return self.denominator > 0

    @property
    def n_included(self) -> int:
        """Number of triggers with a positive denominator."""
        return int(np.count_nonzero(self.denominator > 0))

    @property
    def n_excluded(self) -> int:
        """Number of triggers left out (denominator 0, e.g. triggers without topics)."""
        return int(np.count_nonzero(self.denominator == 0))

    def subset(self, rows: np.ndarray) -> PerTrigger:
        """The metric restricted to some triggers (a boolean mask or an index array),
        e.g. the top-1% / bottom-10% popularity buckets of the trigger breakdown."""
        rows = np.asarray(rows)
        return PerTrigger(self.numerator[rows], self.denominator[rows])


# --------------------------------------------------------------------------- helpers


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _as_ranked(ranked: np.ndarray, n_items: int | None = None) -> np.ndarray:
    arr = np.asarray(ranked)
    if arr.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_triggers, K), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ranked must hold integer item indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        if arr.min() < -1:
            raise ValueError("ranked holds negative indices other than the -1 padding")
        if n_items is not None and arr.max() >= n_items:
            raise ValueError(f"ranked holds item index {int(arr.max())} >= n_items={n_items}")
    return arr


def _top(ranked: np.ndarray, k: int) -> np.ndarray:
    return ranked[:, : min(k, ranked.shape[1])]


def _as_index(values: np.ndarray, name: str, upper: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        if arr.min() < 0:
            raise ValueError(f"{name} holds negative indices")
        if upper is not None and arr.max() >= upper:
            raise ValueError(f"{name} holds index {int(arr.max())} >= {upper}")
    return arr


def _row_chunks(n_rows: int, row_width: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, row_width))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _target_rank(ranked: np.ndarray, trigger_row: np.ndarray, target: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rank, trigger_row): the 0-based rank of each pair's target within its trigger's
    top-k (-1 when absent) and the validated trigger rows."""
    trigger_row = _as_index(trigger_row, "trigger_row", ranked.shape[0])
    target = _as_index(target, "target", None)
    if trigger_row.shape != target.shape:
        raise ValueError(
            f"trigger_row and target differ in length: {trigger_row.size} vs {target.size}"
        )
    top = _top(ranked, k)
    rank = np.full(target.shape[0], -1, dtype=np.int64)
    if top.shape[1] == 0:
        return rank, trigger_row
    for a, b in _row_chunks(target.shape[0], top.shape[1]):
        eq = top[trigger_row[a:b]] == target[a:b, None]
        found = eq.any(axis=1)
        r = eq.argmax(axis=1)
        rank[a:b] = np.where(found, r, -1)
    return rank, trigger_row


def _pooled_over_rows(values: np.ndarray, rows: np.ndarray, n_rows: int) -> PerTrigger:
    num = np.bincount(rows, weights=values, minlength=n_rows).astype(np.float64)
    den = np.bincount(rows, minlength=n_rows).astype(np.float64)
    return PerTrigger(num, den)


def _binary_topics(topic_matrix) -> sp.csr_matrix:
    t = sp.csr_matrix(topic_matrix, dtype=np.float64, copy=True)
    t.sum_duplicates()
    t.eliminate_zeros()
    t.data[:] = 1.0
    return t



def _ranked_with_triggers(ranked, triggers, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (ranked, triggers) with one trigger per row of ``ranked``."""
    ranked = _as_ranked(ranked, n_items)
    triggers = _as_index(triggers, "triggers", n_items)
    if triggers.shape[0] != ranked.shape[0]:
        raise ValueError(
            f"triggers has {triggers.shape[0]} entries but ranked has {ranked.shape[0]} rows"
        )
    return ranked, triggers

def _topic_overlap(ranked: np.ndarray, triggers: np.ndarray, topic_matrix,
                   k: int, jaccard: bool) -> PerTrigger:
    t = _binary_topics(topic_matrix)
    n_items = t.shape[0]
    ranked, triggers = _ranked_with_triggers(ranked, triggers, n_items)
    top = _top(ranked, k)
    n = ranked.shape[0]
    size = np.diff(t.indptr).astype(np.float64)  # topics per item

    valid = top >= 0
    n_valid = valid.sum(axis=1).astype(np.float64)
    score_sum = np.zeros(n, dtype=np.float64)
    rows_all, cols_all = np.nonzero(valid)  # row-major order
    items_all = top[rows_all, cols_all]
    # chunk over slots
    for a, b in _row_chunks(rows_all.shape[0], 64):
        rows = rows_all[a:b]
        items = items_all[a:b]
        trig = triggers[rows]
        inter = np.asarray(t[trig].multiply(t[items]).sum(axis=1)).ravel()
        if jaccard:
            union = size[trig] + size[items] - inter
            score = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        else:
            score = (inter > 0).astype(np.float64)
        score_sum += np.bincount(rows, weights=score, minlength=n)

    # Share over the non-padding slots; a list with no items at all scores 0.
    share = np.divide(score_sum, n_valid, out=np.zeros(n), where=n_valid > 0)
    has_topics = size[triggers] > 0
    den = has_topics.astype(np.float64)
    num = np.where(has_topics, share, 0.0)
    return PerTrigger(num, den)


def _selection(top: np.ndarray, valid: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n_rows, n_items) sparse matrix counting each row's non-padding items, so that
    ``_selection(...) @ X`` sums the rows of ``X`` over every list without materialising
    an (n_rows, k, dim) gather."""
    rows, cols = np.nonzero(valid)
    data = np.ones(rows.shape[0], dtype=np.float64)
    return sp.csr_matrix((data, (rows, top[rows, cols])), shape=(top.shape[0], n_items))


def _normalised(item_vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(item_vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"item_vectors must be 2-D (n_items, dim), got shape {v.shape}")
    return l2_normalize(v)


# --------------------------------------------------------------------------- engagement


def recall_at_k(ranked: np.ndarray, trigger_row: np.ndarray, target: np.ndarray,
                k: int) -> PerTrigger:
    """Engagement: recall@k [21] — the share of test pairs (t, c) whose target c is
    in the top k related items of t.

    ``ranked`` holds one list per distinct test trigger; ``trigger_row[i]`` is the row of
    ``ranked`` for test pair ``i`` and ``target[i]`` its target item. Per trigger the
    numerator is the number of its pairs hit and the denominator its number of pairs, so
    the overall value is pooled over pairs (a trigger with many test pairs weighs more).
    Rows without any test pair have denominator 0.
    """
    k = _check_k(k)
    ranked = _as_ranked(ranked)
    rank, rows = _target_rank(ranked, trigger_row, target, k)
    return _pooled_over_rows((rank >= 0).astype(np.float64), rows, ranked.shape[0])


def ndcg_at_k(ranked: np.ndarray, trigger_row: np.ndarray, target: np.ndarray,
              k: int) -> PerTrigger:
    """NDCG@k with a single relevant item per test pair.

    Per pair the gain is ``1 / log2(rank + 2)`` when the target sits at 0-based ``rank < k``,
    else 0; with one relevant item the ideal DCG is 1. Aggregated over pairs exactly like
    :func:`recall_at_k`.
    """
    k = _check_k(k)
    ranked = _as_ranked(ranked)
    rank, rows = _target_rank(ranked, trigger_row, target, k)
    gain = np.where(rank >= 0, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    return _pooled_over_rows(gain, rows, ranked.shape[0])


# --------------------------------------------------------------------------- relevance


def topic_match_rate_at_k(ranked: np.ndarray, triggers: np.ndarray, topic_matrix,
                          k: int) -> PerTrigger:
    """Relevance: topic match rate@k — the paper's "topic overlap percentage" between
    trigger and candidate.

    Per trigger: the share of its non-padding top-k items that share at least one topic
    with the trigger (numerator = share, denominator = 1, so the value is the mean over
    triggers). ``topic_matrix`` is an (n_items, n_topics) binary sparse matrix (non-zeros
    are treated as 1); an item with an empty row never matches. Triggers without topics get
    denominator 0 (excluded, counted in ``n_excluded``). A list with no items at all scores 0.
    """
    k = _check_k(k)
    return _topic_overlap(ranked, triggers, topic_matrix, k, jaccard=False)


def topic_jaccard_at_k(ranked: np.ndarray, triggers: np.ndarray, topic_matrix,
                       k: int) -> PerTrigger:
    """Relevance: mean topic Jaccard@k — mean over triggers of the mean
    ``|T(t) ∩ T(i)| / |T(t) ∪ T(i)|`` over the trigger's non-padding top-k items.

    Same exclusion rules as :func:`topic_match_rate_at_k`.
    """
    k = _check_k(k)
    return _topic_overlap(ranked, triggers, topic_matrix, k, jaccard=True)


def content_similarity_at_k(ranked: np.ndarray, triggers: np.ndarray,
                            item_vectors: np.ndarray, k: int) -> PerTrigger:
    """Relevance fallback when items have no topic labels ("falls back to mean
    content similarity, reported as such"): mean over triggers of the mean cosine similarity
    between the trigger's content vector and each non-padding top-k item's.

    Vectors are L2-normalised here; an all-zero vector (no content) has cosine 0 with
    everything, and a trigger with an all-zero vector is excluded (denominator 0). A list
    with no items at all scores 0.
    """
    k = _check_k(k)
    v = _normalised(item_vectors)
    n_items = v.shape[0]
    ranked, triggers = _ranked_with_triggers(ranked, triggers, n_items)
    top = _top(ranked, k)
    n = ranked.shape[0]
    valid = top >= 0
    n_valid = valid.sum(axis=1).astype(np.float64)
    s = _selection(top, valid, n_items) @ v  # (n, dim): sum of each list's unit vectors
    sims = np.einsum("rd,rd->r", s, v[triggers])
    mean = np.divide(sims, n_valid, out=np.zeros(n), where=n_valid > 0)
    has_content = np.any(v[triggers] != 0, axis=1) if n else np.zeros(0, dtype=bool)
    return PerTrigger(np.where(has_content, mean, 0.0), has_content.astype(np.float64))


# --------------------------------------------------------------------------- popularity


def popular_share_at_k(ranked: np.ndarray, popular_mask: np.ndarray, k: int) -> PerTrigger:
    """Popularity bias: share of recommended slots filled by popular items (the
    paper's "distribution share of highly popular videos").

    ``popular_mask`` is a boolean (n_items,) mask, normally the top 1% by training frequency
    (:func:`popularity_masks`). Pooled over slots: numerator = number of popular items in the
    trigger's non-padding top-k, denominator = number of non-padding slots (an empty list is
    excluded).
    """
    k = _check_k(k)
    mask = np.asarray(popular_mask, dtype=bool).reshape(-1)
    ranked = _as_ranked(ranked, mask.shape[0])
    top = _top(ranked, k)
    valid = top >= 0
    popular = np.where(valid, mask[np.where(valid, top, 0)] if mask.size else False, False)
    return PerTrigger(popular.sum(axis=1), valid.sum(axis=1))


def novelty_at_k(ranked: np.ndarray, item_probability: np.ndarray, k: int) -> PerTrigger:
    """Novelty@k: mean self-information ``-log2 p(item)`` over recommended slots.

    ``item_probability`` is the training popularity of each item; raw training frequencies
    are accepted too — the array is normalised to sum to 1. Items with probability 0 (unseen
    in training) get half the smallest non-zero probability. Pooled over slots: numerator =
    sum of self-information over the non-padding top-k, denominator = number of such slots.
    The value is in bits and is not bounded by 1.
    """
    k = _check_k(k)
    p = np.asarray(item_probability, dtype=np.float64).reshape(-1)
    if p.size and (np.any(p < 0) or not np.all(np.isfinite(p))):
        raise ValueError("item_probability must be finite and non-negative")
    total = p.sum()
    if p.size and total <= 0:
        raise ValueError("item_probability has no positive entry")
    ranked = _as_ranked(ranked, p.shape[0])
    if p.size:
        p = p / total
        floor = p[p > 0].min() / 2.0
        p = np.where(p > 0, p, floor)
    info = -np.log2(p) if p.size else p
    top = _top(ranked, k)
    valid = top >= 0
    slot_info = np.where(valid, info[np.where(valid, top, 0)] if info.size else 0.0, 0.0)
    return PerTrigger(slot_info.sum(axis=1), valid.sum(axis=1))


def coverage_at_k(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Catalogue coverage@k: distinct items appearing in any top-k list divided by
    ``n_items``. A catalogue-level number, so it has no bootstrap interval."""
    k = _check_k(k)
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    ranked = _as_ranked(ranked, n_items)
    top = _top(ranked, k)
    items = top[top >= 0]
    return float(np.unique(items).size) / float(n_items)


def popularity_masks(frequency: np.ndarray, top_fraction: float = 0.01,
                     bottom_fraction: float = 0.10,
                     eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (top, bottom) masks over items for the popularity breakdown
    ("top-1% / bottom-10% triggers are cut by training frequency over the catalogue of items
    seen in training").

    Among ``eligible`` items (default ``frequency > 0``) the top mask holds the
    ``max(1, floor(top_fraction * n_eligible))`` most frequent items and the bottom mask the
    ``max(1, floor(bottom_fraction * n_eligible))`` least frequent. Ties are broken by item
    index (the lower index first in both orders) so the cut is deterministic. With very few
    eligible items the two masks may overlap. Both masks are empty when nothing is eligible.
    """
    freq = np.asarray(frequency, dtype=np.float64).reshape(-1)
    for name, frac in (("top_fraction", top_fraction), ("bottom_fraction", bottom_fraction)):
        if not (0.0 < float(frac) <= 1.0):
            raise ValueError(f"{name} must be in (0, 1], got {frac}")
    if eligible is None:
        elig = freq > 0
    else:
        elig = np.asarray(eligible, dtype=bool).reshape(-1)
        if elig.shape != freq.shape:
            raise ValueError(
                f"eligible has {elig.shape[0]} entries but frequency has {freq.shape[0]}"
            )
    top = np.zeros(freq.shape[0], dtype=bool)
    bottom = np.zeros(freq.shape[0], dtype=bool)
    idx = np.flatnonzero(elig)
    n_e = idx.size
    if n_e == 0:
        return top, bottom

    def _count(frac: float) -> int:
        return max(1, min(n_e, int(np.floor(frac * n_e + 1e-9))))

    f = freq[idx]
    # np.lexsort sorts by the last key first; idx breaks ties (ascending item index).
    order_top = idx[np.lexsort((idx, -f))]
    order_bottom = idx[np.lexsort((idx, f))]
    top[order_top[: _count(top_fraction)]] = True
    bottom[order_bottom[: _count(bottom_fraction)]] = True
    return top, bottom


# --------------------------------------------------------------------------- diversity


def intra_list_diversity_at_k(ranked: np.ndarray, item_vectors: np.ndarray,
                              k: int) -> PerTrigger:
    """Intra-list diversity@k (CAViaR): per list, the mean pairwise cosine distance
    ``1 - cos(v_i, v_j)`` over unordered pairs of its non-padding top-k items; the value is
    the mean over lists (numerator = list value, denominator = 1).

    Vectors are L2-normalised here (an all-zero vector has cosine 0 with everything). Lists
    with fewer than two items have no pair and are excluded (denominator 0).
    """
    k = _check_k(k)
    v = _normalised(item_vectors)
    ranked = _as_ranked(ranked, v.shape[0])
    top = _top(ranked, k)
    n = ranked.shape[0]
    valid = top >= 0
    m = valid.sum(axis=1).astype(np.float64)
    sel = _selection(top, valid, v.shape[0])
    s = sel @ v  # (n, dim): sum of each list's unit vectors
    sq = sel @ np.any(v != 0, axis=1).astype(np.float64)  # sum_i |v_i|^2 (1, or 0 if no content)
    # sum_{i<j} cos(i, j) = (|sum_i v_i|^2 - sum_i |v_i|^2) / 2
    sum_cos = 0.5 * (np.einsum("rd,rd->r", s, s) - sq)
    pairs = m * (m - 1.0) / 2.0
    has_pairs = pairs > 0
    ild = np.divide(pairs - sum_cos, pairs, out=np.zeros(n), where=has_pairs)
    ild = np.clip(ild, 0.0, 2.0)
    return PerTrigger(np.where(has_pairs, ild, 0.0), has_pairs.astype(np.float64))
