"""Pair extraction throughput (interaction rows/s) on a real log, against a same-run reference.

Reference: DuckDB sorting the same events by (user, timestamp) — the least any sessionizer
must do — so `pairs time / sort time` says how far the full sessions → pairs → split SQL is
from that floor.

    python benchmarks/bench_pairs.py [--movielens ../shared/data/ml-latest-small] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import duckdb
import numpy as np

from relrec.config import PrepareConfig
from relrec.data.ingest import finalize
from relrec.data.movielens import load_movielens
from relrec.data.prepare import extract_pairs
from relrec.data.validate import RejectedRows, filter_unknown_items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--movielens", default="../shared/data/ml-latest-small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rejected = RejectedRows(records=[])
    interactions, items, _ = load_movielens(args.movielens, rejected=rejected)
    interactions = filter_unknown_items(interactions, items, rejected, name="ratings")
    interactions, items = finalize(interactions, items)
    config = PrepareConfig()
    pair_seconds, sort_seconds = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        tables = extract_pairs(interactions, len(items), config)
        pair_seconds.append(time.perf_counter() - started)
        connection = duckdb.connect()
        connection.register("events", interactions[["user_id", "item_index", "timestamp"]])
        started = time.perf_counter()
        connection.execute("CREATE TEMP TABLE s AS SELECT * FROM events "
                           "ORDER BY user_id, timestamp, item_index").fetchall()
        sort_seconds.append(time.perf_counter() - started)
    rows = len(interactions)
    best_pairs, best_sort = min(pair_seconds), min(sort_seconds)
    print(json.dumps({
        "interactions": rows, "training_pairs": int(tables.train_pairs["pair_count"].sum()),
        "pairs_seconds": best_pairs, "rows_per_second": rows / best_pairs,
        "sort_reference_seconds": best_sort, "pairs_over_sort": best_pairs / best_sort,
        "repeats": args.repeats, "median_pairs_seconds": float(np.median(pair_seconds)),
    }, indent=2))


if __name__ == "__main__":
    main()
