"""Pair extraction larger than memory: DuckDB over Parquet, Parquet out.

:func:`extract_pairs_out_of_core` runs the *same* SQL text as the in-memory ``prepare`` stage
(:func:`relrec.data.sessions.sessionize_sql`, :mod:`relrec.data.pairs`) directly over
``read_parquet(...)`` of an interaction log, under ``SET memory_limit`` with a spill directory,
and writes every result with ``COPY ... TO ... (FORMAT parquet)``. Nothing is materialised in
pandas: item indices, the global time split, the bulk-group filter and the cold flags are all
computed in SQL, so memory is bounded by DuckDB's limit whatever the log size.

Input: a Parquet file (or glob) with ``user_id, item_id, timestamp`` and optionally
``session_id`` — clean interactions (what ingest produces; duplicates are not removed here).
Output (a ``pairs/`` directory as in docs/ARCHITECTURE.md, plus ``item_map.parquet``):
``train_pairs.parquet`` (trigger_index, candidate_index, pair_count), ``valid_pairs.parquet``
and ``test_pairs.parquet`` (trigger_index, target_index, cold, user_id), ``item_stats.parquet``
(item_index, trigger_frequency, candidate_frequency, train_interactions, in_train). Every
table is written in a total order (item_map and item_stats by item_index, train_pairs by
(trigger_index, candidate_index), held-out pairs by (user_id, trigger_index, target_index)),
so the same log gives the same files whatever DuckDB's thread count, and item_stats rows are
item indices (what :class:`relrec.run.RunData` reads positionally); the contents equal
:func:`relrec.data.prepare.extract_pairs` on the same data (tested).

Command line (used by ``benchmarks/bench_pairs_scaling.py``)::

    python -m relrec.data.outofcore interactions.parquet OUT_DIR --memory-limit 2GB
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np

from relrec.config import PrepareConfig
from relrec.data.pairs import (item_frequency_sql, item_stats_sql, next_item_pairs_sql,
                               training_pairs_sql)
from relrec.data.sessions import sessionize_sql
from relrec.data.split import TEST, VALID, TimeSplit, events_sql, higher_quantile_sql
from relrec.errors import InputError


def _sql_path(path: str | Path) -> str:
    return str(path).replace("'", "''")


def _higher_quantile_index(n: int, q: float) -> int:
    """The 0-based sorted position ``np.quantile(x, q, method="higher")`` picks (numpy's own
    float arithmetic, so the boundary is bit-for-bit the in-memory split's)."""
    virtual = np.float64(n) * np.float64(q) + (1.0 + np.float64(q) * (1.0 - 1.0 - 1.0)) - 1.0
    return int(min(max(np.ceil(virtual), 0), n - 1))


def _quantile_higher(connection, events: str, n: int, q: float) -> int:
    """Exact ``method="higher"`` quantile of ``timestamp`` from a per-timestamp histogram (no
    global sort of the raw log)."""
    position = _higher_quantile_index(n, q)
    return int(connection.execute(higher_quantile_sql(events, position)).fetchone()[0])


def time_split_sql(connection, events: str, valid_fraction: float,
                   test_fraction: float) -> TimeSplit:
    """:func:`relrec.data.split.time_split` computed in SQL over a relation."""
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must be < 1")
    n = int(connection.execute(f"SELECT COUNT(*) FROM {events}").fetchone()[0])
    if n == 0:
        raise InputError("no interactions to split")
    train_end = 1.0 - valid_fraction - test_fraction
    valid_start = _quantile_higher(connection, events, n, train_end)
    test_start = (_quantile_higher(connection, events, n, 1.0 - test_fraction)
                  if test_fraction > 0 else None)
    return TimeSplit(valid_start=valid_start, test_start=test_start)


def evaluation_group_sizes_sql(next_item_pairs: str, max_target_group: int) -> str:
    """Portable SQL (DuckDB and Spark): ``user_id, trigger_index, target_index, bulk`` from
    :func:`relrec.data.pairs.next_item_pairs_sql` — ``bulk``: the trigger's next group holds more
    than ``max_target_group`` items (left out of the held-out pairs, counted). Group sizes are
    per user, so this runs per user bucket."""
    return f"""
    WITH sized AS (
        SELECT user_id, trigger_index, target_index,
               COUNT(*) OVER (PARTITION BY user_id, session_key, trigger_position,
                              trigger_index) AS group_size
        FROM ({next_item_pairs}) next_item
    )
    SELECT user_id,
           CAST(trigger_index AS BIGINT) AS trigger_index,
           CAST(target_index AS BIGINT) AS target_index,
           group_size > {int(max_target_group)} AS bulk
    FROM sized
    """


def cold_flags_sql(evaluation_pairs: str, train_items: str) -> str:
    """Portable SQL adding ``cold`` to ``(user_id, trigger_index, target_index, bulk)`` rows: trigger or
    target has no training interaction (``train_items``: the item indices seen in training)."""
    return f"""
    SELECT p.user_id, p.trigger_index, p.target_index,
           NOT (a.item_index IS NOT NULL AND b.item_index IS NOT NULL) AS cold, p.bulk
    FROM {evaluation_pairs} p
    LEFT JOIN {train_items} a ON a.item_index = p.trigger_index
    LEFT JOIN {train_items} b ON b.item_index = p.target_index
    """


def finished_evaluation_pairs_sql(next_item_pairs: str, train_items: str,
                                  max_target_group: int) -> str:
    """Portable SQL (DuckDB and Spark) finishing :func:`relrec.data.pairs.next_item_pairs_sql`
    as ``prepare`` does in pandas: ``user_id, trigger_index, target_index, cold, bulk``."""
    return cold_flags_sql(f"({evaluation_group_sizes_sql(next_item_pairs, max_target_group)})",
                          train_items)


def connect_out_of_core(memory_limit: str | None = "2GB", temp_directory: str | Path | None = None,
                        threads: int | None = None) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    if memory_limit:
        connection.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_directory is not None:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        connection.execute(f"SET temp_directory = '{_sql_path(temp_directory)}'")
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    connection.execute("SET preserve_insertion_order = false")
    return connection


def extract_pairs_out_of_core(interactions: str | Path, out_dir: str | Path,
                              config: PrepareConfig | None = None, *,
                              memory_limit: str | None = "2GB",
                              temp_directory: str | Path | None = None,
                              threads: int | None = None,
                              user_buckets: int | None = None,
                              rows_per_bucket: int = 5_000_000,
                              connection: duckdb.DuckDBPyConnection | None = None) -> dict:
    """Sessions → split → pairs of a Parquet log, Parquet in and out; returns counts/timings.

    The self-joins run per user bucket (``hash(user_id) % user_buckets``; by default one bucket
    per ``rows_per_bucket`` interactions), each bucket's partial pairs go to Parquet, and one
    ``GROUP BY`` sums them — so peak memory follows the bucket, not the log.
    """
    if user_buckets is not None and user_buckets < 1:
        raise ValueError("user_buckets must be >= 1")
    config = config or PrepareConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if connection is None:
        connection = connect_out_of_core(memory_limit or config.duckdb_memory_limit,
                                         temp_directory or out_dir / ".duckdb_spill",
                                         threads or config.duckdb_threads)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    source = f"read_parquet('{_sql_path(interactions)}')"
    columns = {row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    missing = {"user_id", "item_id", "timestamp"} - columns
    if missing:
        raise InputError(f"{interactions}: missing column(s) {', '.join(sorted(missing))}")
    use_given_sessions = "session_id" in columns and bool(connection.execute(
        f"SELECT COUNT(*) FROM {source} WHERE session_id IS NOT NULL AND session_id <> ''"
    ).fetchone()[0])

    # dense item indices in item-id order (what ingest's finalize does for an items table)
    connection.execute(f"""
        CREATE OR REPLACE TEMP TABLE item_map AS
        SELECT item_id, CAST(ROW_NUMBER() OVER (ORDER BY item_id) - 1 AS BIGINT) AS item_index
        FROM (SELECT DISTINCT CAST(item_id AS VARCHAR) AS item_id FROM {source})""")
    n_items = int(connection.execute("SELECT COUNT(*) FROM item_map").fetchone()[0])
    connection.execute(f"COPY (SELECT * FROM item_map ORDER BY item_index) "
                       f"TO '{_sql_path(out_dir / 'item_map.parquet')}' (FORMAT parquet)")
    lap("item_map")

    split = time_split_sql(connection, source, config.valid_fraction, config.test_fraction)
    lap("time_split")
    connection.execute("CREATE OR REPLACE TEMP VIEW events AS "
                       + events_sql(source, "item_map", split, use_given_sessions))
    period_counts = dict(connection.execute(
        "SELECT period, COUNT(*) FROM events GROUP BY period").fetchall())
    counts_list = [int(period_counts.get(p, 0)) for p in range(3)]
    if counts_list[0] == 0 or counts_list[VALID] == 0 or (
            config.test_fraction > 0 and counts_list[TEST] == 0):
        raise InputError(
            f"time split {config.valid_fraction}/{config.test_fraction} leaves an empty period "
            f"(train/valid/test interactions: {counts_list}); too few distinct timestamps")
    lap("periods")

    total_interactions = int(sum(counts_list))
    if user_buckets is None:
        user_buckets = max(1, math.ceil(total_interactions / rows_per_bucket))
    work = out_dir / ".partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if user_buckets > 1:
        # one pass over the log writes it partitioned by user hash; sessions and pairs never
        # cross users, so every later self-join sees one bucket (bounded memory) at a time
        connection.execute(f"""
            COPY (SELECT *, CAST(hash(user_id) % {int(user_buckets)} AS INTEGER) AS user_bucket
                  FROM events)
            TO '{_sql_path(work / "events")}' (FORMAT parquet, PARTITION_BY (user_bucket))""")
        lap("partition_by_user")

    def bucket_events(bucket: int) -> str:
        if user_buckets == 1:
            return "events"
        files = sorted((work / "events" / f"user_bucket={bucket}").glob("*.parquet"))
        if not files:
            return "(SELECT * FROM events WHERE FALSE)"
        listed = ", ".join(f"'{_sql_path(f)}'" for f in files)
        return (f"(SELECT user_id, item_index, timestamp, session_id, period "
                f"FROM read_parquet([{listed}], hive_partitioning = false))")

    sessions_by_period = [0, 0, 0]
    for bucket in range(user_buckets):
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE sessionized AS "
            + sessionize_sql(bucket_events(bucket), config.session_gap_seconds,
                             use_given_sessions))
        connection.execute(f"COPY ({training_pairs_sql('sessionized', config.window)}) "
                           f"TO '{_sql_path(work / f'train_pairs_{bucket}.parquet')}' "
                           "(FORMAT parquet)")
        connection.execute(
            "COPY (SELECT item_index, COUNT(*) AS train_interactions FROM sessionized "
            f"WHERE period = 0 GROUP BY item_index) "
            f"TO '{_sql_path(work / f'train_items_{bucket}.parquet')}' (FORMAT parquet)")
        for name, period_code in (("valid", VALID), ("test", TEST)):
            sized = evaluation_group_sizes_sql(
                next_item_pairs_sql("sessionized", period_code, config.eval_lookahead),
                config.max_target_group)
            connection.execute(f"COPY ({sized}) TO "
                               f"'{_sql_path(work / f'{name}_pairs_{bucket}.parquet')}' "
                               "(FORMAT parquet)")
        for period, n in connection.execute(
                "SELECT period, COUNT(*) FROM (SELECT DISTINCT user_id, period, session_key "
                "FROM sessionized) GROUP BY period").fetchall():
            sessions_by_period[int(period)] += int(n)
        connection.execute("DROP TABLE IF EXISTS sessionized")
    lap("sessions_and_pairs")

    def partials(name: str) -> str:
        return f"read_parquet('{_sql_path(work / name)}_*.parquet')"

    train_path = out_dir / "train_pairs.parquet"
    connection.execute(f"""
        COPY (SELECT trigger_index, candidate_index, CAST(SUM(pair_count) AS BIGINT) AS pair_count
              FROM {partials('train_pairs')} GROUP BY trigger_index, candidate_index
              ORDER BY trigger_index, candidate_index)
        TO '{_sql_path(train_path)}' (FORMAT parquet)""")
    lap("train_pairs")

    connection.execute(f"""
        CREATE OR REPLACE TEMP TABLE train_items AS
        SELECT item_index, CAST(SUM(train_interactions) AS BIGINT) AS train_interactions
        FROM {partials('train_items')} GROUP BY item_index""")
    pairs_relation = f"read_parquet('{_sql_path(train_path)}')"
    stats_sql = item_stats_sql("item_map", f"({item_frequency_sql(pairs_relation)})",
                               "train_items")
    connection.execute(f"""
        COPY ({stats_sql} ORDER BY m.item_index)
        TO '{_sql_path(out_dir / 'item_stats.parquet')}' (FORMAT parquet)""")
    lap("item_stats")

    evaluation_counts = {}
    for name in ("valid", "test"):
        path = out_dir / f"{name}_pairs.parquet"
        connection.execute("CREATE OR REPLACE TEMP TABLE eval_pairs AS "
                           + cold_flags_sql(partials(f"{name}_pairs"), "train_items"))
        connection.execute(
            "COPY (SELECT trigger_index, target_index, cold, user_id FROM eval_pairs WHERE NOT bulk "
            "ORDER BY user_id, trigger_index, target_index) "
            f"TO '{_sql_path(path)}' (FORMAT parquet)")
        bulk, total = connection.execute(
            "SELECT COALESCE(SUM(CASE WHEN bulk THEN 1 ELSE 0 END), 0), COUNT(*) "
            "FROM eval_pairs").fetchone()
        evaluation_counts[f"{name}_pairs"] = int(total) - int(bulk)
        evaluation_counts[f"{name}_pairs_left_out_bulk_groups"] = int(bulk)
        connection.execute("DROP TABLE IF EXISTS eval_pairs")
        lap(f"{name}_pairs")

    distinct, total = connection.execute(
        f"SELECT COUNT(*), COALESCE(SUM(pair_count), 0) FROM {pairs_relation}").fetchone()
    shutil.rmtree(work, ignore_errors=True)
    lap("counts")
    return {
        "interactions": total_interactions,
        "n_items": n_items,
        "split": split.to_dict(),
        "interactions_by_period": dict(zip(["train", "valid", "test"], counts_list)),
        "sessions_by_period": {name: n for name, n in zip(["train", "valid", "test"],
                                                          sessions_by_period) if n},
        "user_buckets": int(user_buckets),
        "train_pairs_distinct": int(distinct),
        "train_pairs_total": int(total),
        **evaluation_counts,
        "sessions_from": "session_id column" if use_given_sessions else
        f"gap > {config.session_gap_seconds}s",
        "seconds": timings,
        "total_seconds": round(sum(timings.values()), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("interactions")
    parser.add_argument("out_dir")
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--temp-directory", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--user-buckets", type=int, default=None,
                        help="self-join per user-hash bucket (default: one per 5M interactions)")
    parser.add_argument("--window", type=int, default=PrepareConfig().window)
    parser.add_argument("--session-gap-seconds", type=int,
                        default=PrepareConfig().session_gap_seconds)
    args = parser.parse_args(argv)
    config = PrepareConfig(window=args.window, session_gap_seconds=args.session_gap_seconds)
    result = extract_pairs_out_of_core(args.interactions, args.out_dir, config,
                                       memory_limit=args.memory_limit,
                                       temp_directory=args.temp_directory, threads=args.threads,
                                       user_buckets=args.user_buckets)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
