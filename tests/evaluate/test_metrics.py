"""Offline metrics on tiny hand-computed examples, plus property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from relrec.evaluate.metrics import (
    PerTrigger,
    content_similarity_at_k,
    coverage_at_k,
    intra_list_diversity_at_k,
    ndcg_at_k,
    novelty_at_k,
    popular_share_at_k,
    popularity_masks,
    recall_at_k,
    topic_jaccard_at_k,
    topic_match_rate_at_k,
)

# --------------------------------------------------------------------------- PerTrigger


def test_per_trigger_value_and_exclusion():
    m = PerTrigger(np.array([1.0, 0.0, 2.0]), np.array([2.0, 0.0, 2.0]))
    assert m.value() == pytest.approx(3.0 / 4.0)
    assert m.n_included == 2 and m.n_excluded == 1 and len(m) == 3
    assert m.numerator.dtype == np.float64
    sub = m.subset(np.array([True, False, False]))
    assert sub.value() == pytest.approx(0.5)


def test_per_trigger_all_excluded_is_nan():
    assert math.isnan(PerTrigger(np.zeros(2), np.zeros(2)).value())
    assert math.isnan(PerTrigger(np.zeros(0), np.zeros(0)).value())


def test_per_trigger_shape_mismatch():
    with pytest.raises(ValueError):
        PerTrigger(np.zeros(2), np.zeros(3))


# --------------------------------------------------------------------------- recall / NDCG

# 3 test triggers, 4 items. Row 1 is padded.
RANKED_ENG = np.array([[1, 2, 3],
                       [3, -1, -1],
                       [0, 1, 2]], dtype=np.int64)
# 5 test pairs: three from row 0, one from row 1, one from row 2.
PAIR_ROW = np.array([0, 0, 0, 1, 2])
PAIR_TARGET = np.array([2, 3, 0, 3, 3])


def test_recall_k2_pooled_over_pairs():
    # k=2: row0 top {1,2}: targets 2 hit, 3 miss, 0 miss -> 1/3
    #      row1 top {3}:   target 3 hit                 -> 1/1
    #      row2 top {0,1}: target 3 miss                -> 0/1
    # pooled over pairs: (1+1+0)/(3+1+1) = 2/5 = 0.4
    # (a mean over triggers would be (1/3+1+0)/3 = 0.444..., NOT what recall@k is)
    m = recall_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 2)
    np.testing.assert_array_equal(m.numerator, [1, 1, 0])
    np.testing.assert_array_equal(m.denominator, [3, 1, 1])
    assert m.value() == pytest.approx(0.4)


def test_recall_k3_and_k_larger_than_list():
    # k=3: row0 {1,2,3}: 2 hit, 3 hit, 0 miss -> 2/3; row1 1/1; row2 {0,1,2}: 3 miss -> 0/1
    # overall 3/5 = 0.6; k=10 > K_max=3 gives the same.
    assert recall_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 3).value() == pytest.approx(0.6)
    m10 = recall_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 10)
    np.testing.assert_array_equal(m10.numerator, [2, 1, 0])
    assert m10.value() == pytest.approx(0.6)


def test_recall_k1():
    # k=1: row0 [1] none of 2,3,0; row1 [3] hit; row2 [0] miss 3 -> 1/5
    assert recall_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 1).value() == pytest.approx(0.2)


def test_recall_rows_without_pairs_are_excluded():
    # only row 1 has a pair -> rows 0 and 2 have denominator 0
    m = recall_at_k(RANKED_ENG, np.array([1]), np.array([3]), 3)
    np.testing.assert_array_equal(m.denominator, [0, 1, 0])
    assert m.value() == 1.0 and m.n_excluded == 2


def test_recall_padding_never_matches():
    # a negative target could otherwise "hit" the -1 padding: refused
    with pytest.raises(ValueError):
        recall_at_k(RANKED_ENG, np.array([1]), np.array([-1]), 3)


def test_recall_bad_inputs():
    with pytest.raises(ValueError):
        recall_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 0)
    with pytest.raises(ValueError):
        recall_at_k(RANKED_ENG, np.array([3]), np.array([1]), 2)  # row out of range
    with pytest.raises(ValueError):
        recall_at_k(RANKED_ENG, np.array([0, 1]), np.array([1]), 2)  # length mismatch
    with pytest.raises(ValueError):
        recall_at_k(RANKED_ENG[0], PAIR_ROW, PAIR_TARGET, 2)  # not 2-D


def test_recall_empty_columns():
    ranked = np.empty((2, 0), dtype=np.int64)
    m = recall_at_k(ranked, np.array([0, 1]), np.array([0, 1]), 5)
    assert m.value() == 0.0


def test_ndcg_hand_computed():
    # k=3: row0: target 2 at rank 1 -> 1/log2(3) = 0.63093; target 3 at rank 2 -> 1/log2(4) = 0.5;
    #            target 0 absent -> 0
    #      row1: target 3 at rank 0 -> 1/log2(2) = 1
    #      row2: 0
    # NDCG@3 = (0.63093 + 0.5 + 1) / 5 = 0.42619
    m = ndcg_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 3)
    np.testing.assert_allclose(m.numerator, [1 / math.log2(3) + 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(m.denominator, [3, 1, 1])
    assert m.value() == pytest.approx((1 / math.log2(3) + 1.5) / 5)
    # k=2: the rank-2 hit drops out -> (0.63093 + 1) / 5
    assert ndcg_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 2).value() == pytest.approx(
        (1 / math.log2(3) + 1.0) / 5)
    # k beyond the list == k=3
    assert ndcg_at_k(RANKED_ENG, PAIR_ROW, PAIR_TARGET, 50).value() == pytest.approx(
        (1 / math.log2(3) + 1.5) / 5)


# --------------------------------------------------------------------------- topics

# topics A=0, B=1, C=2.  item0 {A,B}, item1 {A}, item2 {C}, item3 {} (no topics)
TOPICS = sp.csr_matrix(np.array([[1, 1, 0],
                                 [1, 0, 0],
                                 [0, 0, 1],
                                 [0, 0, 0]]))
TRIGGERS = np.array([0, 3, 1])
RANKED_T = np.array([[1, 2, 3],
                     [0, 1, -1],
                     [0, 2, -1]])


def test_topic_match_rate_hand_computed():
    # row0 trigger0 {A,B}: item1 {A} match, item2 {C} no, item3 {} no       -> 1/3
    # row1 trigger3 has no topics                                            -> excluded
    # row2 trigger1 {A}:   item0 {A,B} match, item2 {C} no (padding ignored) -> 1/2
    # mean over the 2 included triggers: (1/3 + 1/2) / 2 = 5/12
    m = topic_match_rate_at_k(RANKED_T, TRIGGERS, TOPICS, 3)
    np.testing.assert_allclose(m.numerator, [1 / 3, 0, 1 / 2])
    np.testing.assert_array_equal(m.denominator, [1, 0, 1])
    assert m.n_excluded == 1
    assert m.value() == pytest.approx(5 / 12)
    # k=10 > K_max: same; the share of row2 is over its 2 real items, not 10 slots
    assert topic_match_rate_at_k(RANKED_T, TRIGGERS, TOPICS, 10).value() == pytest.approx(5 / 12)
    # k=1: row0 [1] match; row2 [0] match -> 1.0
    assert topic_match_rate_at_k(RANKED_T, TRIGGERS, TOPICS, 1).value() == pytest.approx(1.0)


def test_topic_jaccard_hand_computed():
    # row0 trigger0 {A,B}: J({A,B},{A}) = 1/2, J({A,B},{C}) = 0, J({A,B},{}) = 0 -> mean 1/6
    # row2 trigger1 {A}:   J({A},{A,B}) = 1/2, J({A},{C}) = 0                     -> mean 1/4
    # value = (1/6 + 1/4) / 2 = 5/24
    m = topic_jaccard_at_k(RANKED_T, TRIGGERS, TOPICS, 3)
    np.testing.assert_allclose(m.numerator, [1 / 6, 0, 1 / 4])
    np.testing.assert_array_equal(m.denominator, [1, 0, 1])
    assert m.value() == pytest.approx(5 / 24)
    # k=1: 1/2 and 1/2 -> 1/2
    assert topic_jaccard_at_k(RANKED_T, TRIGGERS, TOPICS, 1).value() == pytest.approx(0.5)


def test_topic_matrix_non_binary_values_are_binarised():
    weighted = TOPICS.multiply(3).tocsr()
    assert topic_jaccard_at_k(RANKED_T, TRIGGERS, weighted, 3).value() == pytest.approx(5 / 24)
    assert topic_match_rate_at_k(RANKED_T, TRIGGERS, weighted, 3).value() == pytest.approx(5 / 12)


def test_topic_empty_list_scores_zero_and_all_without_topics_is_nan():
    ranked = np.array([[-1, -1], [1, -1]])
    m = topic_match_rate_at_k(ranked, np.array([0, 0]), TOPICS, 2)
    np.testing.assert_array_equal(m.numerator, [0, 1])
    np.testing.assert_array_equal(m.denominator, [1, 1])
    none = topic_match_rate_at_k(ranked, np.array([3, 3]), TOPICS, 2)
    assert none.n_excluded == 2 and math.isnan(none.value())


def test_topic_trigger_mismatch():
    with pytest.raises(ValueError):
        topic_match_rate_at_k(RANKED_T, np.array([0, 1]), TOPICS, 3)
    with pytest.raises(ValueError):
        topic_match_rate_at_k(np.array([[7]]), np.array([0]), TOPICS, 1)


# --------------------------------------------------------------------------- popularity

POP_RANKED = np.array([[1, 2, 3],
                       [0, 1, -1],
                       [0, 2, -1],
                       [-1, -1, -1]])


def test_popular_share_pooled_over_slots():
    popular = np.array([True, False, False, True])  # items 0 and 3
    # k=3: row0 [1,2,3] -> 1 popular of 3; row1 [0,1] -> 1 of 2; row2 [0,2] -> 1 of 2;
    #      row3 empty -> excluded. pooled: 3 / 7
    m = popular_share_at_k(POP_RANKED, popular, 3)
    np.testing.assert_array_equal(m.numerator, [1, 1, 1, 0])
    np.testing.assert_array_equal(m.denominator, [3, 2, 2, 0])
    assert m.value() == pytest.approx(3 / 7)
    # k=1: [1] no, [0] yes, [0] yes -> 2/3
    assert popular_share_at_k(POP_RANKED, popular, 1).value() == pytest.approx(2 / 3)
    assert popular_share_at_k(POP_RANKED, popular, 99).value() == pytest.approx(3 / 7)


def test_novelty_hand_computed():
    # frequencies 4,2,2,0 -> p = .5,.25,.25, and the unseen item3 gets .25/2 = .125
    # self-information: item0 1 bit, item1 2, item2 2, item3 3
    # row0 [1,2,3] -> 7 over 3 slots; row1 [0,1] -> 3 over 2; row2 [0,2] -> 3 over 2; row3 none
    # pooled: 13 / 7
    freq = np.array([4, 2, 2, 0])
    m = novelty_at_k(POP_RANKED, freq, 3)
    np.testing.assert_allclose(m.numerator, [7, 3, 3, 0])
    np.testing.assert_array_equal(m.denominator, [3, 2, 2, 0])
    assert m.value() == pytest.approx(13 / 7)
    # probabilities instead of counts give the same
    assert novelty_at_k(POP_RANKED, freq / freq.sum(), 3).value() == pytest.approx(13 / 7)
    with pytest.raises(ValueError):
        novelty_at_k(POP_RANKED, np.zeros(4), 3)


def test_coverage():
    # k=3: distinct items {0,1,2,3} -> 4/4; over a catalogue of 8 -> 1/2
    assert coverage_at_k(POP_RANKED, 4, 3) == pytest.approx(1.0)
    assert coverage_at_k(POP_RANKED, 8, 3) == pytest.approx(0.5)
    # k=1: {1, 0} -> 2/4 (the -1 padding is not an item)
    assert coverage_at_k(POP_RANKED, 4, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        coverage_at_k(POP_RANKED, 3, 3)  # item 3 out of a 3-item catalogue


def test_popularity_masks_ties_and_sizes():
    # eligible (frequency > 0): items 1..6 (6 items); item 0 unseen
    freq = np.array([0, 5, 5, 1, 1, 1, 3])
    top, bottom = popularity_masks(freq)
    # defaults: floor(0.01*6)=0 -> at least 1; floor(0.1*6)=0 -> 1.
    # top: freq 5 tie between items 1 and 2 -> lower index 1; bottom: freq 1 tie 3,4,5 -> 3
    np.testing.assert_array_equal(np.flatnonzero(top), [1])
    np.testing.assert_array_equal(np.flatnonzero(bottom), [3])
    top, bottom = popularity_masks(freq, top_fraction=0.34, bottom_fraction=0.34)
    # floor(0.34*6) = 2 each
    np.testing.assert_array_equal(np.flatnonzero(top), [1, 2])
    np.testing.assert_array_equal(np.flatnonzero(bottom), [3, 4])
    assert not bottom[0] and not top[0]


def test_popularity_masks_eligible_and_empty():
    freq = np.array([0, 5, 5, 1, 1, 1, 3])
    _, bottom = popularity_masks(freq, eligible=np.ones(7, dtype=bool))
    np.testing.assert_array_equal(np.flatnonzero(bottom), [0])
    top, bottom = popularity_masks(np.zeros(5))
    assert not top.any() and not bottom.any()
    with pytest.raises(ValueError):
        popularity_masks(freq, top_fraction=0.0)


def test_popularity_masks_large_catalogue():
    freq = np.arange(1, 1001)[::-1].astype(float)  # item i has frequency 1000 - i
    top, bottom = popularity_masks(freq)
    np.testing.assert_array_equal(np.flatnonzero(top), np.arange(10))
    np.testing.assert_array_equal(np.flatnonzero(bottom), np.arange(900, 1000))


# --------------------------------------------------------------------------- vectors

# item0 (1,0), item1 (0,1), item2 (1,1) ~ 45 degrees, item3 (2,0) same direction as item0,
# item4 (0,0) no content
VECS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
S = 1 / math.sqrt(2)


def test_intra_list_diversity_hand_computed():
    ranked = np.array([[0, 1, 3], [0, 2, -1], [1, -1, -1]])
    # row0: pairs (0,1) 1-0=1, (0,3) 1-1=0, (1,3) 1-0=1 -> mean 2/3
    # row1: (0,2) 1 - 1/sqrt2 = 0.29289
    # row2: one item, no pair -> excluded
    m = intra_list_diversity_at_k(ranked, VECS, 3)
    np.testing.assert_allclose(m.numerator, [2 / 3, 1 - S, 0], atol=1e-12)
    np.testing.assert_array_equal(m.denominator, [1, 1, 0])
    assert m.value() == pytest.approx((2 / 3 + 1 - S) / 2)
    # k=2: row0 [0,1] -> 1
    assert intra_list_diversity_at_k(ranked, VECS, 2).value() == pytest.approx((1 + 1 - S) / 2)
    assert intra_list_diversity_at_k(ranked, VECS, 20).value() == pytest.approx(
        (2 / 3 + 1 - S) / 2)


def test_content_similarity_hand_computed():
    triggers = np.array([2, 0, 4])
    ranked = np.array([[0, 1, 3], [1, 3, -1], [0, 1, -1]])
    # row0 trigger2 (45 deg): cos to item0, item1, item3 are all 1/sqrt2 -> 1/sqrt2
    # row1 trigger0: item1 cos 0, item3 cos 1 -> 1/2
    # row2 trigger4 has a zero vector -> excluded
    m = content_similarity_at_k(ranked, triggers, VECS, 3)
    np.testing.assert_allclose(m.numerator, [S, 0.5, 0], atol=1e-12)
    np.testing.assert_array_equal(m.denominator, [1, 1, 0])
    assert m.value() == pytest.approx((S + 0.5) / 2)
    # k=1: row0 item0 -> 1/sqrt2; row1 item1 -> 0
    assert content_similarity_at_k(ranked, triggers, VECS, 1).value() == pytest.approx(S / 2)


# --------------------------------------------------------------------------- properties


@st.composite
def systems(draw):
    n_items = draw(st.integers(1, 8))
    n_rows = draw(st.integers(1, 6))
    width = draw(st.integers(0, 6))
    rows = []
    for _ in range(n_rows):
        length = draw(st.integers(0, min(width, n_items)))
        items = draw(st.permutations(range(n_items)))[:length]
        rows.append(list(items) + [-1] * (width - length))
    ranked = np.array(rows, dtype=np.int64).reshape(n_rows, width)
    n_pairs = draw(st.integers(0, 10))
    trigger_row = np.array(draw(st.lists(st.integers(0, n_rows - 1), min_size=n_pairs,
                                         max_size=n_pairs)), dtype=np.int64)
    target = np.array(draw(st.lists(st.integers(0, n_items - 1), min_size=n_pairs,
                                    max_size=n_pairs)), dtype=np.int64)
    triggers = np.array(draw(st.lists(st.integers(0, n_items - 1), min_size=n_rows,
                                      max_size=n_rows)), dtype=np.int64)
    n_topics = draw(st.integers(1, 4))
    dense = np.array(draw(st.lists(st.lists(st.booleans(), min_size=n_topics,
                                            max_size=n_topics),
                                   min_size=n_items, max_size=n_items)), dtype=float)
    popular = np.array(draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)))
    freq = np.array(draw(st.lists(st.integers(0, 20), min_size=n_items, max_size=n_items)),
                    dtype=float)
    if freq.sum() == 0:
        freq[0] = 1.0
    vecs = np.array(draw(st.lists(st.lists(st.integers(-3, 3), min_size=3, max_size=3),
                                  min_size=n_items, max_size=n_items)), dtype=float)
    return dict(n_items=n_items, ranked=ranked, trigger_row=trigger_row, target=target,
                triggers=triggers, topics=sp.csr_matrix(dense), popular=popular, freq=freq,
                vecs=vecs)


def _in_unit(m: PerTrigger) -> None:
    v = m.value()
    assert math.isnan(v) or -1e-12 <= v <= 1 + 1e-12
    inc = m.denominator > 0
    per = m.numerator[inc] / m.denominator[inc]
    assert np.all(per >= -1e-12) and np.all(per <= 1 + 1e-12)


@settings(max_examples=150, deadline=None)
@given(systems())
def test_recall_and_ndcg_monotone_and_bounded(s):
    prev_r = prev_n = -1.0
    for k in range(1, 8):
        r = recall_at_k(s["ranked"], s["trigger_row"], s["target"], k)
        n = ndcg_at_k(s["ranked"], s["trigger_row"], s["target"], k)
        _in_unit(r)
        _in_unit(n)
        if s["target"].size:
            assert r.value() >= prev_r - 1e-12
            assert n.value() >= prev_n - 1e-12
            assert n.value() <= r.value() + 1e-12
            prev_r, prev_n = r.value(), n.value()
        else:
            assert math.isnan(r.value())


@settings(max_examples=150, deadline=None)
@given(systems(), st.integers(1, 8))
def test_list_metrics_bounded(s, k):
    match = topic_match_rate_at_k(s["ranked"], s["triggers"], s["topics"], k)
    jac = topic_jaccard_at_k(s["ranked"], s["triggers"], s["topics"], k)
    _in_unit(match)
    _in_unit(jac)
    # Jaccard <= 1 on a matching item and 0 otherwise -> per trigger Jaccard <= match rate
    assert np.all(jac.numerator <= match.numerator + 1e-12)
    np.testing.assert_array_equal(jac.denominator, match.denominator)
    _in_unit(popular_share_at_k(s["ranked"], s["popular"], k))
    cov = coverage_at_k(s["ranked"], s["n_items"], k)
    assert 0.0 <= cov <= 1.0
    assert cov <= coverage_at_k(s["ranked"], s["n_items"], k + 1)
    nov = novelty_at_k(s["ranked"], s["freq"], k)
    assert math.isnan(nov.value()) or nov.value() >= 0.0
    ild = intra_list_diversity_at_k(s["ranked"], s["vecs"], k)
    assert math.isnan(ild.value()) or -1e-12 <= ild.value() <= 2 + 1e-12
    sim = content_similarity_at_k(s["ranked"], s["triggers"], s["vecs"], k)
    assert math.isnan(sim.value()) or -1 - 1e-12 <= sim.value() <= 1 + 1e-12


@settings(max_examples=100, deadline=None)
@given(systems(), st.integers(1, 8))
def test_ild_matches_brute_force(s, k):
    ranked, vecs = s["ranked"], s["vecs"]
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    v = np.divide(vecs, norm, out=np.zeros_like(vecs), where=norm > 0)
    m = intra_list_diversity_at_k(ranked, vecs, k)
    for r, row in enumerate(ranked):
        items = [i for i in row[:k] if i >= 0]
        d = [1 - v[a] @ v[b] for x, a in enumerate(items) for b in items[x + 1:]]
        if d:
            assert m.denominator[r] == 1
            assert m.numerator[r] == pytest.approx(np.mean(d), abs=1e-9)
        else:
            assert m.denominator[r] == 0


def test_chunking_gives_same_result(monkeypatch):
    import relrec.evaluate.metrics as metrics

    rng = np.random.default_rng(3)
    n_items, n_rows = 50, 40
    ranked = np.stack([rng.permutation(n_items)[:10] for _ in range(n_rows)])
    ranked[::3, 7:] = -1
    triggers = rng.integers(0, n_items, n_rows)
    topics = sp.random(n_items, 6, density=0.3, random_state=4, format="csr")
    vecs = rng.normal(size=(n_items, 5))
    rows = rng.integers(0, n_rows, 100)
    target = rng.integers(0, n_items, 100)

    def run():
        return [recall_at_k(ranked, rows, target, 7).numerator,
                ndcg_at_k(ranked, rows, target, 7).numerator,
                topic_jaccard_at_k(ranked, triggers, topics, 7).numerator,
                topic_match_rate_at_k(ranked, triggers, topics, 7).numerator,
                intra_list_diversity_at_k(ranked, vecs, 7).numerator,
                content_similarity_at_k(ranked, triggers, vecs, 7).numerator]

    full = run()
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 7)
    chunked = run()
    for a, b in zip(full, chunked):
        np.testing.assert_allclose(a, b, atol=1e-12)
