"""Items → per-modality content vectors (text, visual), through the embedding cache."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from relrec.content.cache import EmbeddingCache, content_hash_file, content_hash_text
from relrec.content.image_models import get_image_encoder
from relrec.content.text import TextEncoder, clean_field, item_text
from relrec.content.video import encode_videos
from relrec.errors import RelrecError

log = logging.getLogger("relrec.content")

MODALITIES = ("text", "visual")


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def embed_text(items: pd.DataFrame, content_config, cache: EmbeddingCache, *,
               progress: bool = True, device: str | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    texts = item_text(items)
    encoder = TextEncoder(content_config.text_model, batch_size=content_config.batch_size,
                          device=device or _auto_device())
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32), np.zeros(0, dtype=bool)

    def compute(positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        vectors = encoder.encode([texts[i] for i in positions], progress=progress)
        return vectors, np.ones(len(positions), dtype=bool)

    keys = [content_hash_text(text) for text in texts]
    return cache.get_or_compute(keys, encoder.model_id, compute)


def embed_visual(items: pd.DataFrame, content_config, cache: EmbeddingCache, *,
                 progress: bool = True, device: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per item: its ``image`` if present, else frames of its ``video``, else ok=False."""
    n = len(items)
    images = items["image"].tolist() if "image" in items.columns else [None] * n
    videos = items["video"].tolist() if "video" in items.columns else [None] * n
    n_frames = int(content_config.frames_per_video)
    encoder = get_image_encoder(content_config.image_model, device=device or _auto_device())

    sources: list[tuple[str, str] | None] = []
    for image, video in zip(images, videos):
        if clean_field(image):
            sources.append(("image", str(image)))
        elif clean_field(video):
            sources.append(("video", str(video)))
        else:
            sources.append(None)
    with_source = [row for row, source in enumerate(sources) if source is not None]
    if not with_source:
        try:
            dim = encoder.dim
        except RelrecError:
            dim = 0
        log.info("no item has an image or a video: the visual modality has no data")
        return np.zeros((n, dim), dtype=np.float32), np.zeros(n, dtype=bool)

    keys = []
    for row in with_source:
        kind, path = sources[row]
        digest = content_hash_file(path)
        keys.append(f"image:{digest}" if kind == "image" else f"video{n_frames}:{digest}")

    def compute(positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(positions), encoder.dim), dtype=np.float32)
        ok = np.zeros(len(positions), dtype=bool)
        image_at = [i for i, p in enumerate(positions) if sources[with_source[p]][0] == "image"]
        video_at = [i for i, p in enumerate(positions) if sources[with_source[p]][0] == "video"]
        if image_at:
            paths = [sources[with_source[positions[i]]][1] for i in image_at]
            vectors[image_at], ok[image_at] = encoder.encode_images(paths, progress=progress)
        if video_at:
            paths = [sources[with_source[positions[i]]][1] for i in video_at]
            vectors[video_at], ok[video_at] = encode_videos(encoder, paths, n_frames,
                                                            progress=progress)
        return vectors, ok

    found, found_ok = cache.get_or_compute(keys, encoder.model_id, compute)
    vectors = np.zeros((n, found.shape[1]), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    vectors[with_source] = found
    ok[with_source] = found_ok
    return vectors, ok


def embed_items(items: pd.DataFrame, content_config, *, modalities=MODALITIES,
                progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{modality: (vectors float32 (n_items, dim), ok bool (n_items,))}``, rows aligned with
    ``items``.

    * ``"text"``: :class:`TextEncoder` over :func:`item_text` (title, description, tags —
      never topics).
    * ``"visual"``: an item's ``image`` if present, else frames sampled from its ``video``;
      items with neither (or whose file is unreadable) get ok=False and a zero row — the model
      learns a default vector for them. A modality with no usable row at all comes back with
      ``ok`` all False so the caller can drop it with a manifest note.

    Vectors come from the shared :class:`EmbeddingCache` (``content_config.cache_dir``), so
    only new or changed items are embedded.
    """
    cache = EmbeddingCache(content_config.cache_dir)
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for modality in modalities:
        if modality == "text":
            results["text"] = embed_text(items, content_config, cache, progress=progress)
        elif modality == "visual":
            results["visual"] = embed_visual(items, content_config, cache, progress=progress)
        else:
            raise ValueError(f"unknown modality '{modality}' (expected one of {MODALITIES})")
        vectors, ok = results[modality]
        log.info("%s: %d of %d items have content vectors (%d-d)", modality, int(ok.sum()),
                 len(ok), vectors.shape[1])
    return results
