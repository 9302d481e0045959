"""``RelatedItems``: the one object a user holds.

    from relrec import RelatedItems
    model = RelatedItems.fit("runs/mine", RunConfig())          # what `relrec train` trains
    ids, scores = model.similar_items(["42", "7"], k=10)        # batched, like implicit
    ids, scores = model.similar_items(["42"], k=10, filter_items=["13"], diversify=True)
    model.export("runs/mine/export/related.parquet", k=100, workers=2)
    model.save("models/mine"); RelatedItems.load("models/mine")

``similar_items(ids, k, *, filter_items=None, alpha=None, diversify=False, page=0)`` returns
``(ids, scores)`` of shape ``(len(ids), k)``; short rows are padded with ``""`` / ``-inf``
(:mod:`relrec.index.base`). ``alpha`` mixes the two heads of an MTMH model (1 = engagement,
0 = relevance; ignored for one head), ``diversify`` re-ranks with the run's CAViaR model,
``page`` (0-based) pages through the diversified list. The CLI, the evaluator and the HTTP
service all query through it.
"""

from __future__ import annotations

import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from relrec.config import RunConfig
from relrec.errors import RunDirError
from relrec.rerank.lists import RankedLists
from relrec.rerank.neighbours import NEIGHBOURS_FILE
from relrec.train.pipeline import train_preset

EXPORT_SCHEMA = pa.schema([("trigger", pa.string()), ("item", pa.string()),
                           ("rank", pa.int32()), ("score", pa.float32())])
# What a trained model is made of, relative to its run directory: `save` copies these, a
# served bundle (relrec.serve.bundle) stages and hashes them.
MODEL_FILES = ("manifest.json", "model/tower_config.json", "model/weights.safetensors",
               "data/items.parquet", "pairs/item_stats.parquet")
OPTIONAL_MODEL_FILES = ("model/multihead.json", "model/known_items.npy",
                        f"model/{NEIGHBOURS_FILE}",
                        "pairs/train_pairs.parquet", "content/text.npy",
                        "content/text_ok.npy", "content/visual.npy", "content/visual_ok.npy")
OPTIONAL_MODEL_FOLDERS = ("rerank",)


class RelatedItems(RankedLists):
    """A trained run's related lists (see the module docstring)."""

    @classmethod
    def fit(cls, run_dir: str | Path, config: RunConfig | None = None, *,
            preset: str | None = None, progress: bool = False, **load_options
            ) -> "RelatedItems":
        """Train a prepared run exactly as ``relrec train RUN [--preset P]`` does (preset
        resolution, training, the ranking chosen after it), then load it."""
        train_preset(run_dir, config or RunConfig(), preset=preset, progress=progress)
        return cls.load(run_dir, **load_options)

    def save(self, directory: str | Path) -> Path:
        """Copy the model's files (weights, catalogue, statistics, content vectors, the
        re-ranker) into ``directory``, which :meth:`load` reads like a run directory."""
        source = Path(self.run.run_dir)
        target = Path(directory)
        if target.resolve() == source.resolve():
            return target
        if target.exists() and any(target.iterdir()):
            raise RunDirError(f"{target}: not empty; save into a new or empty folder")
        staging = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for name in MODEL_FILES + OPTIONAL_MODEL_FILES:
            if (source / name).is_file():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, staging / name)
            elif name in MODEL_FILES:
                raise RunDirError(f"{source}: {name} is missing; run `relrec train` first")
        for folder in OPTIONAL_MODEL_FOLDERS:
            if (source / folder).is_dir():
                shutil.copytree(source / folder, staging / folder)
        if target.exists():
            target.rmdir()
        staging.replace(target)
        return target

    # -- export ------------------------------------------------------------------------------
    def _export_table(self, chunk: np.ndarray, k: int, options: dict) -> pa.Table:
        scores, indices = self._search(chunk, k, **options)
        valid = indices >= 0
        trigger_ids = np.repeat(self.item_ids_[chunk], k).reshape(len(chunk), k)
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), indices.shape)
        return pa.table({
            "trigger": pa.array(trigger_ids[valid].astype(str)),
            "item": pa.array(self.item_ids_[indices[valid]].astype(str)),
            "rank": pa.array(ranks[valid]),
            "score": pa.array(scores[valid].astype(np.float32)),
        }, schema=EXPORT_SCHEMA.with_metadata(self.ranking_metadata()))

    def export(self, path: str | Path, k: int, *, workers: int = 1, chunk_size: int = 4096,
               max_pending: int | None = None, alpha: float | None = None,
               diversify: bool = False, window: int = 20, page_size: int = 10,
               progress=None) -> dict:
        """Every eligible item's top-k list as rows (trigger, item, rank, score).

        ``path`` ending in ``.parquet`` is one file; any other path is a folder of part files
        (``part-00000.parquet`` …, one per chunk: the layout Spark and DuckDB read as one
        table). Chunks are searched on ``workers`` threads (FAISS releases the GIL) with at
        most ``workers + max_pending`` in memory, and written in trigger order, so the rows are
        the same whatever ``workers``. Written under a temporary name and renamed at the end.
        With ``diversify`` the first k slots are re-ranked ``page_size`` at a time.
        """
        path = Path(path)
        workers = max(1, int(workers))
        max_pending = max(1, max_pending if max_pending is not None else workers)
        options = {"alpha": alpha}
        if diversify:
            options.update(diversify=True, page=0, window=window, page_size=page_size)
        triggers = np.flatnonzero(self.eligible)
        starts = list(range(0, len(triggers), chunk_size))
        single_file = path.suffix == ".parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        if temporary.is_dir():
            shutil.rmtree(temporary)
        if not single_file:
            temporary.mkdir(parents=True, exist_ok=True)

        def table_for(start: int) -> pa.Table:
            return self._export_table(triggers[start:start + chunk_size], k, options)

        rows, peak = 0, 0
        writer = pq.ParquetWriter(str(temporary), EXPORT_SCHEMA.with_metadata(
            self.ranking_metadata())) if single_file else None
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending: deque = deque()

                def drain_one() -> None:
                    nonlocal rows
                    part, future = pending.popleft()
                    table = future.result()
                    if writer is not None:
                        writer.write_table(table)
                    else:
                        pq.write_table(table, temporary / f"part-{part:05d}.parquet")
                    rows += table.num_rows
                    if progress is not None:
                        progress(min(chunk_size, len(triggers) - starts[part]))

                for part, start in enumerate(starts):
                    while len(pending) >= workers + max_pending:  # bound the chunks held
                        drain_one()
                    pending.append((part, pool.submit(table_for, start)))
                    peak = max(peak, len(pending))
                while pending:
                    drain_one()
        finally:
            if writer is not None:
                writer.close()
        if path.is_dir():
            shutil.rmtree(path)
        temporary.replace(path)
        return {"rows": rows, "parts": len(starts), "workers": workers,
                "peak_chunks_in_flight": peak, "triggers": int(len(triggers))}
