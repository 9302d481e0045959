"""The MTMH quota merge is exact: α=1 → engagement list, α=0 → relevance list, slot counts."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from relrec.rerank.quota import engagement_slots, quota_merge, slot_plan
from relrec.related import RelatedItems


def _lists(rng, n_rows, length, n_items, overlap):
    engagement = np.stack([rng.permutation(n_items)[:length] for _ in range(n_rows)])
    # plant duplicates: the relevance head starts with some of the engagement head's items
    relevance = []
    for row in engagement:
        shared = row[1:overlap + 1].tolist()
        rest = [i for i in rng.permutation(n_items).tolist() if i not in shared]
        relevance.append(shared + rest[:length - len(shared)])
    relevance = np.asarray(relevance)
    scores = -np.arange(length, dtype=np.float32)[None, :].repeat(n_rows, 0)
    return engagement, relevance, scores


@pytest.mark.parametrize("k", [1, 7, 10, 25])
def test_slot_counts_follow_alpha_exactly(k):
    rng = np.random.default_rng(0)
    engagement, relevance, scores = _lists(rng, 20, k, 200, overlap=min(k - 1, 5))
    for alpha in np.round(np.linspace(0, 1, 11), 1):
        _, merged, source, short = quota_merge(engagement, scores, relevance, scores + 1, k,
                                               alpha)
        expected = int(np.floor(alpha * k + 0.5))
        assert short == 0
        assert ((source == 0).sum(axis=1) == expected).all()
        assert ((source == 1).sum(axis=1) == k - expected).all()
        for row in range(len(merged)):  # no duplicates, every slot filled
            assert len(set(merged[row].tolist())) == k and (merged[row] >= 0).all()
            # each head's items appear in that head's own order (back-fill from the same head)
            for head, lists in ((0, engagement), (1, relevance)):
                taken = merged[row][source[row] == head]
                positions = [list(lists[row]).index(item) for item in taken]
                assert positions == sorted(positions)


def test_alpha_one_and_zero_give_each_head_list():
    rng = np.random.default_rng(1)
    engagement, relevance, scores = _lists(rng, 5, 10, 50, overlap=4)
    _, merged, _, _ = quota_merge(engagement, scores, relevance, scores, 10, 1.0)
    np.testing.assert_array_equal(merged, engagement)
    _, merged, _, _ = quota_merge(engagement, scores, relevance, scores, 10, 0.0)
    np.testing.assert_array_equal(merged, relevance)


def test_interleaving_is_proportional_and_duplicates_back_fill_from_same_head():
    plan = slot_plan(0.3, 10)
    assert plan.tolist().count(0) == 3
    prefix = np.cumsum(plan == 0)
    ideal = 0.3 * np.arange(1, 11)
    assert np.all(np.abs(prefix - ideal) <= 1.0)
    engagement = np.array([[1, 2, 3, 4]])
    relevance = np.array([[1, 5, 6, 7]])  # item 1 is in both lists
    scores = np.zeros((1, 4), np.float32)
    _, merged, source, _ = quota_merge(engagement, scores, relevance, scores, 4, 0.5)
    assert sorted(merged[0].tolist()) == [1, 2, 5, 6]  # relevance skipped its duplicate 1
    assert (source[0] == 0).sum() == 2


def test_a_head_that_runs_out_is_reported_and_filled_from_the_other():
    engagement = np.array([[1, -1, -1]])
    relevance = np.array([[4, 5, 6]])
    scores = np.zeros((1, 3), np.float32)
    _, merged, source, short = quota_merge(engagement, scores, relevance, scores, 3, 1.0)
    assert short == 1 and merged[0].tolist() == [1, 4, 5]
    assert engagement_slots(0.25, 10) == 3 and engagement_slots(0.35, 10) == 4
    with pytest.raises(ValueError):
        engagement_slots(1.5, 10)


def test_related_items_alpha_through_the_indexes_and_single_head_note():
    rng = np.random.default_rng(2)
    n = 60
    heads = {"engagement": rng.normal(size=(n, 8)).astype(np.float32),
             "relevance": rng.normal(size=(n, 8)).astype(np.float32)}
    catalogue = SimpleNamespace(item_ids=np.array([f"i{i}" for i in range(n)], dtype=object))
    model = RelatedItems(catalogue, heads, np.ones(n, dtype=bool))
    triggers = [f"i{i}" for i in range(6)]
    # one head alone, by brute force: the inner-product top 10 without the trigger
    def brute(head):
        scores = heads[head][:6] @ heads[head].T
        scores[np.arange(6), np.arange(6)] = -np.inf
        return catalogue.item_ids[np.argsort(-scores, axis=1, kind="stable")[:, :10]]
    eng, rel = brute("engagement"), brute("relevance")
    one, _ = model.similar_items(triggers, 10, alpha=1.0)
    np.testing.assert_array_equal(one, eng)
    assert model.query_notes(alpha=1.0) == []
    np.testing.assert_array_equal(model.similar_items(triggers, 10, alpha=0.0)[0], rel)
    mixed, _ = model.similar_items(triggers, 10, alpha=0.4)
    for row in range(len(triggers)):
        assert triggers[row] not in mixed[row]
        assert len(set(mixed[row].tolist())) == 10
    single = RelatedItems(catalogue, {"main": heads["engagement"]}, np.ones(n, dtype=bool))
    ids, _ = single.similar_items(triggers, 10, alpha=0.3)
    np.testing.assert_array_equal(ids, eng)
    assert "ignored" in single.query_notes(alpha=0.3)[0]


def _reference_quota_merge(engagement_indices: np.ndarray, engagement_scores: np.ndarray,
                relevance_indices: np.ndarray, relevance_scores: np.ndarray, k: int,
                alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The per-row merge the vectorised one replaced (the definition, slot by slot)."""
    engagement_indices = np.asarray(engagement_indices)
    relevance_indices = np.asarray(relevance_indices)
    n = engagement_indices.shape[0]
    plan = slot_plan(alpha, k)
    indices = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    source = np.full((n, k), -1, dtype=np.int8)
    lists = (engagement_indices, relevance_indices)
    list_scores = (np.asarray(engagement_scores), np.asarray(relevance_scores))
    short_rows = 0
    for row in range(n):
        pointers = [0, 0]
        placed: set[int] = set()
        rows = (lists[0][row], lists[1][row])
        short = False
        for slot in range(k):
            wanted = int(plan[slot])
            for head in (wanted, 1 - wanted):
                candidates = rows[head]
                pointer = pointers[head]
                while pointer < len(candidates) and (candidates[pointer] < 0
                                                     or int(candidates[pointer]) in placed):
                    pointer += 1
                pointers[head] = pointer
                if pointer < len(candidates):
                    item = int(candidates[pointer])
                    placed.add(item)
                    indices[row, slot] = item
                    scores[row, slot] = list_scores[head][row, pointer]
                    source[row, slot] = head
                    pointers[head] = pointer + 1
                    if head != wanted:
                        short = True
                    break
            else:
                short = True
        short_rows += short
    return scores, indices, source, short_rows


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(0, 6), length=st.integers(1, 12),
       k=st.integers(1, 14), items=st.integers(1, 20), alpha=st.floats(0, 1),
       padding=st.floats(0, 0.5))
def test_vectorised_merge_equals_the_slot_by_slot_definition(seed, rows, length, k, items,
                                                             alpha, padding):
    """Every row at once gives what the per-row loop gives: duplicates within and across the
    heads, -1 padding anywhere, heads that run out, k longer than the lists."""
    rng = np.random.default_rng(seed)
    lists = [np.where(rng.random((rows, length)) < padding, -1,
                      rng.integers(0, items, (rows, length))) for _ in range(2)]
    list_scores = [rng.random((rows, length)).astype(np.float32) for _ in range(2)]
    got = quota_merge(lists[0], list_scores[0], lists[1], list_scores[1], k, alpha)
    expected = _reference_quota_merge(lists[0], list_scores[0], lists[1], list_scores[1], k,
                                      alpha)
    for mine, reference in zip(got[:3], expected[:3]):
        np.testing.assert_array_equal(mine, reference)
    assert got[3] == expected[3]


def test_no_rows_give_empty_lists():
    scores, merged, source, short = quota_merge(np.array([]), np.array([]), np.array([]),
                                                np.array([]), 5, 0.5)
    assert merged.shape == scores.shape == source.shape == (0, 5) and short == 0
