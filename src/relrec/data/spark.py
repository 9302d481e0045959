"""The pair-extraction SQL on Spark, for logs that outgrow one machine.

:func:`extract_pairs_spark` registers temp views and runs the *same SQL text* as the DuckDB
path (:func:`relrec.data.sessions.sessionize_sql`, :func:`relrec.data.pairs.training_pairs_sql`,
:func:`~relrec.data.pairs.next_item_pairs_sql`, :func:`~relrec.data.pairs.item_frequency_sql`)
through ``spark.sql``. ``tests/data/test_spark_parity.py`` checks in local mode that the
results equal DuckDB's row for row.

On a cluster (see docs/SCALING.md)::

    pip install 'relrec[spark]'        # on the driver; executors need only pyspark
    spark-submit --master yarn --deploy-mode client \\
        --conf spark.sql.shuffle.partitions=2000 \\
        $(python -c 'import relrec.data.spark as m; print(m.__file__)') \\
        s3://bucket/interactions/ s3://bucket/relrec_pairs/ --window 3

The command line computes the item map and the global time split in Spark too (exact
``method="higher"`` quantiles from a per-timestamp histogram) and writes the ``pairs/`` tables
of docs/ARCHITECTURE.md as Parquet directories; ``relrec train`` reads them after
``spark.read.parquet(...).toPandas()`` or via DuckDB's ``read_parquet('dir/*.parquet')``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from relrec.config import PrepareConfig
from relrec.data.pairs import (item_frequency_sql, item_stats_sql, next_item_pairs_sql,
                               training_pairs_sql)
from relrec.data.sessions import sessionize_sql
from relrec.data.split import TEST, VALID, events_sql, higher_quantile_sql
from relrec.data.outofcore import _higher_quantile_index
from relrec.data.outofcore import finished_evaluation_pairs_sql
from relrec.data.split import TimeSplit


@dataclass
class SparkPairs:
    """Spark DataFrames (lazy) of one extraction; names match the DuckDB temp tables."""
    sessionized: object
    training_pairs: object  # trigger_index, candidate_index, pair_count
    frequencies: object  # item_index, trigger_frequency, candidate_frequency
    valid_pairs: object  # user_id, session_key, trigger_position, trigger_index, target_index
    test_pairs: object | None


def extract_pairs_spark(spark, events_df, config: PrepareConfig | None = None, *,
                        use_given_sessions: bool | None = None, prefix: str = "relrec_",
                        cache: bool = True) -> SparkPairs:
    """Run the portable pair SQL on a Spark DataFrame ``events(user_id, item_index, timestamp,
    session_id, period)`` (period 0/1/2 = train/valid/test, as in :mod:`relrec.data.split`).

    ``use_given_sessions`` defaults to "some row has a non-empty session_id". The returned
    evaluation pairs are the raw SQL result (before the bulk-group filter and cold flags that
    :func:`relrec.data.prepare.extract_pairs` applies in pandas, and
    :func:`relrec.data.outofcore.extract_pairs_out_of_core` in SQL).
    """
    config = config or PrepareConfig()
    if use_given_sessions is None:
        use_given_sessions = "session_id" in events_df.columns and events_df.where(
            "session_id IS NOT NULL AND session_id <> ''").limit(1).count() > 0
    events, sessionized, training = (f"{prefix}events", f"{prefix}sessionized",
                                     f"{prefix}training_pairs")
    events_df.createOrReplaceTempView(events)
    sessionized_df = spark.sql(sessionize_sql(events, config.session_gap_seconds,
                                              use_given_sessions))
    if cache:
        sessionized_df = sessionized_df.cache()
    sessionized_df.createOrReplaceTempView(sessionized)
    training_df = spark.sql(training_pairs_sql(sessionized, config.window))
    if cache:
        training_df = training_df.cache()
    training_df.createOrReplaceTempView(training)
    frequencies = spark.sql(item_frequency_sql(training))
    valid = spark.sql(next_item_pairs_sql(sessionized, VALID, config.eval_lookahead))
    has_test = events_df.where(f"period = {TEST}").limit(1).count() > 0
    test = (spark.sql(next_item_pairs_sql(sessionized, TEST, config.eval_lookahead))
            if has_test else None)
    return SparkPairs(sessionized_df, training_df, frequencies, valid, test)


# -- cluster command line -------------------------------------------------------------------
def _quantile_higher(spark, view: str, n: int, q: float) -> int:
    position = _higher_quantile_index(n, q)
    return int(spark.sql(higher_quantile_sql(view, position)).collect()[0][0])


def events_from_interactions(spark, interactions_df, config: PrepareConfig):
    """Raw ``user_id, item_id, timestamp[, session_id]`` → (events DataFrame, item map, split).

    Item indices follow item-id order (as :mod:`relrec.data.outofcore` does); the time split
    is :func:`relrec.data.split.time_split`'s, exactly.
    """
    interactions_df.createOrReplaceTempView("relrec_raw")
    item_map = spark.sql("""
        SELECT item_id, CAST(ROW_NUMBER() OVER (ORDER BY item_id) - 1 AS BIGINT) AS item_index
        FROM (SELECT DISTINCT CAST(item_id AS STRING) AS item_id FROM relrec_raw)""")
    item_map.createOrReplaceTempView("relrec_item_map")
    n = interactions_df.count()
    valid_start = _quantile_higher(spark, "relrec_raw", n,
                                   1.0 - config.valid_fraction - config.test_fraction)
    test_start = (_quantile_higher(spark, "relrec_raw", n, 1.0 - config.test_fraction)
                  if config.test_fraction > 0 else None)
    split = TimeSplit(valid_start, test_start)
    events = spark.sql(events_sql("relrec_raw", "relrec_item_map", split,
                                  "session_id" in interactions_df.columns))
    return events, item_map, split


def write_pair_tables(spark, interactions: str, out_dir: str,
                      config: PrepareConfig | None = None) -> dict:
    """The cluster job: raw Parquet log → the ``pairs/`` tables of docs/ARCHITECTURE.md as
    Parquet directories (``item_map``, ``train_pairs``, ``item_stats``, ``valid_pairs``,
    ``test_pairs``), the same contents as :func:`relrec.data.outofcore.extract_pairs_out_of_core`.
    """
    config = config or PrepareConfig()
    events, item_map, split = events_from_interactions(spark, spark.read.parquet(interactions),
                                                       config)
    pairs = extract_pairs_spark(spark, events, config)
    out = str(out_dir).rstrip("/")
    item_map.write.mode("overwrite").parquet(f"{out}/item_map")
    pairs.training_pairs.write.mode("overwrite").parquet(f"{out}/train_pairs")
    spark.sql("SELECT item_index, COUNT(*) AS train_interactions FROM relrec_sessionized "
              "WHERE period = 0 GROUP BY item_index").createOrReplaceTempView("relrec_train_items")
    pairs.frequencies.createOrReplaceTempView("relrec_frequencies")
    spark.sql(item_stats_sql("relrec_item_map", "relrec_frequencies", "relrec_train_items")
              ).write.mode("overwrite").parquet(f"{out}/item_stats")
    for name, period_code in (("valid", VALID), ("test", TEST)):
        finished = spark.sql(finished_evaluation_pairs_sql(
            next_item_pairs_sql("relrec_sessionized", period_code, config.eval_lookahead),
            "relrec_train_items", config.max_target_group))
        # the column order of prepare's held-out pairs
        finished.where("NOT bulk").select("trigger_index", "target_index", "cold", "user_id"
                                          ).write.mode("overwrite").parquet(f"{out}/{name}_pairs")
    return {"split": split.to_dict(), "out": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="relrec pair extraction on Spark")
    parser.add_argument("interactions", help="Parquet file/dir with user_id,item_id,timestamp")
    parser.add_argument("out_dir")
    parser.add_argument("--window", type=int, default=PrepareConfig().window)
    parser.add_argument("--session-gap-seconds", type=int,
                        default=PrepareConfig().session_gap_seconds)
    parser.add_argument("--valid-fraction", type=float, default=PrepareConfig().valid_fraction)
    parser.add_argument("--test-fraction", type=float, default=PrepareConfig().test_fraction)
    args = parser.parse_args(argv)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("relrec-pairs").getOrCreate()
    config = PrepareConfig(window=args.window, session_gap_seconds=args.session_gap_seconds,
                           valid_fraction=args.valid_fraction, test_fraction=args.test_fraction)
    print(write_pair_tables(spark, args.interactions, args.out_dir, config))
    spark.stop()


if __name__ == "__main__":
    main()
