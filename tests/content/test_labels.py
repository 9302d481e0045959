"""relrec.content.labels: pair cosine and threshold rules on a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from relrec.content.labels import choose_semantic_threshold, pair_cosine, semantic_labels


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_pair_cosine_hand_computed():
    vectors = unit([[1, 0], [0, 1], [1, 1], [-1, 0]])
    vectors = np.vstack([vectors, np.zeros((1, 2), np.float32)])  # item 4: no content
    triggers = np.array([0, 0, 0, 2, 1, 4])
    candidates = np.array([1, 2, 3, 2, 2, 0])
    expected = [0.0, np.sqrt(0.5), -1.0, 1.0, np.sqrt(0.5), 0.0]
    for chunk in (1, 4, 1_000_000):
        np.testing.assert_allclose(pair_cosine(vectors, triggers, candidates, chunk=chunk),
                                   expected, atol=1e-6)
    with pytest.raises(ValueError):
        pair_cosine(vectors, triggers, candidates[:2])


def test_quantile_rule():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    threshold, description = choose_semantic_threshold(scores)
    assert threshold == pytest.approx(0.3)
    assert "0.5-quantile" in description and "5 co-engaged" in description
    threshold, _ = choose_semantic_threshold(scores, quantile=0.75)
    assert threshold == pytest.approx(0.4)
    # NaNs are ignored; weighting by count = repeating
    threshold, _ = choose_semantic_threshold(np.array([0.1, np.nan, 0.9, 0.9]), quantile=0.5)
    assert threshold == pytest.approx(0.9)
    with pytest.raises(ValueError):
        choose_semantic_threshold(np.array([]))
    with pytest.raises(ValueError):
        choose_semantic_threshold(scores, quantile=1.5)


def test_random_baseline_rule():
    randoms = np.arange(101) / 100.0  # 0.00 .. 1.00: the 95th percentile is 0.95
    pairs = np.array([0.2, 0.96, 0.99, 0.5])
    threshold, description = choose_semantic_threshold(pairs, rule="random-baseline",
                                                       random_pair_scores=randoms)
    assert threshold == pytest.approx(0.95)
    assert "95% of random pairs" in description and "50.0% of 4" in description
    with pytest.raises(ValueError, match="random_pair_scores"):
        choose_semantic_threshold(pairs, rule="random-baseline")
    with pytest.raises(ValueError, match="unknown"):
        choose_semantic_threshold(pairs, rule="median")


def test_semantic_labels():
    labels = semantic_labels(np.array([0.2, 0.5, 0.51, np.nan, 1.0]), 0.5)
    assert labels.dtype == bool
    assert labels.tolist() == [False, True, True, False, True]
