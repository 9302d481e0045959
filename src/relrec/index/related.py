"""The library's entry point for related lists from a trained run.

    model = RelatedItems.load("runs/ml")
    ids, scores = model.similar_items(["1", "260"], k=10)   # batched, like implicit

Candidates are the items with a usable embedding: items seen in training, plus — when the
model has content inputs — every item (cold items through the content path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from relrec.index.faiss_index import ItemIndex, choose_index_kind
from relrec.model.tower import ItemTower
from relrec.run import RunData


class RelatedItems:
    def __init__(self, run: RunData, embeddings: dict[str, np.ndarray], eligible: np.ndarray,
                 index_kind: str = "exact"):
        self.run = run
        self.embeddings = embeddings  # head name -> (n_items, dim)
        self.eligible = eligible
        self.heads = list(embeddings)
        self.indexes = {}
        for head, vectors in embeddings.items():
            index = ItemIndex(vectors.shape[1], kind=index_kind)
            index.add(vectors[eligible], np.flatnonzero(eligible))
            self.indexes[head] = index

    @classmethod
    def load(cls, run_dir: str | Path, index_kind: str | None = None,
             model_name: str = "model") -> "RelatedItems":
        run = RunData(run_dir)
        tower = ItemTower.load(run.run_dir / model_name)
        from relrec.train.content_inputs import attach_content

        attach_content(tower, run)
        from relrec.train.trainer import item_embeddings

        known = run.in_train
        embeddings = {head: item_embeddings(tower, known, head=head)
                      for head in tower.config.heads}
        has_content = bool(tower.config.text_dim or tower.config.visual_dim)
        eligible = np.ones(run.n_items, dtype=bool) if has_content else known.copy()
        return cls(run, embeddings, eligible, index_kind or choose_index_kind(int(eligible.sum())))

    @property
    def head(self) -> str:
        return self.heads[0]

    def similar_indices(self, trigger_indices: np.ndarray, k: int, head: str | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices) of shape (n, k); the trigger itself is excluded."""
        head = head or self.head
        trigger_indices = np.asarray(trigger_indices, dtype=np.int64)
        return self.indexes[head].search(self.embeddings[head][trigger_indices], k,
                                         exclude=trigger_indices)

    def similar_items(self, item_ids, k: int = 10, head: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(item_ids), k); ids are strings, '' pads short rows."""
        scores, indices = self.similar_indices(self.run.indices_for_ids(list(item_ids)), k, head)
        ids = np.where(indices >= 0, self.run.item_ids[np.maximum(indices, 0)], "")
        return ids, scores

    def export(self, path: str | Path, k: int, chunk_size: int = 4096, head: str | None = None,
               progress=None) -> int:
        """Every eligible item's top-k list → Parquet (trigger, item, rank, score), in chunks."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        schema = pa.schema([("trigger", pa.string()), ("item", pa.string()),
                            ("rank", pa.int32()), ("score", pa.float32())])
        triggers = np.flatnonzero(self.eligible)
        rows = 0
        with pq.ParquetWriter(str(temporary), schema) as writer:
            for start in range(0, len(triggers), chunk_size):
                chunk = triggers[start:start + chunk_size]
                scores, indices = self.similar_indices(chunk, k, head)
                valid = indices >= 0
                trigger_ids = np.repeat(self.run.item_ids[chunk], k).reshape(len(chunk), k)
                ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), indices.shape)
                table = pa.table({
                    "trigger": pa.array(trigger_ids[valid].astype(str)),
                    "item": pa.array(self.run.item_ids[indices[valid]].astype(str)),
                    "rank": pa.array(ranks[valid]),
                    "score": pa.array(scores[valid]),
                }, schema=schema)
                writer.write_table(table)
                rows += table.num_rows
                if progress is not None:
                    progress(len(chunk))
        temporary.replace(path)
        return rows

    def describe(self, item_ids, k: int = 10, head: str | None = None) -> pd.DataFrame:
        ids, scores = self.similar_items(item_ids, k, head)
        titles = self.run.items.set_index("item_id")["title"]
        records = []
        for trigger, row_ids, row_scores in zip(item_ids, ids, scores):
            for rank, (item, score) in enumerate(zip(row_ids, row_scores), start=1):
                if item:
                    records.append({"trigger": trigger, "rank": rank, "item": item,
                                    "title": titles.get(item, ""), "score": float(score)})
        return pd.DataFrame(records)
