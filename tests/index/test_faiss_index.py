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
