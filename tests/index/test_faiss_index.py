"""ItemIndex: exact inner-product search, trigger exclusion, padding, persistence."""

import numpy as np

from relrec.index.faiss_index import ItemIndex, choose_index_kind


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_exact_search_excludes_the_trigger_and_maps_item_indices():
    vectors = unit([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]])
    index = ItemIndex(2)
    index.add(vectors, np.array([10, 11, 12, 13]))
    scores, items = index.search(vectors[:1], 2, exclude=np.array([10]))
    assert items.tolist() == [[11, 12]]
    assert scores[0, 0] > scores[0, 1]


def test_short_catalogue_is_padded():
    vectors = unit([[1, 0], [0, 1]])
    index = ItemIndex(2)
    index.add(vectors, np.array([0, 1]))
    scores, items = index.search(vectors, 5, exclude=np.array([0, 1]))
    assert items.tolist() == [[1, -1, -1, -1, -1], [0, -1, -1, -1, -1]]
    assert np.isneginf(scores[0, 1:]).all()


def test_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(50, 8)))
    index = ItemIndex(8)
    index.add(vectors, np.arange(100, 150))
    index.save(tmp_path / "items.faiss")
    loaded = ItemIndex.load(tmp_path / "items.faiss")
    assert np.array_equal(index.search(vectors, 5)[1], loaded.search(vectors, 5)[1])


def test_index_kind_by_catalogue_size():
    assert choose_index_kind(10_000) == "exact"
    assert choose_index_kind(1_000_000) == "hnsw"
    assert choose_index_kind(50_000_000) == "ivfpq"


def _clustered(n=6000, dim=32, clusters=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return unit(centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim)))


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def test_ivfpq_refine_recovers_the_recall_product_codes_lose(tmp_path):
    vectors = _clustered()
    ids = np.arange(len(vectors))
    queries = np.arange(0, len(vectors), 30)
    exact = ItemIndex(32)
    exact.add(vectors, ids)
    truth = exact.search(vectors[queries], 10, exclude=queries)[1]
    found = {}
    for refine in (None, "sq8", "flat"):
        index = ItemIndex(32, "ivfpq", ivf_lists=32, pq_bytes=4, search_breadth=32,
                          refine=refine, refine_factor=8)
        index.add(vectors, ids)
        found[refine] = index.search(vectors[queries], 10, exclude=queries)[1]
        if refine == "sq8":
            index.save(tmp_path / "refined.faiss")
            loaded = ItemIndex.load(tmp_path / "refined.faiss")
            assert (loaded.kind, loaded.refine, loaded.refine_factor) == ("ivfpq", "sq8", 8)
            loaded.search_breadth = 32
            assert np.array_equal(loaded.search(vectors[queries], 10, exclude=queries)[1],
                                  found[refine])
    plain, sq8, flat = (_recall(found[r], truth) for r in (None, "sq8", "flat"))
    assert plain < 0.8  # 4-byte codes lose the order inside a cluster
    assert sq8 > plain + 0.1 and flat > 0.95


def test_refine_is_refused_for_other_kinds():
    import pytest

    with pytest.raises(ValueError, match="ivfpq"):
        ItemIndex(8, "hnsw", refine="sq8")
    with pytest.raises(ValueError, match="unknown refine"):
        ItemIndex(8, "ivfpq", refine="pq")
