"""Read access to a run directory (see docs/ARCHITECTURE.md), loaded lazily and cached."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from relrec.config import RunConfig
from relrec.errors import RunDirError
from relrec.manifest import read_manifest


class RunData:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise RunDirError(f"{self.run_dir}: not a directory; run `relrec prepare` first")
        self.manifest = read_manifest(self.run_dir)

    def _parquet(self, relative: str) -> pd.DataFrame:
        path = self.run_dir / relative
        if not path.exists():
            raise RunDirError(f"{path}: missing; run `relrec prepare` first")
        return pd.read_parquet(path)

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.model_validate(self.manifest["config"])

    @cached_property
    def items(self) -> pd.DataFrame:
        return self._parquet("data/items.parquet")

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy(dtype=object)

    @cached_property
    def index_of_id(self) -> dict[str, int]:
        return {item_id: index for index, item_id in enumerate(self.item_ids)}

    @cached_property
    def train_pairs(self) -> pd.DataFrame:
        return self._parquet("pairs/train_pairs.parquet")

    @cached_property
    def valid_pairs(self) -> pd.DataFrame:
        return self._parquet("pairs/valid_pairs.parquet")

    @cached_property
    def test_pairs(self) -> pd.DataFrame:
        return self._parquet("pairs/test_pairs.parquet")

    @cached_property
    def train_sessions(self) -> pd.DataFrame:
        return self._parquet("pairs/train_sessions.parquet")

    @cached_property
    def item_stats(self) -> pd.DataFrame:
        return self._parquet("pairs/item_stats.parquet")

    @cached_property
    def in_train(self) -> np.ndarray:
        return self.item_stats["in_train"].to_numpy(dtype=bool)

    @property
    def training_end(self) -> int:
        """Interactions before this timestamp are the training period's: the split's validation
        start, or for a refit run (:func:`relrec.data.prepare.write_refit_run`) its own, which
        takes in the validation period."""
        split = self.manifest.get("refit_split") or self.manifest["split"]
        return int(split["valid_start"])

    @cached_property
    def trigger_frequency(self) -> np.ndarray:
        return self.item_stats["trigger_frequency"].to_numpy(dtype=np.int64)

    @cached_property
    def candidate_frequency(self) -> np.ndarray:
        return self.item_stats["candidate_frequency"].to_numpy(dtype=np.int64)

    @cached_property
    def topic_matrix(self) -> sp.csr_matrix:
        """Binary item × topic matrix of the *evaluation* topics (never a feature)."""
        topics = self.items["topics"]
        vocabulary: dict[str, int] = {}
        rows, cols = [], []
        for row, item_topics in enumerate(topics):
            for topic in (item_topics if item_topics is not None else []):
                rows.append(row)
                cols.append(vocabulary.setdefault(topic, len(vocabulary)))
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(self.n_items, max(len(vocabulary), 1)))

    @property
    def has_topics(self) -> bool:
        return self.topic_matrix.nnz > 0

