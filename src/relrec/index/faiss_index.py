"""FAISS inner-product index over item embeddings: one object with ``add`` / ``search``.

Embeddings are L2-normalised, so inner product is cosine similarity. Results map FAISS row ids
back to item indices; a search can exclude each query's own item (the trigger).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np


class ItemIndex:
    def __init__(self, dim: int, kind: str = "exact", *, hnsw_neighbors: int = 32,
                 ivf_lists: int | None = None, pq_bytes: int | None = None,
                 search_breadth: int | None = None):
        self.dim = dim
        self.kind = kind
        self.hnsw_neighbors = hnsw_neighbors
        self.ivf_lists = ivf_lists
        self.pq_bytes = pq_bytes
        self.search_breadth = search_breadth
        self.item_indices = np.empty(0, dtype=np.int64)
        self._index = self._make_index()

    def _make_index(self):
        if self.kind == "exact":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            return index
        if self.kind == "ivfpq":
            quantizer = faiss.IndexFlatIP(self.dim)
            return faiss.IndexIVFPQ(quantizer, self.dim, self.ivf_lists or 1024,
                                    self.pq_bytes or max(1, self.dim // 4), 8,
                                    faiss.METRIC_INNER_PRODUCT)
        raise ValueError(f"unknown index kind {self.kind!r} (exact, hnsw, ivfpq)")

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, embeddings: np.ndarray, item_indices: np.ndarray) -> None:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != len(item_indices):
            raise ValueError("embeddings and item_indices differ in length")
        if not self._index.is_trained:
            self._index.train(embeddings)
        self._index.add(embeddings)
        self.item_indices = np.concatenate([self.item_indices,
                                            np.asarray(item_indices, dtype=np.int64)])

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item indices) per query; ``exclude[i]`` is removed from row i.

        Rows shorter than k (tiny catalogues) are padded with item index -1 and score -inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = 1 if exclude is not None else 0
        fetch = min(k + extra, len(self))
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = max(self.search_breadth or 64, fetch)
        elif self.kind == "ivfpq":
            self._index.nprobe = self.search_breadth or 16
        scores, rows = self._index.search(queries, fetch) if fetch > 0 else (
            np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        items = np.where(rows >= 0, self.item_indices[np.maximum(rows, 0)], -1)
        if exclude is not None:
            keep = items != np.asarray(exclude, dtype=np.int64)[:, None]
            # keep the first k non-excluded columns of each row, in order
            order = np.argsort(~keep, axis=1, kind="stable")
            items = np.take_along_axis(items, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            kept = np.take_along_axis(keep, order, axis=1)
            items = np.where(kept, items, -1)
            scores = np.where(kept, scores, -np.inf)
        items, scores = items[:, :k], scores[:, :k]
        if items.shape[1] < k:
            pad = k - items.shape[1]
            items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores.astype(np.float32), items.astype(np.int64)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self._index, str(temporary))
        temporary.replace(path)
        np.save(path.with_suffix(".items.npy"), self.item_indices)

    @classmethod
    def load(cls, path: str | Path) -> "ItemIndex":
        path = Path(path)
        raw = faiss.read_index(str(path))
        index = cls.__new__(cls)
        index.dim, index._index = raw.d, raw
        index.kind = ("hnsw" if isinstance(raw, faiss.IndexHNSWFlat)
                      else "ivfpq" if isinstance(raw, faiss.IndexIVFPQ) else "exact")
        index.hnsw_neighbors, index.ivf_lists, index.pq_bytes, index.search_breadth = 32, None, None, None
        index.item_indices = np.load(path.with_suffix(".items.npy"), allow_pickle=False)
        return index


def choose_index_kind(n_items: int) -> str:
    """Exact search up to 200k items, HNSW up to 5M, IVF-PQ beyond (memory-bound)."""
    if n_items <= 200_000:
        return "exact"
    if n_items <= 5_000_000:
        return "hnsw"
    return "ivfpq"
