"""Reference systems scored on the same split and metrics as relrec's models.

Each peer has ``fit(run)`` and ``similar_indices(trigger_indices, k) -> (scores, indices)``
with the trigger excluded and -1 padding, like :class:`relrec.index.related.RelatedItems`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from relrec.run import RunData


def _pad_rows(rows: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for position, row in enumerate(rows):
        out[position, : min(k, len(row))] = row[:k]
    return out


class Popularity:
    """The most frequent candidates of the training pairs, the same list for every trigger."""

    name = "popularity"

    def fit(self, run: RunData) -> "Popularity":
        frequency = run.candidate_frequency.astype(np.float64)
        eligible = np.flatnonzero(run.in_train)
        order = np.lexsort((eligible, -frequency[eligible]))
        self.ranking_ = eligible[order]
        self.scores_ = frequency[self.ranking_]
        return self

    def similar_indices(self, trigger_indices: np.ndarray, k: int):
        head = self.ranking_[: k + 1]
        rows = [head[head != trigger][:k] for trigger in trigger_indices]
        ranked = _pad_rows(rows, k)
        scores = np.where(ranked >= 0, self.scores_[0], -np.inf).astype(np.float32)
        return scores, ranked


class CoVisitation:
    """Item-kNN on co-visitation counts (Linden et al. 2003), backfilled by popularity.

    ``normalization``: ``"count"`` ranks by raw symmetric co-visitation count; ``"cosine"``
    divides by ``sqrt(f_t · f_c)`` (item frequencies in pairs), damping popular candidates.
    """

    name = "covisitation"

    def __init__(self, normalization: str = "count"):
        if normalization not in {"count", "cosine"}:
            raise ValueError("normalization must be 'count' or 'cosine'")
        self.normalization = normalization

    def fit(self, run: RunData) -> "CoVisitation":
        pairs = run.train_pairs
        n = run.n_items
        counts = sp.coo_matrix(
            (pairs["pair_count"].to_numpy(np.float64),
             (pairs["trigger_index"].to_numpy(), pairs["candidate_index"].to_numpy())),
            shape=(n, n)).tocsr()
        symmetric = (counts + counts.T).tocsr()
        if self.normalization == "cosine":
            frequency = np.asarray(symmetric.sum(axis=1)).ravel()
            inverse_root = 1.0 / np.sqrt(np.maximum(frequency, 1.0))
            symmetric = sp.diags(inverse_root) @ symmetric @ sp.diags(inverse_root)
        self.matrix_ = symmetric.tocsr()
        self.popularity_ = Popularity().fit(run)
        return self

    def similar_indices(self, trigger_indices: np.ndarray, k: int):
        matrix = self.matrix_
        _, fallback = self.popularity_.similar_indices(np.asarray(trigger_indices), k)
        ranked = np.full((len(trigger_indices), k), -1, dtype=np.int64)
        scores = np.full((len(trigger_indices), k), -np.inf, dtype=np.float32)
        for position, trigger in enumerate(trigger_indices):
            start, end = matrix.indptr[trigger], matrix.indptr[trigger + 1]
            neighbours, values = matrix.indices[start:end], matrix.data[start:end]
            keep = neighbours != trigger
            neighbours, values = neighbours[keep], values[keep]
            order = np.lexsort((neighbours, -values))[:k]
            chosen = neighbours[order]
            ranked[position, : len(chosen)] = chosen
            scores[position, : len(chosen)] = values[order]
            if len(chosen) < k:
                extra = fallback[position][~np.isin(fallback[position], chosen)]
                extra = extra[extra >= 0][: k - len(chosen)]
                ranked[position, len(chosen): len(chosen) + len(extra)] = extra
                scores[position, len(chosen): len(chosen) + len(extra)] = 0.0
        return scores, ranked
