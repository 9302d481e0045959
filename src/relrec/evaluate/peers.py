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


class _VectorKNN:
    """Nearest neighbours by cosine over per-item vectors (rows with ok=False are skipped)."""

    def _build(self, vectors: np.ndarray, ok: np.ndarray) -> None:
        from relrec.index.faiss_index import ItemIndex

        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors_ = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        self.index_ = ItemIndex(self.vectors_.shape[1])
        self.index_.add(self.vectors_[ok], np.flatnonzero(ok))

    def similar_indices(self, trigger_indices: np.ndarray, k: int):
        trigger_indices = np.asarray(trigger_indices, dtype=np.int64)
        return self.index_.search(self.vectors_[trigger_indices], k, exclude=trigger_indices)


class ContentKNN(_VectorKNN):
    """The paper's "content only baseline": kNN directly on content embeddings (Table I).

    Uses the run's text vectors, fused with visual vectors when ``modalities`` includes it
    (each modality L2-normalised, concatenated; a missing image contributes zeros).
    """

    name = "content_knn"

    def __init__(self, modalities: tuple[str, ...] = ("text",)):
        self.modalities = modalities

    def fit(self, run: RunData) -> "ContentKNN":
        from relrec.train.content_inputs import load_content

        parts, ok_any = [], np.zeros(run.n_items, dtype=bool)
        for modality in self.modalities:
            loaded = load_content(run, modality)
            if loaded is None:
                raise FileNotFoundError(f"{run.run_dir}: no {modality} embeddings; run "
                                        "`relrec embed` first")
            vectors, ok = loaded
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            parts.append(np.where(ok[:, None], vectors, 0.0))
            ok_any |= ok
        self._build(np.concatenate(parts, axis=1), ok_any)
        return self


class ImplicitALS(_VectorKNN):
    """`implicit` ALS item factors → ``similar_items`` by cosine (users' common peer)."""

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 alpha: float = 1.0, seed: int = 0):
        self.factors, self.regularization = factors, regularization
        self.iterations, self.alpha, self.seed = iterations, alpha, seed

    def fit(self, run: RunData) -> "ImplicitALS":
        import pandas as pd
        from implicit.cpu.als import AlternatingLeastSquares

        interactions = pd.read_parquet(run.run_dir / "data" / "interactions.parquet",
                                       columns=["user_id", "item_index", "timestamp"])
        train = interactions[interactions["timestamp"] < run.manifest["split"]["valid_start"]]
        users, user_rows = np.unique(train["user_id"].to_numpy(), return_inverse=True)
        matrix = sp.csr_matrix(
            (np.full(len(train), self.alpha, dtype=np.float32),
             (user_rows, train["item_index"].to_numpy())), shape=(len(users), run.n_items))
        matrix.sum_duplicates()
        model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                        iterations=self.iterations, random_state=self.seed,
                                        num_threads=0)
        model.fit(matrix, show_progress=False)
        self._build(np.asarray(model.item_factors), run.in_train)
        return self


class Item2Vec(_VectorKNN):
    """item2vec (Barkan & Koenigstein 2016): gensim skip-gram Word2Vec on training sessions."""

    name = "item2vec"

    def __init__(self, vector_size: int = 64, window: int = 5, epochs: int = 10,
                 negative: int = 5, seed: int = 0):
        self.vector_size, self.window, self.epochs = vector_size, window, epochs
        self.negative, self.seed = negative, seed

    def fit(self, run: RunData) -> "Item2Vec":
        from gensim.models import Word2Vec

        sessions = run.train_sessions
        sentences = [group.astype(str).tolist() for _, group in
                     sessions.groupby(["user_id", "session_key"], sort=False)["item_index"]]
        model = Word2Vec(sentences=sentences, vector_size=self.vector_size, window=self.window,
                         min_count=1, sg=1, negative=self.negative, epochs=self.epochs,
                         seed=self.seed, workers=1)
        vectors = np.zeros((run.n_items, self.vector_size), dtype=np.float32)
        ok = np.zeros(run.n_items, dtype=bool)
        for word, row in model.wv.key_to_index.items():
            vectors[int(word)] = model.wv.vectors[row]
            ok[int(word)] = True
        self._build(vectors, ok & run.in_train)
        return self
