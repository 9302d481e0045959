"""Content blend: standardised model score + w · standardised content cosine."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from relrec.rerank.blend import blend_scores, content_signal, rerank_by_blend, standardize_rows


def _content(vectors, ok, weight):
    return [(content_signal(vectors, ok), weight)]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (3, 7), elements=st.floats(-50, 50)),
       st.floats(0.001, 100), st.floats(-10, 10))
def test_standardising_makes_the_weight_scale_free(scores, scale, shift):
    """A model whose scores are rescaled/shifted gives the same blend (up to rounding)."""
    similarity = np.linspace(0, 1, 7)[None, :].repeat(3, axis=0)
    a = blend_scores(scores, similarity, 0.7)
    b = blend_scores(scores * scale + shift, similarity, 0.7)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_padding_stays_last_and_weight_zero_keeps_the_model_order():
    scores = np.array([[3.0, 2.0, 1.0, -np.inf]])
    standardized = standardize_rows(scores)
    assert np.isneginf(standardized[0, 3]) and abs(standardized[0, :3].mean()) < 1e-12
    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = vectors[0]  # the trigger's content twin
    ok = np.ones(4, bool)
    candidates = np.array([[1, 2, 3, -1]])
    _, order = rerank_by_blend(scores[:, :4].copy(), candidates, np.array([0]),
                               _content(vectors, ok, 0.0), 4)
    assert order.tolist() == [[1, 2, 3, -1]]
    # a large weight lets content decide among the candidates; padding is never promoted
    _, order = rerank_by_blend(scores, candidates, np.array([0]), _content(vectors, ok, 10.0),
                               4)
    assert order[0, 0] == 3 and order[0, -1] == -1


def test_items_without_content_are_neither_promoted_nor_demoted():
    """A candidate without content gets the row's mean content term (z = 0): the model's top
    item keeps its lead over a candidate whose content is only slightly above average."""
    vectors = np.array([[1, 0], [0, 0], [0.9, 0.436], [0.1, 0.995]], dtype=np.float32)
    ok = np.array([True, False, True, True])  # item 1 has no content
    _, order = rerank_by_blend(np.array([[3.0, 2.0, 1.0]]), np.array([[1, 2, 3]]),
                               np.array([0]), _content(vectors, ok, 1.0), 3)
    assert order.tolist() == [[1, 2, 3]]
    # and content still decides between the items that have it
    _, order = rerank_by_blend(np.array([[3.0, 1.0, 1.1]]), np.array([[1, 2, 3]]),
                               np.array([0]), _content(vectors, ok, 1.0), 3)
    assert order[0, 1:].tolist() == [2, 3]


def test_the_top_of_a_list_does_not_depend_on_k():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ok = np.ones(20, bool)
    candidates = np.array([[5, 6, 7, 8, 9, 10, 11, 12]])
    scores = np.linspace(2, 1, 8)[None, :]
    _, short = rerank_by_blend(scores[:, :4], candidates[:, :4], np.array([0]),
                               _content(vectors, ok, 2.0), 3, pool=4)
    scored, long = rerank_by_blend(scores, candidates, np.array([0]), _content(vectors, ok, 2.0), 8,
                                   pool=4)
    assert long[0, :3].tolist() == short[0].tolist()
    assert long[0, 4:].tolist() == [9, 10, 11, 12]  # beyond the pool: the model's order
    assert np.all(np.diff(scored[0]) <= 0)


def test_negative_weight_is_refused():
    with pytest.raises(ValueError):
        blend_scores(np.zeros((1, 2)), np.zeros((1, 2)), -1.0)
