"""Image encoders by name: a small registry, and adapters for torchvision, timm and open_clip.

::

    register_image_model("my-model", factory)      # factory(**options) -> ImageEncoder
    encoder = get_image_encoder("efficientnet-lite0")

Built in: ``"efficientnet-lite0"`` (the offline default,
:class:`~relrec.content.image.EfficientNetLite0Encoder`).

Adapters for users who have the packages and weights (imported lazily; a clear
:class:`~relrec.errors.RelrecError` names the missing package):

* ``"torchvision:<arch>"`` — ``torchvision.models.get_model(arch, weights="DEFAULT")`` with the
  last linear layer removed, preprocessing from the weights' transforms;
* ``"timm:<name>"`` — ``timm.create_model(name, pretrained=True, num_classes=0)``;
* ``"open_clip:<name>/<pretrained>"`` — ``open_clip`` image tower (``encode_image``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from relrec.content.image import (
    DEFAULT_IMAGE_MODEL,
    MAX_BATCH,
    EfficientNetLite0Encoder,
    ImageEncoder,
)
from relrec.errors import RelrecError


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
