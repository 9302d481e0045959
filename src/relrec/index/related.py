"""The library's entry point for related lists from a trained run.

    model = RelatedItems.load("runs/ml")
    ids, scores = model.similar_items(["1", "260"], k=10)   # batched, like implicit
    scores, indices, notes = model.related(triggers, k=10, alpha=0.3, diversify=True)

Two-head (MTMH) models: ``alpha`` picks the quota merge of the engagement and relevance heads
(:mod:`relrec.index.quota`); without it the model's default α is used, and ``head=`` asks for
one head alone. ``diversify`` re-ranks with the CAViaR model of ``RUN_DIR/rerank/``
(:mod:`relrec.rerank`), page by page.

Candidates are the items with a usable embedding: items seen in training, plus — when the
model has content inputs — every item (cold items through the content path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from relrec.config import RankConfig
from relrec.index.faiss_index import ItemIndex, choose_index_kind
from relrec.model.tower import ItemTower
from relrec.run import RunData


class RelatedItems:
    def __init__(self, run: RunData, embeddings: dict[str, np.ndarray], eligible: np.ndarray,
                 index_kind: str = "exact", multihead: dict | None = None,
                 rank: RankConfig | None = None):
        self.run = run
        # content blend (relrec.rerank.blend): 0 = the model's own order
        self.rank = rank or RankConfig()
        self._blend_content = None
        self.multihead = multihead or {}
        self._reranker = None
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
             model_name: str = "model", content_blend: float | None = None) -> "RelatedItems":
        """``content_blend`` None = the run's ``[rank]`` config (set by ``relrec tune-blend``)."""
        run = RunData(run_dir)
        rank = run.config.rank
        if content_blend is not None:
            rank = rank.model_copy(update={"content_blend": float(content_blend)})
        tower = ItemTower.load(run.run_dir / model_name)
        from relrec.train.content_inputs import attach_content

        attach_content(tower, run)
        from relrec.train.trainer import item_embeddings

        known = run.in_train
        embeddings = {head: item_embeddings(tower, known, head=head)
                      for head in tower.config.heads}
        multihead = {}
        heads_file = run.run_dir / model_name / "multihead.json"
        if heads_file.exists():  # MTMH: unit-vector heads are served by cosine
            import json

            multihead = json.loads(heads_file.read_text())
            for head in multihead.get("normalized_heads", []):
                vectors = embeddings[head]
                embeddings[head] = vectors / np.maximum(
                    np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        has_content = bool(tower.config.text_dim or tower.config.visual_dim)
        eligible = np.ones(run.n_items, dtype=bool) if has_content else known.copy()
        related = cls(run, embeddings, eligible,
                      index_kind or choose_index_kind(int(eligible.sum())),
                      multihead=multihead, rank=rank)
        if rank.content_blend > 0:
            if related.two_heads:
                if content_blend is not None:
                    raise ValueError("the content blend applies to single-head models; a "
                                     "two-head (MTMH) model mixes relevance with --alpha")
                related.rank = rank.model_copy(update={"content_blend": 0.0})
            else:
                related.blend_content()  # missing content fails here, not on a request
        return related

    @property
    def head(self) -> str:
        return self.heads[0]

    @property
    def two_heads(self) -> bool:
        """An MTMH model with an engagement and a relevance head (quota merge available)."""
        return "engagement" in self.indexes and "relevance" in self.indexes

    @property
    def default_alpha(self) -> float:
        return float(self.multihead.get("default_alpha", 0.5))

    def similar_indices(self, trigger_indices: np.ndarray, k: int, head: str | None = None,
                        alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of shape (n, k); the trigger itself is excluded.

        A two-head model without ``head`` returns the quota merge at ``alpha`` (default: the
        model's default α); ``alpha`` is ignored for single-head models (see :meth:`related`).
        """
        trigger_indices = np.asarray(trigger_indices, dtype=np.int64)
        if head is None and self.two_heads:
            from relrec.index.quota import quota_merge

            alpha = self.default_alpha if alpha is None else float(alpha)
            engagement = self.similar_indices(trigger_indices, k, head="engagement")
            relevance = self.similar_indices(trigger_indices, k, head="relevance")
            scores, indices, _, _ = quota_merge(engagement[1], engagement[0], relevance[1],
                                                relevance[0], k, alpha)
            return scores, indices
        blend = self.rank.content_blend if head is None else 0.0
        head = head or self.head
        if blend <= 0:
            return self.indexes[head].search(self.embeddings[head][trigger_indices], k,
                                             exclude=trigger_indices)
        from relrec.rerank.blend import rerank_by_blend

        pool = self.rank.candidate_pool
        scores, candidates = self.indexes[head].search(self.embeddings[head][trigger_indices],
                                                       max(pool, k), exclude=trigger_indices)
        vectors, ok = self.blend_content()
        return rerank_by_blend(scores, candidates, trigger_indices, vectors, ok, blend, k,
                               pool=pool)

    def ranking_metadata(self, head: str | None = None) -> dict[bytes, bytes]:
        """Parquet schema metadata of an export: the ranking it was made with, so a server can
        tell lists made before a `relrec tune-blend` from current ones."""
        import json

        blend = self.rank.content_blend if head is None and not self.two_heads else 0.0
        return {b"relrec_rank": json.dumps(
            self.rank.model_copy(update={"content_blend": blend}).model_dump(mode="json")
        ).encode()}

    def blend_content(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit content vectors of the blend's modalities (loaded once)."""
        if self._blend_content is None:
            from relrec.train.content_inputs import fused_content

            vectors, ok, _ = fused_content(self.run, tuple(self.rank.blend_modalities))
            self._blend_content = (vectors, ok)
        return self._blend_content

    # -- α + CAViaR diversify: the entry point the HTTP service calls ----------------------
    def reranker(self):
        """The CAViaR re-ranker of RUN_DIR/rerank/ (loaded once), or None when absent."""
        if self._reranker is None and self.run is not None:
            from relrec.rerank.model import ContextualReranker, reranker_dir

            if reranker_dir(self.run.run_dir).exists():
                self._reranker = ContextualReranker.load(reranker_dir(self.run.run_dir))
        return self._reranker

    @property
    def related(self):
        """:meth:`related_lists` when α, diversify or a content blend can change anything (two
        heads, a re-ranker in RUN_DIR/rerank, ``rank.content_blend > 0``); None otherwise, so a
        caller that probes for it (the HTTP service) keeps its plain path and its "alpha
        ignored" note for single-head models."""
        override = self.__dict__.get("_related_override")
        if override is not None:
            return override
        if self.two_heads or self.reranker() is not None or self.rank.content_blend > 0:
            return self.related_lists
        return None

    @related.setter
    def related(self, function) -> None:  # a caller may wrap or replace the entry point
        self.__dict__["_related_override"] = function

    def related_lists(self, trigger_indices, k: int, alpha: float | None = None,
                diversify: bool = False, page: int = 1, window: int = 20,
                page_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(scores, indices, notes), shape (n, k). ``alpha``: quota merge of a two-head model
        (ignored with a note otherwise). ``diversify``: CAViaR re-rank of the main ranking,
        ``page_size`` (default k) slots at a time with a search window of ``window``
        candidates; pages 1..``page`` are placed and page ``page`` is returned (``k`` slots of
        it). Scores are then the contextual model's probabilities."""
        notes: list[str] = []
        if alpha is not None and not self.two_heads:
            notes.append("alpha ignored: this model has a single head")
            alpha = None
        if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        trigger_indices = np.asarray(trigger_indices, dtype=np.int64)
        if not diversify:
            scores, indices = self.similar_indices(trigger_indices, k, alpha=alpha)
            return scores, indices, notes
        reranker = self.reranker()
        if reranker is None:
            notes.append("diversify ignored: no re-ranker in RUN_DIR/rerank "
                         "(run `relrec train-reranker`)")
            scores, indices = self.similar_indices(trigger_indices, k, alpha=alpha)
            return scores, indices, notes
        from relrec.rerank.rerank import rerank_pages

        page_size = page_size or k
        depth = page * page_size + window
        main_scores, main_indices = self.similar_indices(trigger_indices, depth, alpha=alpha)
        placed_scores, placed = rerank_pages(reranker, trigger_indices, main_indices,
                                             main_scores, pages=page, page_size=page_size,
                                             window=window)
        start = (page - 1) * page_size
        notes.append(f"diversified: page {page} of size {page_size}, window {window}")
        return (placed_scores[:, start:start + k], placed[:, start:start + k], notes)

    def similar_items(self, item_ids, k: int = 10, head: str | None = None,
                      alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(item_ids), k); ids are strings, '' pads short rows."""
        scores, indices = self.similar_indices(self.run.indices_for_ids(list(item_ids)), k, head,
                                               alpha=alpha)
        ids = np.where(indices >= 0, self.run.item_ids[np.maximum(indices, 0)], "")
        return ids, scores

    def export(self, path: str | Path, k: int, chunk_size: int = 4096, head: str | None = None,
               progress=None, alpha: float | None = None, diversify: bool = False,
               window: int = 20, page_size: int = 10) -> int:
        """Every eligible item's top-k list → Parquet (trigger, item, rank, score), in chunks."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        schema = pa.schema([("trigger", pa.string()), ("item", pa.string()),
                            ("rank", pa.int32()), ("score", pa.float32())],
                           metadata=self.ranking_metadata(head))
        triggers = np.flatnonzero(self.eligible)
        rows = 0
        with pq.ParquetWriter(str(temporary), schema) as writer:
            for start in range(0, len(triggers), chunk_size):
                chunk = triggers[start:start + chunk_size]
                if diversify:  # the first k slots, re-ranked page_size at a time
                    scores, indices = self._diversified_prefix(chunk, k, alpha, window,
                                                               page_size)
                    scores, indices = scores[:, :k], indices[:, :k]
                else:
                    scores, indices = self.similar_indices(chunk, k, head, alpha=alpha)
                valid = indices >= 0
                trigger_ids = np.repeat(self.run.item_ids[chunk], k).reshape(len(chunk), k)
                ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), indices.shape)
                table = pa.table({
                    "trigger": pa.array(trigger_ids[valid].astype(str)),
                    "item": pa.array(self.run.item_ids[indices[valid]].astype(str)),
                    "rank": pa.array(ranks[valid]),
                    "score": pa.array(scores[valid]),
                }, schema=schema)
                writer.write_table(table)
                rows += table.num_rows
                if progress is not None:
                    progress(len(chunk))
        temporary.replace(path)
        return rows

    def _diversified_prefix(self, triggers, k, alpha, window, page_size):
        from relrec.rerank.rerank import rerank_pages

        if self.reranker() is None:
            raise FileNotFoundError(f"{self.run.run_dir}/rerank: no re-ranker; run "
                                    "`relrec train-reranker` first")
        pages = -(-k // page_size)
        main_scores, main_indices = self.similar_indices(triggers, pages * page_size + window,
                                                         alpha=alpha)
        return rerank_pages(self.reranker(), np.asarray(triggers), main_indices, main_scores,
                            pages=pages, page_size=page_size, window=window)

    def describe(self, item_ids, k: int = 10, head: str | None = None,
                 alpha: float | None = None) -> pd.DataFrame:
        ids, scores = self.similar_items(item_ids, k, head, alpha=alpha)
        titles = self.run.items.set_index("item_id")["title"]
        records = []
        for trigger, row_ids, row_scores in zip(item_ids, ids, scores):
            for rank, (item, score) in enumerate(zip(row_ids, row_scores), start=1):
                if item:
                    records.append({"trigger": trigger, "rank": rank, "item": item,
                                    "title": titles.get(item, ""), "score": float(score)})
        return pd.DataFrame(records)
