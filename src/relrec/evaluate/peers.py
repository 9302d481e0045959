"""Reference systems scored on the same split and metrics as relrec's models.

Each peer is a :class:`relrec.index.base.SimilarItemsModel`: ``fit(run)``, then
``similar_items(ids, k)`` like :class:`relrec.RelatedItems` (the trigger excluded, padded).
A peer that cannot be fitted on a run (too large, a missing input) raises :class:`PeerSkipped`
with a note; :mod:`relrec.evaluate.peer_tuning` reports it as skipped.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from relrec.content.store import load_content
from relrec.index.base import SimilarItemsModel
from relrec.index.faiss_index import ItemIndex
from relrec.run import RunData
from relrec.vectors import l2_normalize

# EASE keeps a dense item × item matrix: n² float64 while fitting (≈ 7.2 GB at 30 000 items,
# plus a float32 copy of the weights); larger catalogues are skipped (PeerSkipped).
EASE_MAX_ITEMS = 30_000


def _optional(module: str, peer: str):
    """A peer's optional library, or :class:`PeerSkipped` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise PeerSkipped(f"{peer} skipped: {error.name or module} is not installed "
                          "(pip install 'relrec[peers]')") from None


class PeerSkipped(RuntimeError):
    """A peer cannot be fitted on this run; ``note`` says why (reported, not an error)."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


def _pad_rows(rows: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for position, row in enumerate(rows):
        out[position, : min(k, len(row))] = row[:k]
    return out


class Popularity(SimilarItemsModel):
    """The most frequent candidates of the training pairs, the same list for every trigger."""

    name = "popularity"

    def fit(self, run: RunData) -> "Popularity":
        self.item_ids_ = run.item_ids
        frequency = run.candidate_frequency.astype(np.float64)
        eligible = np.flatnonzero(run.in_train)
        order = np.lexsort((eligible, -frequency[eligible]))
        self.ranking_ = eligible[order]
        self.scores_ = frequency[self.ranking_]
        return self

    def _search(self, trigger_indices: np.ndarray, k: int):
        head = self.ranking_[: k + 1]
        rows = [head[head != trigger][:k] for trigger in trigger_indices]
        ranked = _pad_rows(rows, k)
        scores = np.where(ranked >= 0, self.scores_[0], -np.inf).astype(np.float32)
        return scores, ranked


class CoVisitation(SimilarItemsModel):
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
        self.item_ids_ = run.item_ids
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

    def _search(self, trigger_indices: np.ndarray, k: int):
        matrix = self.matrix_
        _, fallback = self.popularity_._search(np.asarray(trigger_indices), k)
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


class _VectorKNN(SimilarItemsModel):
    """Nearest neighbours by cosine over per-item vectors (rows with ok=False are skipped)."""

    def _build(self, vectors: np.ndarray, ok: np.ndarray) -> None:
        self.vectors_ = l2_normalize(vectors).astype(np.float32)
        self.index_ = ItemIndex(self.vectors_.shape[1])
        self.index_.add(self.vectors_[ok], np.flatnonzero(ok))

    def _search(self, trigger_indices: np.ndarray, k: int):
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
        self.item_ids_ = run.item_ids
        parts, ok_any = [], np.zeros(run.n_items, dtype=bool)
        for modality in self.modalities:
            loaded = load_content(run, modality)
            if loaded is None:
                raise FileNotFoundError(f"{run.run_dir}: no {modality} embeddings; run "
                                        "`relrec embed` first")
            vectors, ok = loaded
            vectors = l2_normalize(vectors)
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
        self.item_ids_ = run.item_ids
        import pandas as pd

        AlternatingLeastSquares = _optional("implicit.cpu.als", "ALS").AlternatingLeastSquares

        interactions = pd.read_parquet(run.run_dir / "data" / "interactions.parquet",
                                       columns=["user_id", "item_index", "timestamp"])
        train = interactions[interactions["timestamp"] < run.training_end]
        users, user_rows = np.unique(train["user_id"].to_numpy(), return_inverse=True)
        matrix = sp.csr_matrix(
            (np.full(len(train), self.alpha, dtype=np.float32),
             (user_rows, train["item_index"].to_numpy())), shape=(len(users), run.n_items))
        matrix.sum_duplicates()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's own advice: its threads, not BLAS's
            model = AlternatingLeastSquares(factors=self.factors,
                                            regularization=self.regularization,
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
        self.item_ids_ = run.item_ids
        Word2Vec = _optional("gensim.models", "item2vec").Word2Vec

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


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE item-item weights from the Gram matrix ``G = XᵀX`` (Steck, WWW 2019).

    Solves ``min_B ||X − XB||²_F + λ||B||²_F  s.t.  diag(B) = 0`` in closed form:
    ``P̂ = (XᵀX + λI)⁻¹`` and ``B̂ = I − P̂ · diagMat(1 ⊘ diag(P̂))``, i.e.
    ``B̂_ij = −P̂_ij / P̂_jj`` off the diagonal and ``B̂_jj = 0``. Column ``j`` of ``B̂``
    reconstructs item ``j`` from the others, so ``B̂[t, j]`` is the weight of ``t`` in
    predicting ``j``. float64 throughout; returns a new array.
    """
    if l2 <= 0:
        raise ValueError("l2 must be > 0")
    gram = np.array(gram, dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    return _weights_from_precision(precision)


def _weights_from_precision(precision: np.ndarray) -> np.ndarray:
    """``B̂ = I − P̂ · diagMat(1 ⊘ diag(P̂))`` in place over ``precision``."""
    diagonal = np.diag(precision).copy()
    precision /= -diagonal[None, :]
    precision[np.diag_indices_from(precision)] = 0.0
    return precision


def ease_weights_from_rows(rows: sp.csr_matrix, l2: float) -> np.ndarray:
    """:func:`ease_weights` of ``G = XᵀX`` for a sparse ``X`` (m rows × n items).

    With fewer rows than items (users × a large catalogue) ``P̂`` comes from the Woodbury
    identity ``(XᵀX + λI)⁻¹ = (I − Xᵀ(XXᵀ + λI)⁻¹X) / λ``: an m × m inverse and two sparse
    products instead of an n × n inverse. Same ``B̂`` up to rounding.
    """
    if l2 <= 0:
        raise ValueError("l2 must be > 0")
    rows = sp.csr_matrix(rows, dtype=np.float64)
    n_rows, n_items = rows.shape
    if n_rows >= n_items:
        return ease_weights((rows.T @ rows).toarray(), l2)
    small = (rows @ rows.T).toarray()
    small[np.diag_indices_from(small)] += l2
    small_inverse = np.linalg.inv(small)
    left = np.asarray(rows.T @ small_inverse)  # Xᵀ(XXᵀ + λI)⁻¹, n × m dense
    correction = np.asarray((rows.T @ left.T).T)  # left @ X, via a sparse @ dense product
    del left
    precision = -correction
    del correction
    precision[np.diag_indices_from(precision)] += 1.0
    precision /= l2
    return _weights_from_precision(precision)


class EASE(SimilarItemsModel):
    """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    Closed-form item-item weights ``B̂ = I − P̂ · diagMat(1 ⊘ diag(P̂))`` with
    ``P̂ = (XᵀX + λI)⁻¹`` (:func:`ease_weights`) over a binary ``X`` of the training period:
    ``rows="users"`` — users × items from ``data/interactions.parquet`` (timestamps before
    :attr:`RunData.training_end <relrec.run.RunData.training_end>`); ``rows="sessions"`` — training sessions × items
    (``pairs/train_sessions.parquet``). Only items seen in training are columns.

    The related list of trigger ``t`` ranks items ``j ≠ t`` by ``B̂[t, j]``, the weight of
    ``t`` when reconstructing ``j``; items with a non-positive weight are left out and the
    list is backfilled by popularity (like :class:`CoVisitation`), then padded with -1.
    Catalogues of more than ``max_items`` training items (default :data:`EASE_MAX_ITEMS`,
    read at fit time) raise :class:`PeerSkipped`.
    """

    def __init__(self, l2: float = 500.0, rows: str = "users", max_items: int | None = None):
        if rows not in {"users", "sessions"}:
            raise ValueError("rows must be 'users' or 'sessions'")
        if l2 <= 0:
            raise ValueError("l2 must be > 0")
        self.l2, self.rows, self.max_items = float(l2), rows, max_items
        self.name = f"ease_{rows}"

    def _row_matrix(self, run: RunData, local_of: np.ndarray, n_local: int) -> sp.csr_matrix:
        import pandas as pd

        if self.rows == "users":
            path = run.run_dir / "data" / "interactions.parquet"
            if not path.exists():
                raise PeerSkipped(f"{path}: missing (an out-of-core run keeps no interaction "
                                  "log); EASE over users needs it")
            frame = pd.read_parquet(path, columns=["user_id", "item_index", "timestamp"])
            frame = frame[frame["timestamp"] < run.training_end]
        else:
            path = run.run_dir / "pairs" / "train_sessions.parquet"
            if not path.exists():
                raise PeerSkipped(f"{path}: missing; EASE over sessions needs it")
            frame = run.train_sessions
        row_of = (pd.factorize(frame["user_id"])[0] if self.rows == "users" else
                  frame.groupby(["user_id", "session_key"], sort=False).ngroup().to_numpy())
        row_of = np.asarray(row_of, dtype=np.int64)
        columns = local_of[frame["item_index"].to_numpy(np.int64)]
        keep = columns >= 0
        matrix = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float64), (row_of[keep], columns[keep])),
            shape=(int(row_of.max()) + 1 if len(row_of) else 0, n_local))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # binary: an item engaged twice by a user counts once
        return matrix

    def fit(self, run: RunData) -> "EASE":
        self.item_ids_ = run.item_ids
        items = np.flatnonzero(run.in_train)
        cap = EASE_MAX_ITEMS if self.max_items is None else int(self.max_items)
        if len(items) > cap:
            raise PeerSkipped(
                f"EASE skipped: {len(items):,} training items > {cap:,} (EASE_MAX_ITEMS): "
                f"the dense float64 Gram matrix, its inverse and the weights need "
                f"≈ {3 * len(items) ** 2 * 8 / 1e9:.1f} GB at the peak")
        local_of = np.full(run.n_items, -1, dtype=np.int64)
        local_of[items] = np.arange(len(items))
        matrix = self._row_matrix(run, local_of, len(items))
        self.items_, self.local_of_ = items, local_of
        try:
            self.weights_ = ease_weights_from_rows(matrix, self.l2).astype(np.float32)
        except MemoryError:
            raise PeerSkipped(f"EASE skipped: out of memory for {len(items):,} items "
                              f"(≈ {3 * len(items) ** 2 * 8 / 1e9:.1f} GB at the peak); lower "
                              "EASE_MAX_ITEMS") from None
        self.popularity_ = Popularity().fit(run)
        return self

    def _search(self, trigger_indices: np.ndarray, k: int, batch: int = 1024):
        triggers = np.asarray(trigger_indices, dtype=np.int64)
        _, fallback = self.popularity_._search(triggers, k)
        ranked = np.full((len(triggers), k), -1, dtype=np.int64)
        scores = np.full((len(triggers), k), -np.inf, dtype=np.float32)
        local = self.local_of_[triggers]
        n_local = len(self.items_)
        take = min(k, n_local)
        for start in range(0, len(triggers), batch):
            rows = local[start: start + batch]
            positions = start + np.flatnonzero(rows >= 0)
            rows = rows[rows >= 0]
            if len(rows) == 0 or take == 0:
                continue
            weights = self.weights_[rows]  # a copy (fancy indexing)
            weights[weights <= 0] = -np.inf  # only items t helps to reconstruct
            weights[np.arange(len(rows)), rows] = -np.inf  # never the trigger itself
            top = np.argpartition(-weights, take - 1, axis=1)[:, :take]
            values = np.take_along_axis(weights, top, axis=1)
            order = np.lexsort((top, -values), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            values = np.take_along_axis(values, order, axis=1)
            finite = np.isfinite(values)
            ranked[positions, :take] = np.where(finite, self.items_[top], -1)
            scores[positions, :take] = np.where(finite, values, -np.inf)
        short = np.flatnonzero((ranked < 0).any(axis=1))
        for position in short:  # backfill by popularity (cold triggers, few positive weights)
            chosen = ranked[position][ranked[position] >= 0]
            extra = fallback[position][~np.isin(fallback[position], chosen)]
            extra = extra[extra >= 0][: k - len(chosen)]
            ranked[position, len(chosen): len(chosen) + len(extra)] = extra
            scores[position, len(chosen): len(chosen) + len(extra)] = 0.0
        return scores, ranked
