"""What the service computes: related lists with request-time filters and reasons.

:class:`ServedModel` wraps one loaded bundle (a :class:`~relrec.RelatedItems` built from a
staged, verified snapshot): it refuses broken weights (NaN/inf embeddings or tower), loads
the training pairs and text vectors the reasons read, and every ranking goes through
:class:`~relrec.RelatedItems` (``_search``: α on two-head models, CAViaR ``diversify``, the
run's content blend). On top it adds:

* request-time filters (exclude ids, a blocklist, unavailable items): the index is asked for
  enough extra rows, then one vectorised mask (:func:`relrec.index.base.drop_filtered`);
* precomputed mode: each exported trigger's list body is built once as JSON bytes
  (:class:`relrec.serve.render.PrecomputedBodies`) and answers unfiltered, default-option
  requests with a lookup and a slice; everything else takes the index path;
* sessions (several triggers) and a new item's metadata (``by-content``) ranked over the
  index, with the items added at run time merged in by score;
* reasons per recommended item, vectorised over (rows × k): shared topics (display only —
  topics never rank anything), text similarity, co-engagement count in the training pairs.

Elsewhere: the ids, titles, topics and images a response shows are
:class:`relrec.serve.catalogue.Catalogue` (``ServedModel.catalogue``, which the routes
query directly); the items added at run time (``POST /admin/items``), the text encoder and the
content path of a new item's metadata are :class:`relrec.serve.runtime_items.RuntimeItemsMixin`;
a refused request is :class:`relrec.serve.errors.ServeError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from relrec.index.base import drop_filtered
from relrec.related import RelatedItems
from relrec.rerank.lists import BLEND_FIELDS
from relrec.serve.bundle import BundleError, StagedBundle
from relrec.serve.catalogue import Catalogue
from relrec.serve.reasons import co_engagement, load_pair_counts, text_similarity
from relrec.serve.render import (
    ENTRY,
    SCORE_DIGITS,
    SIMILARITY_DIGITS,
    PrecomputedBodies,
    dumps,
    rounded_text,
)
from relrec.serve.runtime_items import RuntimeItemsMixin, default_text_encoder, unit_vectors
from relrec.serve.validation import validated_lists

log = logging.getLogger("relrec.serve")


@dataclass
class Ranked:
    """Lists of one request: (rows, k) item indices (-1 pads) and scores, the mode, notes."""
    indices: np.ndarray
    scores: np.ndarray
    mode: str
    notes: list[str]

    def row(self, r: int = 0) -> tuple[np.ndarray, np.ndarray]:
        keep = self.indices[r] >= 0
        return self.indices[r][keep], self.scores[r][keep]


class ServedModel(RuntimeItemsMixin):
    """One loaded bundle served: rankings, filters, precomputed bodies, reasons. What a
    response shows about an item is ``catalogue`` (:class:`Catalogue`); the run-time items
    and the content path come from :class:`RuntimeItemsMixin`."""

    def __init__(self, name: str, staged: StagedBundle, *, image_root: Path | None,
                 text_encoder_factory: Callable[[str], object] = default_text_encoder,
                 cache_dir: Path | None = None, index_kind: str | None = None,
                 max_precomputed_k: int = 1000):
        self.name = name
        self.staged = staged
        self.version = staged.version
        self.max_precomputed_k = max_precomputed_k
        self.related = RelatedItems.load(staged.path, index_kind=index_kind)
        self.run = self.related.run
        self.source = staged.source
        self._check_finite_embeddings()
        self.tower = self._checked_tower()
        self.n_items = self.run.n_items
        self._init_runtime_items(text_encoder_factory, cache_dir)
        self.main_head = self.related.head
        self.embeddings = self.related.embeddings[self.main_head]
        self.eligible = self.related.eligible
        self.n_eligible = int(self.eligible.sum())
        self._load_pairs()
        self._load_text_vectors()
        self.catalogue = Catalogue(name, self.related, image_root=image_root)
        self.precomputed_note: str | None = None
        self.bodies: PrecomputedBodies | None = None
        self._load_precomputed()
        self.has_reranker = self.related.has_reranker  # the staged copy's rerank/

    # -- loading ---------------------------------------------------------------------------
    def _check_finite_embeddings(self) -> None:
        """NaN / inf embeddings (broken weights) would be served as empty lists: refused."""
        for head, vectors in self.related.embeddings.items():
            bad = ~np.isfinite(vectors).all(axis=1)
            if bad.any():
                first = str(self.run.item_ids[int(np.flatnonzero(bad)[0])])
                raise BundleError(
                    f"{self.source}: the model gives non-finite embeddings (NaN/inf) for "
                    f"{int(bad.sum())} of {len(bad)} items (head {head!r}, e.g. item "
                    f"{first!r}): its weights are broken; retrain the run")

    def _checked_tower(self):
        """The tower RelatedItems loaded (content attached), refused with NaN/inf weights."""
        tower = self.related.tower_
        broken = [name for name, tensor in tower.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:
            raise BundleError(f"{self.source}: model weights hold non-finite values (NaN/inf) "
                              f"in {', '.join(broken[:3])}: retrain the run")
        tower.eval()
        return tower

    def _load_pairs(self) -> None:
        self.pair_keys, self.pair_counts = load_pair_counts(
            self.staged.path / "pairs" / "train_pairs.parquet", self.n_items)

    def _load_text_vectors(self) -> None:
        self.text_vectors = None
        self.text_ok = None
        path = self.staged.path / "content" / "text.npy"
        if path.is_file():
            self.text_vectors = unit_vectors(np.load(path, allow_pickle=False))
            ok_path = self.staged.path / "content" / "text_ok.npy"
            self.text_ok = (np.load(ok_path, allow_pickle=False).astype(bool) if ok_path.is_file()
                            else np.ones(self.n_items, bool))

    def _load_precomputed(self) -> None:
        self.pre_indices = None
        self.pre_k = 0
        if self.staged.precomputed is None:
            return
        import pyarrow.parquet as pq

        metadata = pq.read_schema(self.staged.precomputed).metadata or {}
        made_with = json.loads(metadata.get(b"relrec_rank", b'{"content_blend": 0.0}'))
        made = {name: float(made_with.get(name, 0.0)) for name in BLEND_FIELDS}
        current = {name: float(getattr(self.related.rank, name)) for name in BLEND_FIELDS}
        if made != current and not self.two_heads:
            # exported before (or after) a `relrec tune-blend` / `--preset auto`: serving them
            # would mix rankings
            log.warning("%s: precomputed lists were made with blend %s, the run ranks with %s:"
                        " ignored (export again)", self.name, made, current)
            self.precomputed_note = ("precomputed lists ignored: made with another blend; "
                                     "export again")
            return
        frame = pd.read_parquet(self.staged.precomputed,
                                columns=["trigger", "item", "rank", "score"])
        trigger, item, rank, score = validated_lists(frame, self.run.item_ids,
                                                     self.max_precomputed_k)
        k = int(rank.max()) if len(rank) else 0
        indices = np.full((self.n_items, k), -1, np.int64)
        scores = np.full((self.n_items, k), -np.inf, np.float32)
        indices[trigger, rank - 1] = item
        scores[trigger, rank - 1] = score
        self.pre_indices, self.pre_scores, self.pre_k = indices, scores, k
        self.pre_has = np.zeros(self.n_items, bool)
        self.pre_has[trigger] = True
        self.pre_length = (indices >= 0).sum(axis=1)
        self.bodies = self._precomputed_bodies()
        log.info("%s: precomputed lists for %d items (K=%d)", self.name, int(self.pre_has.sum()), k)

    # -- info ------------------------------------------------------------------------------
    @property
    def heads(self) -> list[str]:
        return list(self.related.heads)

    @property
    def two_heads(self) -> bool:
        return len(self.heads) > 1

    def info(self) -> dict:
        config = self.tower.config
        # the preset training recorded (manifest "train"), not prepare's default config
        trained = self.run.manifest.get("train") or {}
        preset = (trained.get("train_config") or {}).get("preset") or trained.get("preset")
        return {"name": self.name, "version": self.version,
                "run_name": self.source.name,  # never an absolute path
                "preset": preset, "heads": self.heads,
                "two_heads": self.two_heads, "n_items": self.n_items,
                "n_candidates": self.n_eligible + len(self.extras),
                "n_added_items": len(self.extras),
                "precomputed_k": self.pre_k, "precomputed_note": self.precomputed_note,
                "text_input": bool(config.text_dim), "visual_input": bool(config.visual_dim),
                "reranker": self.has_reranker}

    # -- reasons ---------------------------------------------------------------------------
    def _text_rows(self, indices: np.ndarray, dim: int | None = None):
        """(vectors, ok) of ``indices`` (catalogue or run-time items, -1 pads), shaped
        ``indices.shape + (dim,)``; None when no text vectors are known."""
        extras = self.extras
        if dim is None:
            dim = self.text_vectors.shape[1] if self.text_vectors is not None else (
                extras.text.shape[1] if extras.text is not None and len(extras) else None)
        if dim is None:
            return None
        flat = indices.ravel()
        vectors = np.zeros((len(flat), dim), np.float32)
        ok = np.zeros(len(flat), bool)
        catalogue = (flat >= 0) & (flat < self.n_items)
        if self.text_vectors is not None and self.text_vectors.shape[1] == dim:
            vectors[catalogue] = self.text_vectors[flat[catalogue]]
            ok[catalogue] = self.text_ok[flat[catalogue]]
        added = flat >= self.n_items
        if added.any() and extras.text is not None and extras.text.shape[1] == dim:
            vectors[added] = extras.text[flat[added] - self.n_items]
            ok[added] = True
        return vectors.reshape(indices.shape + (dim,)), ok.reshape(indices.shape)

    def _co_engagement(self, triggers: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return co_engagement(self.pair_keys, self.pair_counts, self.n_items, triggers, indices)

    def _text_similarity(self, triggers, indices, trigger_text):
        candidates = self._text_rows(indices)
        trigger_rows = None if candidates is None or not triggers.shape[1] else \
            self._text_rows(triggers, candidates[0].shape[-1])
        return text_similarity(candidates, trigger_rows, trigger_text, indices.shape)

    def entries(self, triggers, indices, scores, trigger_text=None, trigger_topics=None
                ) -> list[bytes]:
        """Each row's entries joined by commas (see :meth:`entry_rows`)."""
        return [b",".join(parts) for parts in self.entry_rows(triggers, indices, scores,
                                                               trigger_text, trigger_topics)]

    def entry_rows(self, triggers: np.ndarray, indices: np.ndarray, scores: np.ndarray,
                   trigger_text: np.ndarray | None = None,
                   trigger_topics: list[str] | None = None) -> list[list[bytes]]:
        """Each row's entries as JSON fragments: rank, score, the
        item's fields and its reasons, computed for the whole (rows, k) grid at once.
        ``triggers`` (rows, t) with -1 pads; reasons are display only (never rank)."""
        triggers = np.asarray(triggers, np.int64).reshape(len(indices), -1)
        co = self._co_engagement(triggers, indices)
        similarity, has_similarity = self._text_similarity(triggers, indices, trigger_text)
        catalogue = self.catalogue
        masks = catalogue.topic_masks
        item_masks, json_list, fragment = masks.masks, masks.json_list, catalogue.fragment
        n = self.n_items
        extra_mask = masks.mask(trigger_topics) if trigger_topics else 0
        # the numbers of the whole grid as their JSON text at once (per-entry work is then
        # only lookups and one format)
        score_text = [[rounded_text(value, SCORE_DIGITS) for value in row]
                      for row in scores.tolist()]
        similarity_text = [[rounded_text(value, SIMILARITY_DIGITS) if has else b"null"
                            for value, has in zip(row, row_has)]
                           for row, row_has in zip(similarity.tolist(), has_similarity.tolist())]
        out = []
        for r, (row, row_co) in enumerate(zip(indices.tolist(), co.tolist())):
            union = extra_mask
            for t in triggers[r].tolist():
                if t >= 0:
                    union |= item_masks[t] if t < n else masks.mask(catalogue.item_topics(t))
            row_scores, row_similarity, parts = score_text[r], similarity_text[r], []
            for j, index in enumerate(row):
                if index < 0:
                    break
                mask = item_masks[index] if index < n else masks.mask(catalogue.item_topics(index))
                parts.append(ENTRY % (j + 1, row_scores[j], fragment(index),
                                      json_list(mask & union), row_similarity[j], row_co[j]))
            out.append(parts)
        return out

    def _precomputed_bodies(self, chunk: int = 256) -> PrecomputedBodies:
        """Every exported trigger's list body, built once (see docs/SERVING.md)."""
        heads: list[bytes | None] = [None] * self.n_items
        blobs: list[bytes] = [b""] * self.n_items
        ends: list[np.ndarray] = [np.zeros(1, np.int64)] * self.n_items
        rows = np.flatnonzero(self.pre_has)
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            part_rows = self.entry_rows(part[:, None], self.pre_indices[part],
                                        self.pre_scores[part])
            for trigger, parts in zip(part.tolist(), part_rows):
                blob = b",".join(parts)
                # entries[:j] end at sum of their lengths plus j - 1 commas
                end = np.concatenate([[0], np.cumsum([len(x) + 1 for x in parts]) - 1]
                                     ).astype(np.int64)
                heads[trigger] = dumps({"item_id": self.catalogue.item_ids[trigger],
                                        "title": str(self.catalogue.titles[trigger]),
                                        "run": self.name,
                                        "model_version": self.version,
                                        "mode": "precomputed"})[:-1]
                blobs[trigger], ends[trigger] = blob, end
        return PrecomputedBodies(heads, blobs, ends, self.pre_length, self.pre_k)

    def precomputed_body(self, trigger: int, k: int) -> bytes | None:
        """The ready body of an unfiltered, default-option list, or None (index path)."""
        if self.bodies is None or trigger >= self.n_items or len(self.extras):
            return None
        return self.bodies.body(trigger, k)

    # -- ranking ---------------------------------------------------------------------------
    def _trigger_embeddings(self, triggers: np.ndarray) -> np.ndarray:
        out = np.zeros((len(triggers), self.embeddings.shape[1]), np.float32)
        catalogue = triggers < self.n_items
        out[catalogue] = self.embeddings[triggers[catalogue]]
        if (~catalogue).any():
            out[~catalogue] = self.extras.embeddings[triggers[~catalogue] - self.n_items]
        return out


    def _fetch(self, k: int, banned: np.ndarray) -> int:
        return max(1, min(k + len(banned), self.n_eligible))

    def rank_rows(self, triggers, k: int, *, banned: np.ndarray, alpha: float | None = None,
                  diversify: bool = False) -> Ranked:
        """One list per trigger (a batch), through :meth:`RelatedItems._search` for catalogue
        triggers and by embedding for run-time ones; ``banned`` (item indices) removed with
        one vectorised mask (:func:`relrec.index.base.drop_filtered`)."""
        triggers = np.asarray(triggers, np.int64)
        related = self.related
        notes = related.query_notes(alpha, False)
        alpha = alpha if related.two_heads else None
        fetch = self._fetch(k, banned)
        model_scores_only = (related.blends and not related.two_heads and len(self.extras)
                             and not diversify)
        if model_scores_only:
            # run-time items have model scores only; a blended list could not place them
            notes.append("blend not applied: items added at run time are ranked by "
                         "the model score")
        catalogue = triggers < self.n_items
        if not len(banned) and not len(self.extras) and catalogue.all() and not \
                model_scores_only:  # the common case: the model's own lists, nothing to mask
            scores, indices = related._search(triggers, k, alpha=alpha, diversify=diversify)
            if diversify:
                notes.append(f"diversified: page 1 of size {k}, window 20")
            return Ranked(np.asarray(indices), np.asarray(scores, np.float32), "index", notes)
        scores = np.full((len(triggers), fetch), -np.inf, np.float32)
        indices = np.full((len(triggers), fetch), -1, np.int64)
        if catalogue.any():
            rows = triggers[catalogue]
            if model_scores_only:
                found_s, found_i = related._head_search(rows, fetch, self.main_head)
            else:
                found_s, found_i = related._search(rows, fetch, alpha=alpha,
                                                   diversify=diversify)
            found_s, found_i = np.asarray(found_s), np.asarray(found_i)
            width = min(fetch, found_i.shape[1])
            scores[catalogue, :width], indices[catalogue, :width] = found_s[:, :width], \
                found_i[:, :width]
            if diversify:
                notes.append(f"diversified: page 1 of size {fetch}, window 20")
        if (~catalogue).any():
            queries = self._trigger_embeddings(triggers[~catalogue])
            found_s, found_i = related.indexes[self.main_head].search(queries, fetch)
            scores[~catalogue], indices[~catalogue] = found_s, found_i
        if len(self.extras):
            scores, indices = self._merge_extras(self._trigger_embeddings(triggers), scores,
                                                 indices, own=triggers)
        scores, indices = drop_filtered(scores, indices, banned, k)
        return Ranked(indices, scores, "index", notes)

    def rank(self, triggers: list[int], k: int, *, banned: np.ndarray,
             alpha: float | None = None, diversify: bool = False) -> Ranked:
        """One list for one trigger, or a session of triggers (most recent last): the session's
        query is the recency-weighted mean of its items' embeddings (main head)."""
        if len(triggers) == 1:
            return self.rank_rows(triggers, k, banned=banned, alpha=alpha, diversify=diversify)
        notes = []
        if alpha is not None or diversify:
            notes.append("alpha and diversify apply to one trigger; a session is ranked by "
                         "its items' mean embedding")
        session = np.asarray(triggers, np.int64)
        banned = np.union1d(banned, session)
        weights = 0.5 ** np.arange(len(session) - 1, -1, -1, dtype=np.float32)
        query = unit_vectors((weights[:, None] * self._trigger_embeddings(session)).sum(axis=0))
        scores, indices = self.related.indexes[self.main_head].search(query[None, :],
                                                                      self._fetch(k, banned))
        scores, indices = self._merge_extras(query[None, :], scores, indices)
        scores, indices = drop_filtered(scores, indices, banned, k)
        return Ranked(indices, scores, "index", notes)

    def rank_content(self, record: dict, k: int, banned: np.ndarray
                     ) -> tuple[Ranked, np.ndarray]:
        """(the list, the new item's text vector) of a new item's metadata."""
        embedding, text, path = self.content_vector(record)
        if path == "tower":
            fetch = self._fetch(k, banned)
            scores, indices = self.related.indexes[self.main_head].search(embedding[None, :],
                                                                          fetch)
            scores, indices = self._merge_extras(embedding[None, :], scores, indices)
        else:  # content kNN over the catalogue's text vectors (the model has no text input)
            vectors, ok = self.catalogue_text()
            similarity = np.where(ok, vectors @ text, -np.inf).astype(np.float32)
            fetch = min(k + len(banned), self.n_items)
            top = np.argpartition(-similarity, fetch - 1)[:fetch] if fetch < self.n_items else \
                np.arange(self.n_items)
            top = top[np.argsort(-similarity[top], kind="stable")]
            top = np.where(np.isfinite(similarity[top]), top, -1)
            scores, indices = similarity[top][None, :], top[None, :]
        scores, indices = drop_filtered(scores, indices, banned, k)
        return Ranked(indices, scores, path, []), text

