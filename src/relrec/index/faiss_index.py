"""FAISS inner-product index over item embeddings: one object with ``add`` / ``search``.

Scores are inner products (cosine when the model L2-normalises its embeddings). Results map
FAISS row ids back to item indices; a search can exclude each query's own item (the trigger).

``ivfpq`` caps recall at what 8-bit product codes can tell apart; ``refine`` re-ranks the
``refine_factor · k`` PQ candidates with a finer copy of the vectors (``IndexRefine``):
``"sq8"`` (8-bit scalar codes, d bytes per item) or ``"flat"`` (exact floats, 4·d bytes).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from relrec.index.base import keep_first
from relrec.manifest import atomic_path


class ItemIndex:
    def __init__(self, dim: int, kind: str = "exact", *, hnsw_neighbors: int = 32,
                 ivf_lists: int | None = None, pq_bytes: int | None = None,
                 search_breadth: int | None = None, refine: str | None = None,
                 refine_factor: int = 4):
        if refine not in (None, "sq8", "flat"):
            raise ValueError(f"unknown refine {refine!r} (None, 'sq8', 'flat')")
        if refine is not None and kind != "ivfpq":
            raise ValueError("refine applies to the ivfpq kind only")
        self.dim = dim
        self.kind = kind
        self.refine = refine
        self.refine_factor = refine_factor
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
            index = faiss.IndexIVFPQ(quantizer, self.dim, self.ivf_lists or 1024,
                                     self.pq_bytes or max(1, self.dim // 4), 8,
                                     faiss.METRIC_INNER_PRODUCT)
            index.own_fields = False  # the quantizer lives on through self._parts
            self._parts = [quantizer, index]
            if self.refine is None:
                return index
            fine = (faiss.IndexFlatIP(self.dim) if self.refine == "flat" else
                    faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit,
                                               faiss.METRIC_INNER_PRODUCT))
            self._parts.append(fine)
            refined = faiss.IndexRefine(index, fine)
            refined.k_factor = float(self.refine_factor)
            return refined
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
            faiss.extract_index_ivf(self._index).nprobe = self.search_breadth or 16
            if self.refine is not None:
                self._index.k_factor = float(self.refine_factor)
        scores, rows = self._index.search(queries, fetch) if fetch > 0 else (
            np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        items = np.where(rows >= 0, self.item_indices[np.maximum(rows, 0)], -1)
        # the first k non-excluded columns of each row, in order
        keep = None if exclude is None else items != np.asarray(exclude, dtype=np.int64)[:, None]
        scores, items = keep_first(scores, items, keep, k)
        return scores, items.astype(np.int64)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            faiss.write_index(self._index, str(temporary))
        np.save(path.with_suffix(".items.npy"), self.item_indices)

    @classmethod
    def load(cls, path: str | Path) -> "ItemIndex":
        path = Path(path)
        raw = faiss.read_index(str(path))
        index = cls.__new__(cls)
        index.dim, index._index = raw.d, raw
        refined = isinstance(raw, faiss.IndexRefine)
        base = faiss.downcast_index(raw.base_index) if refined else raw
        index.kind = ("hnsw" if isinstance(base, faiss.IndexHNSWFlat)
                      else "ivfpq" if isinstance(base, faiss.IndexIVFPQ) else "exact")
        index.refine = None
        index.refine_factor = int(raw.k_factor) if refined else 4
        if refined:
            fine = faiss.downcast_index(raw.refine_index)
            index.refine = "flat" if isinstance(fine, faiss.IndexFlat) else "sq8"
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
