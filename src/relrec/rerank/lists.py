"""The ranking engine behind :class:`relrec.related.RelatedItems`: a trained run's item
embeddings, their FAISS indexes, and the orderings built on them.

Two-head (MTMH) models: ``alpha`` picks the quota merge of the engagement and relevance heads
(:mod:`relrec.rerank.quota`; 1 = engagement alone, 0 = relevance alone); without it the model's
default α is used. ``diversify`` re-ranks with the CAViaR model of ``RUN_DIR/rerank/``
(:mod:`relrec.rerank.rerank`), page by page. A single-head model may blend content similarity
(``[rank] content_blend``, :mod:`relrec.rerank.blend`) and the EASE weights of its model folder's
neighbour table (``[rank] ease_blend``, :mod:`relrec.rerank.neighbours`) into its order.

Candidates are the items with a usable embedding: items seen in training, plus — when the
model has content inputs — every item (cold items through the content path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from relrec.config import RankConfig
from relrec.content.store import fused_content, required_content
from relrec.index.base import SimilarItemsModel
from relrec.index.faiss_index import ItemIndex, choose_index_kind
from relrec.model.tower import KNOWN_ITEMS, ItemTower
from relrec.rerank.blend import (BLOCK_TRIGGERS, Signal, content_signal, order_by_blend,
                                 rerank_by_blend)
from relrec.rerank.model import ContextualReranker, reranker_dir
from relrec.rerank.neighbours import NeighbourWeights
from relrec.rerank.quota import quota_merge
from relrec.rerank.rerank import rerank_pages
from relrec.run import RunData
from relrec.vectors import l2_normalize

#: the [rank] weights that re-rank a single head's candidate pool
BLEND_FIELDS = ("content_blend", "ease_blend")


class RankedLists(SimilarItemsModel):
    """Item embeddings per head, their indexes, and the orderings built on them."""

    def __init__(self, run: RunData, embeddings: dict[str, np.ndarray], eligible: np.ndarray,
                 index_kind: str = "exact", multihead: dict | None = None,
                 rank: RankConfig | None = None):
        self.run = run
        self.item_ids_ = np.asarray(run.item_ids, dtype=object)
        # content blend (relrec.rerank.blend): 0 = the model's own order
        self.rank = rank or RankConfig()
        self._blend_content = None
        self.neighbours: NeighbourWeights | None = None  # for [rank] ease_blend
        self.model_dir: Path | None = None
        self.multihead = multihead or {}
        self._reranker = None
        self._reranker_loaded = False
        self.embeddings = embeddings  # head name -> (n_items, dim)
        self.eligible = eligible
        self.heads = list(embeddings)
        self.indexes = {}
        for head, vectors in embeddings.items():
            # IVF-PQ alone caps recall near 0.85 (BENCHMARKS.md): re-rank with 8-bit codes
            index = ItemIndex(vectors.shape[1], kind=index_kind,
                              refine="sq8" if index_kind == "ivfpq" else None)
            index.add(vectors[eligible], np.flatnonzero(eligible))
            self.indexes[head] = index

    @classmethod
    def load(cls, run_dir: str | Path, index_kind: str | None = None,
             model_name: str = "model", content_blend: float | None = None,
             ease_blend: float | None = None):
        """A trained run's lists. ``content_blend`` / ``ease_blend`` None = the run's
        ``[rank]`` config (set by ``relrec tune-blend`` or ``--preset auto``); a number
        overrides it for this object."""
        run = RunData(run_dir)
        rank = run.config.rank
        overrides = {name: float(value) for name, value in
                     (("content_blend", content_blend), ("ease_blend", ease_blend))
                     if value is not None}
        rank = rank.model_copy(update=overrides)
        tower = ItemTower.load(run.run_dir / model_name)
        tower.attach_content(required_content(run, tower.content_modalities))
        # the items whose ID rows the model trained (a refit on more periods knows more than
        # the run's training period); older models did not record it
        known_path = run.run_dir / model_name / KNOWN_ITEMS
        known = (np.load(known_path, allow_pickle=False).astype(bool) if known_path.exists()
                 else run.in_train)
        embeddings = {head: tower.item_embeddings(known, head=head)
                      for head in tower.config.heads}
        multihead = {}
        heads_file = run.run_dir / model_name / "multihead.json"
        if heads_file.exists():  # MTMH: unit-vector heads are served by cosine
            multihead = json.loads(heads_file.read_text())
            for head in multihead.get("normalized_heads", []):
                embeddings[head] = l2_normalize(embeddings[head]).astype(np.float32)
        has_content = bool(tower.content_modalities)
        eligible = np.ones(run.n_items, dtype=bool) if has_content else known.copy()
        lists = cls(run, embeddings, eligible,
                    index_kind or choose_index_kind(int(eligible.sum())),
                    multihead=multihead, rank=rank)
        lists.tower_ = tower
        lists.model_dir = run.run_dir / model_name
        if lists.two_heads and lists.blends:
            if any(value > 0 for value in overrides.values()):
                raise ValueError("blends apply to single-head models; a two-head (MTMH) model "
                                 "mixes relevance with alpha")
            lists.rank = rank.model_copy(update=dict.fromkeys(BLEND_FIELDS, 0.0))
        # missing content or a missing neighbour table fails here, not on a request
        lists.blend_signals()
        return lists

    @property
    def head(self) -> str:
        return self.heads[0]

    @property
    def two_heads(self) -> bool:
        """An MTMH model with an engagement and a relevance head (quota merge available)."""
        return "engagement" in self.indexes and "relevance" in self.indexes

    @property
    def blends(self) -> bool:
        """Whether the single-head order is re-ranked by a blend (content and/or EASE)."""
        return any(getattr(self.rank, name) > 0 for name in BLEND_FIELDS)

    @property
    def default_alpha(self) -> float:
        return float(self.multihead.get("default_alpha", 0.5))

    @property
    def has_reranker(self) -> bool:
        return self.reranker() is not None

    def query_notes(self, alpha: float | None = None, diversify: bool = False) -> list[str]:
        """What a query's options change on this model, in words (for the CLI and service)."""
        notes = []
        if alpha is not None and not self.two_heads:
            notes.append("alpha ignored: this model has a single head")
        if diversify and not self.has_reranker:
            notes.append("diversify unavailable: no re-ranker in RUN_DIR/rerank "
                         "(run `relrec train-reranker`)")
        return notes

    # -- searching --------------------------------------------------------------------------
    def _head_search(self, triggers: np.ndarray, k: int, head: str,
                     blend: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One head's lists; ``blend`` re-ranks its candidate pool by the run's blend
        (:meth:`blend_signals`)."""
        signals = self.blend_signals() if blend else []
        if not signals:
            return self.indexes[head].search(self.embeddings[head][triggers], k,
                                             exclude=triggers)
        pool = self.rank.candidate_pool
        scores, candidates = self.indexes[head].search(self.embeddings[head][triggers],
                                                       max(pool, k), exclude=triggers)
        return rerank_by_blend(scores, candidates, triggers, signals, k, pool=pool)

    def _main_search(self, triggers: np.ndarray, k: int, alpha: float | None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The model's own order: the quota merge of two heads at ``alpha``, or the single
        head (with the run's content blend)."""
        if self.two_heads:
            alpha = self.default_alpha if alpha is None else float(alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {alpha}")
            engagement = self._head_search(triggers, k, "engagement")
            relevance = self._head_search(triggers, k, "relevance")
            scores, indices, _, _ = quota_merge(engagement[1], engagement[0], relevance[1],
                                                relevance[0], k, alpha)
            return scores, indices
        return self._head_search(triggers, k, self.head, blend=True)

    def _search(self, trigger_indices, k: int, *, alpha: float | None = None,
                diversify: bool = False, page: int = 0, window: int = 20,
                page_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``alpha``: quota merge of a two-head model (ignored for one head, see
        :meth:`query_notes`). ``diversify``: CAViaR re-rank of the main ranking,
        ``page_size`` (default k) slots at a time with a search window of ``window``
        candidates; the k slots from page ``page`` (0-based) on are returned, every page before
        them placed first. Scores are then the contextual model's probabilities."""
        triggers = np.asarray(trigger_indices, dtype=np.int64)
        if page < 0:
            raise ValueError(f"page must be >= 0, got {page}")
        if not diversify:
            return self._main_search(triggers, k, alpha)
        reranker = self.reranker()
        if reranker is None:
            raise ValueError(f"{getattr(self.run, 'run_dir', 'this model')}: diversify needs "
                             "a re-ranker in RUN_DIR/rerank; run `relrec train-reranker`")
        page_size = page_size or k
        pages = page + -(-k // page_size)  # enough pages for k slots from page `page` on
        main_scores, main_indices = self._main_search(triggers, pages * page_size + window,
                                                      alpha)
        placed_scores, placed = rerank_pages(reranker, triggers, main_indices, main_scores,
                                             pages=pages, page_size=page_size, window=window)
        start = page * page_size
        return placed_scores[:, start:start + k], placed[:, start:start + k]

    def blend_content(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit content vectors of the blend's modalities (loaded once)."""
        if self._blend_content is None:
            vectors, ok, _ = fused_content(self.run, tuple(self.rank.blend_modalities))
            self._blend_content = (vectors, ok)
        return self._blend_content

    def blend_signals(self) -> list[Signal]:
        """The signals blended into a single-head order, with their weights (none for a
        two-head model or an unblended rank)."""
        if self.two_heads:
            return []
        signals = []
        if self.rank.content_blend > 0:
            signals.append((content_signal(*self.blend_content()), self.rank.content_blend))
        if self.rank.ease_blend > 0:
            if self.neighbours is None:
                if self.model_dir is None:
                    raise ValueError("ease_blend needs a neighbour table: attach one to "
                                     "`.neighbours` or load the model from its run")
                self.neighbours = NeighbourWeights.load(self.model_dir)
            signals.append((self.neighbours.lookup, self.rank.ease_blend))
        return signals

    def reranker(self) -> ContextualReranker | None:
        """The CAViaR re-ranker of RUN_DIR/rerank/ (loaded once), or None when absent."""
        if not self._reranker_loaded:
            self._reranker_loaded = True
            run_dir = getattr(self.run, "run_dir", None)
            if run_dir is not None and reranker_dir(run_dir).exists():
                self._reranker = ContextualReranker.load(reranker_dir(run_dir))
        return self._reranker

    def ranking_metadata(self) -> dict[bytes, bytes]:
        """Parquet schema metadata of an export: the ranking it was made with, so a server can
        tell lists made before a `relrec tune-blend` from current ones."""
        blends = dict.fromkeys(BLEND_FIELDS, 0.0) if self.two_heads else {}
        return {b"relrec_rank": json.dumps(
            self.rank.model_copy(update=blends).model_dump(mode="json")).encode()}


class BlendGrid(SimilarItemsModel):
    """A single-head model's lists under any blend weights, for choosing them on validation
    (``--preset auto``): the candidate pool and each signal's values are computed once per
    trigger set, so another weight costs a sort rather than a search. ``weights`` (the
    :data:`BLEND_FIELDS`) rank exactly as :class:`RankedLists` does with those ``[rank]``
    weights; the content signal uses ``lists.rank.blend_modalities``, the EASE signal
    ``lists.neighbours``."""

    CACHED_TRIGGER_SETS = 4  # evaluate_system asks for a few segments' trigger sets

    def __init__(self, lists: RankedLists):
        if lists.two_heads:
            raise ValueError("blend weights apply to single-head models")
        self.lists = lists
        self.item_ids_ = lists.item_ids_
        self.weights = dict.fromkeys(BLEND_FIELDS, 0.0)
        self._pools: dict = {}

    def _lookup(self, name: str) -> Signal:
        if name == "content_blend":
            return content_signal(*self.lists.blend_content())
        if self.lists.neighbours is None:
            raise ValueError("ease_blend needs a neighbour table on `lists.neighbours`")
        return self.lists.neighbours.lookup

    def _search(self, trigger_indices, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        triggers = np.asarray(trigger_indices, dtype=np.int64)
        if not len(triggers):
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        pool = self.lists.rank.candidate_pool
        key = (triggers.tobytes(), max(pool, k))
        if key not in self._pools:
            if len(self._pools) >= self.CACHED_TRIGGER_SETS:
                self._pools.clear()
            scores, candidates = self.lists._head_search(triggers, max(pool, k),
                                                         self.lists.head)
            self._pools[key] = (scores, candidates, {})
        scores, candidates, values = self._pools[key]
        terms = []
        for name, weight in self.weights.items():
            if weight == 0:
                continue
            if name not in values:  # looked up in blocks: the content gather is T × pool × d
                lookup = self._lookup(name)
                blocks = [lookup(triggers[start:start + BLOCK_TRIGGERS],
                                 candidates[start:start + BLOCK_TRIGGERS, :pool])
                          for start in range(0, len(triggers), BLOCK_TRIGGERS)]
                values[name] = (np.concatenate([b[0] for b in blocks]),
                                np.concatenate([b[1] for b in blocks]))
            terms.append((*values[name], weight))
        if not terms:
            return scores[:, :k], candidates[:, :k]
        return order_by_blend(scores, candidates, terms, k, min(pool, candidates.shape[1]))
