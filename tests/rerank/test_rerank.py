"""CAViaR re-ranker: features, greedy page-by-page placement, persistence, slates."""

import numpy as np
import pytest

from relrec.rerank.features import ItemSpace, contextual_features, n_contextual
from relrec.rerank.model import ContextualReranker
from relrec.rerank.rerank import RerankState, rerank_pages
from relrec.rerank.slates import normalized_entropy, slate_triggers


def _space(n=40, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ItemSpace(vectors, np.arange(n) % 4, rng.random(n).astype(np.float32))


def test_contextual_features_count_the_same_topic_run():
    space = _space()
    # candidate 0 (topic 0); context 4, 8 (topic 0) then 1 (topic 1): run 2, share 2/3
    features = contextual_features(space, np.array([0]), np.array([[4, 8, 1, -1, -1]]),
                                   np.array([3]))
    assert features.shape == (1, n_contextual(4, 5))
    mean_dot, share, run, position, count = features[0, -5:]
    assert share == pytest.approx(2 / 3) and run == pytest.approx(2 / 5)
    assert count == pytest.approx(3 / 5) and position == pytest.approx(3 / 20)
    expected = np.mean([space.vectors[i] @ space.vectors[0] for i in (4, 8, 1)])
    assert mean_dot == pytest.approx(expected, abs=1e-5)


def test_pages_are_placed_on_demand_and_equal_a_single_pass():
    space = _space()
    reranker = ContextualReranker(space, context_size=3, hidden=[8])
    rng = np.random.default_rng(1)
    triggers = np.array([0, 1, 2])
    main = np.stack([rng.permutation(np.arange(3, 40))[:30] for _ in triggers])
    scores = -np.sort(rng.random((3, 30)), axis=1)
    state = RerankState(reranker, triggers, main, scores, window=6)
    _, first = state.next_page(5)
    assert state.scored == 3 * 5 * 6  # only page 1's slots were scored
    _, second = state.next_page(5)
    _, both = rerank_pages(reranker, triggers, main, scores, pages=2, page_size=5, window=6)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), both)
    for row in range(3):
        assert len(set(both[row].tolist())) == 10 and set(both[row]) <= set(main[row])
        # each placed item came from the first `window` not-yet-placed candidates
        remaining = list(main[row])
        for item in both[row]:
            assert remaining.index(item) < 6
            remaining.remove(item)
    # a window of one keeps the main ranking
    _, same = rerank_pages(reranker, triggers, main, scores, pages=1, page_size=10, window=1)
    np.testing.assert_array_equal(same, main[:, :10])


def test_save_and_load_round_trip(tmp_path):
    reranker = ContextualReranker(_space(), context_size=3, hidden=[8])
    reranker.meta = {"positive_rate": 0.1}
    reranker.save(tmp_path / "rerank")
    loaded = ContextualReranker.load(tmp_path / "rerank")
    features = np.random.default_rng(0).normal(size=(7, reranker.contextual_width)).astype(
        np.float32)
    np.testing.assert_allclose(loaded.predict(features), reranker.predict(features), rtol=1e-6)
    assert loaded.meta["positive_rate"] == 0.1
    assert (tmp_path / "rerank" / "weights.safetensors").exists()


def test_slate_triggers_use_history_as_context_and_later_items_as_labels():
    sessions = [[np.array([1]), np.array([2, 3]), np.array([4])]]
    occurrences = slate_triggers(sessions, context_size=3)
    assert occurrences.triggers.tolist() == [1, 2, 3]
    assert occurrences.later[0] == {2, 3, 4} and occurrences.later[1] == {4}
    assert occurrences.context[1].tolist() == [2, 1, -1]  # most recent first
    assert occurrences.position.tolist() == [1, 2, 2]
    assert occurrences.seen[1] == {1, 2, 3}  # its own (unordered) group is neither side


def test_normalized_entropy_is_one_at_the_background_rate():
    labels = np.array([1, 0, 0, 0] * 25, dtype=np.float32)
    assert normalized_entropy(np.full(100, 0.25), labels, 0.25) == pytest.approx(1.0)
    assert normalized_entropy(labels * 0.9 + 0.05, labels, 0.25) < 0.5
