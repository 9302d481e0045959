"""Export every item's related list in parallel chunks with bounded memory (SPEC §5, issue 6).

:func:`export_parallel` splits the eligible triggers into chunks, searches them on a bounded
thread pool (FAISS releases the GIL during search, so threads run in parallel) and writes one
Parquet part file per chunk (``part-00000.parquet`` ...) into a directory — the layout Spark,
DuckDB (``read_parquet('dir/*.parquet')``) and pandas read as one table. At most
``workers + max_pending`` chunks are in flight, so memory is bounded by
``(workers + max_pending) · chunk_size · k`` result rows whatever the catalogue size. Rows and
their order within each part are exactly :meth:`RelatedItems.export`'s (tested).
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([("trigger", pa.string()), ("item", pa.string()), ("rank", pa.int32()),
                    ("score", pa.float32())])


def _chunk_table(related, chunk: np.ndarray, k: int, head: str | None) -> pa.Table:
    scores, indices = related.similar_indices(chunk, k, head)
    valid = indices >= 0
    trigger_ids = np.repeat(related.run.item_ids[chunk], k).reshape(len(chunk), k)
    ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), indices.shape)
    return pa.table({
        "trigger": pa.array(trigger_ids[valid].astype(str)),
        "item": pa.array(related.run.item_ids[indices[valid]].astype(str)),
        "rank": pa.array(ranks[valid]),
        "score": pa.array(scores[valid]),
    }, schema=SCHEMA.with_metadata(related.ranking_metadata(head)))


def export_parallel(related, directory: str | Path, k: int, *, chunk_size: int = 4096,
                    workers: int | None = None, max_pending: int | None = None,
                    head: str | None = None, progress=None) -> dict:
    """Every eligible item's top-k → ``directory/part-NNNNN.parquet``; returns counts.

    ``related`` is a :class:`relrec.index.related.RelatedItems`. The directory is written
    under a temporary name and renamed at the end (atomic for readers); an existing directory
    is replaced.
    """
    directory = Path(directory)
    workers = max(1, workers or min(4, os.cpu_count() or 1))
    max_pending = max(1, max_pending if max_pending is not None else workers)
    triggers = np.flatnonzero(related.eligible)
    starts = list(range(0, len(triggers), chunk_size))
    temporary = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)

    def work(part: int, start: int) -> int:
        chunk = triggers[start:start + chunk_size]
        table = _chunk_table(related, chunk, k, head)
        pq.write_table(table, temporary / f"part-{part:05d}.parquet")
        return table.num_rows

    rows = 0
    peak_in_flight = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for part, start in enumerate(starts):
            while len(pending) >= workers + max_pending:  # bound the chunks held in memory
                rows += pending.popleft().result()
                if progress is not None:
                    progress(chunk_size)
            pending.append(pool.submit(work, part, start))
            peak_in_flight = max(peak_in_flight, len(pending))
        while pending:
            rows += pending.popleft().result()
            if progress is not None:
                progress(chunk_size)
    if directory.exists():
        shutil.rmtree(directory)
    temporary.replace(directory)
    return {"rows": rows, "parts": len(starts), "workers": workers,
            "peak_chunks_in_flight": peak_in_flight, "triggers": int(len(triggers))}
