"""The EASE neighbour table: top-M per item, batched lookups, safetensors round trip."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relrec.errors import RunDirError
from relrec.rerank.blend import blend_terms, rerank_by_blend
from relrec.rerank.neighbours import NEIGHBOURS_FILE, NeighbourWeights


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 15), st.integers(0, 10_000))
def test_lookup_matches_a_dense_reference(n_fitted, neighbours, seed):
    """Every (trigger, candidate) pair: the dense weight when it is among the trigger's top
    ``neighbours`` (self excluded), 0 when it is not, not usable when either item was not
    fitted, padding or beyond the catalogue."""
    rng = np.random.default_rng(seed)
    n_items = n_fitted + 3
    items = np.sort(rng.choice(n_items, n_fitted, replace=False))
    dense = rng.normal(size=(n_fitted, n_fitted)).astype(np.float32)
    table = NeighbourWeights.from_dense(dense, items, n_items, neighbours)
    triggers = np.arange(n_items)
    candidates = np.tile(np.arange(-1, n_items + 1), (n_items, 1))
    values, usable = table.lookup(triggers, candidates)
    local = {item: position for position, item in enumerate(items)}
    keep = min(neighbours, n_fitted - 1)
    for t in triggers:
        for column, c in enumerate(candidates[t]):
            fitted = t in local and c in local
            assert usable[t, column] == fitted
            if not fitted:
                assert values[t, column] == 0
                continue
            row = dense[local[t]].copy()
            row[local[t]] = -np.inf
            top = set(items[np.argsort(-row, kind="stable")[:keep]]) if keep else set()
            expected = dense[local[t], local[c]] if (c in top and c != t) else 0.0
            assert values[t, column] == pytest.approx(expected)


def test_round_trip_and_a_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    table = NeighbourWeights.from_dense(rng.normal(size=(5, 5)), np.arange(5), 7, 3,
                                        {"family": "ease_users", "l2": 200.0})
    table.save(tmp_path)
    again = NeighbourWeights.load(tmp_path)
    assert again.settings == {"family": "ease_users", "l2": 200.0}
    candidates = np.array([[1, 2, 3, 6, -1], [0, 4, 5, 2, 3]])
    for left, right in zip(table.lookup(np.array([0, 1]), candidates),
                           again.lookup(np.array([0, 1]), candidates)):
        np.testing.assert_array_equal(left, right)
    (tmp_path / NEIGHBOURS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(RunDirError, match=NEIGHBOURS_FILE):
        NeighbourWeights.load(tmp_path)
    with pytest.raises(RunDirError, match="missing"):
        NeighbourWeights.load(tmp_path / "elsewhere")


def test_a_large_ease_weight_promotes_a_candidate_within_the_pool():
    """model order 1, 2, 3; EASE knows 0 → 3 strongly: with a large weight 3 leads."""
    dense = np.zeros((4, 4), np.float32)
    dense[0, 3] = 5.0
    dense[0, 2] = 0.1
    table = NeighbourWeights.from_dense(dense, np.arange(4), 4, 3)
    scores, candidates = np.array([[3.0, 2.0, 1.0]]), np.array([[1, 2, 3]])
    _, order = rerank_by_blend(scores, candidates, np.array([0]), [(table.lookup, 0.0)], 3)
    assert order.tolist() == [[1, 2, 3]]
    _, order = rerank_by_blend(scores, candidates, np.array([0]), [(table.lookup, 4.0)], 3)
    assert order[0, 0] == 3
    # two signals add: z(model) + 1·z(a) + 2·z(b), by hand
    a, b = np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 0.0, 1.0]])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    expected = z(scores) + z(a) + 2 * z(b)
    np.testing.assert_allclose(blend_terms(scores, [(a, None, 1.0), (b, None, 2.0)]), expected)
