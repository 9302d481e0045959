"""`RelatedItems.export`: one file or a folder of parts, the same rows whatever the workers."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from relrec.related import RelatedItems


def _related(n_items: int = 700, dim: int = 8, kind: str = "exact") -> RelatedItems:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    eligible = rng.random(n_items) > 0.1  # some items are not candidates nor triggers
    run = SimpleNamespace(item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object))
    return RelatedItems(run, {"main": vectors}, eligible, index_kind=kind)


@pytest.mark.parametrize("workers,chunk_size", [(1, 100), (3, 64), (2, 1000)])
def test_parallel_export_equals_serial_export(tmp_path, workers, chunk_size):
    related = _related()
    serial_rows = related.export(tmp_path / "serial.parquet", k=7, chunk_size=chunk_size)["rows"]
    result = related.export(tmp_path / "parallel", k=7, chunk_size=chunk_size,
                            workers=workers, max_pending=1)
    serial = pd.read_parquet(tmp_path / "serial.parquet")
    parts = sorted((tmp_path / "parallel").glob("part-*.parquet"))
    parallel = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert result["rows"] == serial_rows == len(parallel)
    assert result["parts"] == len(parts) == -(-int(related.eligible.sum()) // chunk_size)
    assert result["peak_chunks_in_flight"] <= workers + 1
    pd.testing.assert_frame_equal(parallel, serial)
    assert not (tmp_path / ".parallel.tmp").exists()


def test_parallel_export_replaces_an_old_directory(tmp_path):
    related = _related(n_items=60)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-09999.parquet").write_text("stale")
    related.export(tmp_path / "out", k=3, chunk_size=16, workers=2)
    assert not (tmp_path / "out" / "part-09999.parquet").exists()
    table = pd.read_parquet(tmp_path / "out")
    assert set(table["rank"]) == {1, 2, 3}
