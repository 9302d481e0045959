"""Greedy slot-by-slot CAViaR re-rank, on demand, page by page (CAViaR §3).

For each slot, the next ``window`` not-yet-placed candidates of the main ranking are scored by
the contextual model given the items already placed (the trigger first, then the placed items,
most recent first, at most k), and the best is placed. :class:`RerankState` places ``p`` slots
per call (the page the user scrolls to), so only the pages asked for are computed; all rows
(triggers) of a batch advance together, vectorised over rows × window.
"""

from __future__ import annotations

import numpy as np

from relrec.rerank.model import ContextualReranker


class RerankState:
    def __init__(self, reranker: ContextualReranker, triggers: np.ndarray,
                 main_indices: np.ndarray, main_scores: np.ndarray, window: int,
                 contextual: bool = True):
        self.reranker = reranker
        self.triggers = np.asarray(triggers, np.int64)
        self.main_indices = np.asarray(main_indices, np.int64)
        self.main_scores = np.asarray(main_scores, np.float32)
        self.window = int(window)
        self.contextual = contextual
        self.available = self.main_indices >= 0
        n = len(self.triggers)
        self.placed: list[list[int]] = [[] for _ in range(n)]
        self.placed_scores: list[list[float]] = [[] for _ in range(n)]
        self.scored = 0  # candidates scored so far (the O(K·n) cost, for tests)

    def next_page(self, page_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Place the next ``page_size`` slots of every row; returns them (scores, indices)."""
        n, length = self.main_indices.shape
        k = self.reranker.context_size
        out_indices = np.full((n, page_size), -1, np.int64)
        out_scores = np.zeros((n, page_size), np.float32)
        top = np.where(np.isfinite(self.main_scores[:, 0]), self.main_scores[:, 0], 0.0)
        for slot in range(page_size):
            in_window = self.available & (np.cumsum(self.available, axis=1) <= self.window)
            rows, columns = np.nonzero(in_window)
            if len(rows) == 0:
                break
            context = np.full((n, k), -1, np.int64)
            for r in range(n):
                recent = ([int(self.triggers[r])] + self.placed[r])[::-1][:k]
                context[r, :len(recent)] = recent
            position = np.array([1 + len(p) for p in self.placed], np.int64)
            candidates = self.main_indices[rows, columns]
            point, full = self.reranker.features(
                self.triggers[rows], candidates, self.main_scores[rows, columns], top[rows],
                columns, length, context[rows], position[rows])
            probability = self.reranker.predict(full if self.contextual else point,
                                                contextual=self.contextual)
            self.scored += len(rows)
            dense = np.full((n, length), -np.inf)
            dense[rows, columns] = probability
            best_column = np.argmax(dense, axis=1)  # ties: the higher main rank
            best = dense[np.arange(n), best_column]
            best_column[~np.isfinite(best)] = -1
            for r in np.flatnonzero(best_column >= 0):
                c = best_column[r]
                self.available[r, c] = False
                item = int(self.main_indices[r, c])
                self.placed[r].append(item)
                self.placed_scores[r].append(float(best[r]))
                out_indices[r, slot] = item
                out_scores[r, slot] = best[r]
        return out_scores, out_indices


def rerank_pages(reranker: ContextualReranker, triggers: np.ndarray, main_indices: np.ndarray,
                 main_scores: np.ndarray, pages: int, page_size: int, window: int,
                 contextual: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pages 1..``pages`` placed one page at a time: (scores, indices) of shape
    (n, pages·page_size)."""
    state = RerankState(reranker, triggers, main_indices, main_scores, window, contextual)
    parts = [state.next_page(page_size) for _ in range(pages)]
    return (np.concatenate([p[0] for p in parts], axis=1),
            np.concatenate([p[1] for p in parts], axis=1))
