"""The one query contract every related-list model answers (relrec's tower and the peers).

    ids, scores = model.similar_items(["1", "260"], k=10, filter_items=["50"])

Like ``implicit``'s ``similar_items``: batched, one row per trigger, ``(ids, scores)`` of shape
``(len(item_ids), k)``. A row shorter than ``k`` (a tiny catalogue, or filters that removed
candidates) is padded with the id ``""`` and the score ``-inf``. The trigger itself never
appears in its own row, nor does any item of ``filter_items`` (ids not in the catalogue are
ignored there); an unknown *trigger* id is a ``KeyError`` naming it.

Subclasses set ``item_ids_`` (the catalogue's ids in item-index order) and implement
``_search(trigger_indices, k, **options) -> (scores, item indices)``, which pads with index -1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def keep_first(scores: np.ndarray, indices: np.ndarray, keep: np.ndarray | None,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of each row where ``keep`` holds (order kept; ``None``: every
    column), the rest and short rows padded with index -1 / score -inf. Scores come back as
    float32, indices in their own dtype."""
    if keep is not None:
        order = np.argsort(~keep, axis=1, kind="stable")
        indices = np.take_along_axis(indices, order, axis=1)[:, :k]
        scores = np.take_along_axis(scores, order, axis=1)[:, :k]
        kept = np.take_along_axis(keep, order, axis=1)[:, :k]
        indices, scores = np.where(kept, indices, -1), np.where(kept, scores, -np.inf)
    else:
        indices, scores = indices[:, :k], scores[:, :k]
    if indices.shape[1] < k:
        pad = ((0, 0), (0, k - indices.shape[1]))
        indices = np.pad(indices, pad, constant_values=-1)
        scores = np.pad(scores, pad, constant_values=-np.inf)
    return scores.astype(np.float32), indices


def drop_filtered(scores: np.ndarray, indices: np.ndarray, banned: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of each row that are not in ``banned`` (order kept), padded
    with index -1 / score -inf."""
    return keep_first(scores, indices, (indices >= 0) & ~np.isin(indices, banned), k)


class SimilarItemsModel:
    """Base class: id mapping, filtering and padding around a subclass's ``_search``."""

    item_ids_: np.ndarray

    def _search(self, trigger_indices: np.ndarray, k: int, **options
                ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def _id_position(self) -> pd.Index:
        cached = self.__dict__.get("_id_position_cache")
        if cached is None or cached[0] is not self.item_ids_:  # refit on another catalogue
            cached = (self.item_ids_, pd.Index(np.asarray(self.item_ids_).astype(str)))
            self.__dict__["_id_position_cache"] = cached
        return cached[1]

    def item_indices(self, item_ids, *, missing: str = "raise") -> np.ndarray:
        """Item indices of ``item_ids``; an unknown id raises ``KeyError`` naming it
        (``missing="drop"``: unknown ids are left out)."""
        ids = np.asarray([str(item_id) for item_id in item_ids], dtype=object)
        positions = self._id_position.get_indexer(ids) if len(ids) else np.zeros(0, np.int64)
        if missing == "drop":
            return positions[positions >= 0].astype(np.int64)
        if (positions < 0).any():
            raise KeyError(f"unknown item id {ids[np.flatnonzero(positions < 0)[0]]!r}")
        return positions.astype(np.int64)

    def similar_items(self, item_ids, k: int = 10, *, filter_items=None, **options
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(item_ids), k); see the module docstring."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        triggers = self.item_indices(item_ids)
        banned = (self.item_indices(filter_items, missing="drop") if filter_items is not None
                  else np.zeros(0, np.int64))
        scores, indices = self._search(triggers, k + len(banned), **options)
        scores, indices = drop_filtered(scores, indices, banned, k)
        ids = np.where(indices >= 0, np.asarray(self.item_ids_, dtype=object)[
            np.maximum(indices, 0)], "")
        return ids.astype(object), scores

    def ranked_indices(self, item_ids, k: int, **options) -> np.ndarray:
        """Item indices of :meth:`similar_items` (-1 pads): what the evaluator scores. The
        same lists without the round trip through ids."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores, indices = self._search(self.item_indices(item_ids), k, **options)
        _, indices = keep_first(scores, indices, indices >= 0, k)
        return indices.astype(np.int64)
