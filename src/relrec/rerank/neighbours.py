"""A sparse item → item weight table (each item's top neighbours under a co-engagement model)
for blending memorisation into the serving score.

The ``--preset auto`` candidate "model + EASE" re-ranks the model's candidate pool by
``z(model score) + w · z(B̂[t, c])`` (:func:`relrec.rerank.blend.blend_scores`), where ``B̂`` is
the EASE weight matrix (Steck, WWW 2019, eq. 8) fitted on the training period: the tower
generalises (content, cold items), EASE memorises which items are watched together. Only each
item's ``neighbours`` largest weights are kept (a dense ``B̂`` is n² floats); a pair outside
the table counts as weight 0 — EASE's weights beyond an item's top few hundred are near 0.
Pairs where either item was not in the EASE fit are not usable (z = 0: neither bonus nor
penalty), as for content blending.

Saved as one safetensors file in the model folder (``model/ease_neighbours.safetensors``):
``rows`` (int64, n_items + 1 CSR offsets), ``columns`` (int32, sorted within a row),
``weights`` (float32), ``fitted`` (bool per item); the fit's settings in its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from relrec.errors import RunDirError
from relrec.manifest import atomic_path

NEIGHBOURS_FILE = "ease_neighbours.safetensors"
BLOCK_ROWS = 2048


class NeighbourWeights:
    """``weights(t, c)`` for batches of (trigger, candidate) item indices, from a CSR table."""

    def __init__(self, rows: np.ndarray, columns: np.ndarray, weights: np.ndarray,
                 fitted: np.ndarray, settings: dict | None = None):
        self.rows = np.asarray(rows, np.int64)
        self.columns = np.asarray(columns, np.int32)
        self.weights = np.asarray(weights, np.float32)
        self.fitted = np.asarray(fitted, bool)
        self.settings = dict(settings or {})
        self.n_items = len(self.fitted)
        if len(self.rows) != self.n_items + 1 or self.rows[-1] != len(self.columns) or \
                len(self.columns) != len(self.weights):
            raise ValueError("neighbour table: rows, columns and weights do not agree")
        # one sorted key per stored pair (row-major, columns sorted within a row), so a batch
        # of lookups is one searchsorted
        row_of = np.repeat(np.arange(self.n_items, dtype=np.int64), np.diff(self.rows))
        self._keys = row_of * self.n_items + self.columns
        if len(self._keys) > 1 and not (np.diff(self._keys) > 0).all():
            raise ValueError("neighbour table: columns must be sorted and unique within a row")

    @classmethod
    def from_dense(cls, weights: np.ndarray, items: np.ndarray, n_items: int, neighbours: int,
                   settings: dict | None = None) -> "NeighbourWeights":
        """Keep each row's ``neighbours`` largest entries of a dense ``weights`` over the
        ``items`` (local → item index) of an ``n_items`` catalogue; the diagonal is left out."""
        weights = np.asarray(weights, np.float32)
        items = np.asarray(items, np.int64)
        keep = min(int(neighbours), max(len(items) - 1, 0))
        fitted = np.zeros(n_items, bool)
        fitted[items] = True
        counts = np.zeros(n_items, np.int64)
        columns = np.zeros(0, np.int32)
        values = np.zeros(0, np.float32)
        if keep > 0:
            by_item = np.argsort(items)  # rows in item order
            column_blocks, value_blocks = [], []
            for start in range(0, len(items), BLOCK_ROWS):  # bounds the copy of a dense block
                local = by_item[start:start + BLOCK_ROWS]
                block = weights[local].copy()
                block[np.arange(len(local)), local] = -np.inf  # never an item's own neighbour
                top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
                chosen = items[top]
                order = np.argsort(chosen, axis=1)  # columns sorted within a row
                column_blocks.append(np.take_along_axis(chosen, order, axis=1).ravel())
                value_blocks.append(np.take_along_axis(
                    np.take_along_axis(block, top, axis=1), order, axis=1).ravel())
            columns, values = np.concatenate(column_blocks), np.concatenate(value_blocks)
            counts[items] = keep
        rows = np.concatenate([[0], np.cumsum(counts)])
        return cls(rows, columns, values, fitted, settings)

    def lookup(self, triggers: np.ndarray, candidates: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(weight, usable) per (trigger row, candidate column). ``candidates`` may hold −1
        (padding) and item indices beyond the table (items added at run time): not usable."""
        triggers = np.asarray(triggers, np.int64)
        candidates = np.asarray(candidates, np.int64)
        known = (candidates >= 0) & (candidates < self.n_items)
        safe = np.where(known, candidates, 0)
        trigger_known = (triggers >= 0) & (triggers < self.n_items)
        safe_triggers = np.where(trigger_known, triggers, 0)
        usable = known & trigger_known[:, None] & self.fitted[safe] & \
            self.fitted[safe_triggers][:, None]
        values = np.zeros(candidates.shape, np.float64)
        if len(self._keys):
            keys = safe_triggers[:, None] * self.n_items + safe
            position = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            hit = usable & (self._keys[position] == keys)
            values = np.where(hit, self.weights[position], 0.0)
        return values, usable

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / NEIGHBOURS_FILE
        metadata = {"settings": json.dumps(self.settings)}
        with atomic_path(path) as temporary:
            save_file({"rows": self.rows, "columns": self.columns, "weights": self.weights,
                       "fitted": self.fitted.astype(np.uint8)}, str(temporary),
                      metadata=metadata)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "NeighbourWeights":
        path = Path(directory) / NEIGHBOURS_FILE
        if not path.is_file():
            raise RunDirError(f"{path}: missing; the run ranks with an EASE blend but its model "
                              "has no neighbour table (train again with --preset auto)")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                settings = json.loads((handle.metadata() or {}).get("settings", "{}"))
            tensors = load_file(str(path))
            return cls(tensors["rows"], tensors["columns"], tensors["weights"],
                       tensors["fitted"].astype(bool), settings)
        except Exception as error:  # safetensors has its own error types for corrupt files
            raise RunDirError(f"{path}: not a readable neighbour table ({error})") from None
