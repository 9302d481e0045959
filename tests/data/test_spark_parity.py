"""The pair SQL gives the same answer on every engine: DuckDB in memory (``prepare``), DuckDB
out-of-core over Parquet, and Spark SQL in local mode ("the same SQL must be runnable
on a cluster engine")."""

from pathlib import Path

import pandas as pd
import pytest

from relrec.config import PrepareConfig
from relrec.data.outofcore import extract_pairs_out_of_core
from relrec.data.pairs import item_frequency_sql, next_item_pairs_sql, training_pairs_sql
from relrec.data.prepare import connect, extract_pairs
from relrec.data.sessions import sessionize_sql
from relrec.data.split import TEST, VALID, assign_period, time_split
from relrec.data.synthetic import generate


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype.kind in "iuf" and column not in ("session_key",):
            frame[column] = frame[column].astype("int64")
        elif frame[column].dtype.kind == "b":
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = frame[column].astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _events(interactions: pd.DataFrame, config: PrepareConfig, use_sessions: bool
            ) -> pd.DataFrame:
    """The ``events`` relation exactly as ``prepare.extract_pairs`` builds it."""
    split = time_split(interactions["timestamp"].to_numpy(), config.valid_fraction,
                       config.test_fraction)
    return pd.DataFrame({
        "user_id": interactions["user_id"].astype(str),
        "item_index": interactions["item_index"].astype("int64"),
        "timestamp": interactions["timestamp"].astype("int64"),
        "session_id": (interactions["session_id"].astype(str) if use_sessions
                       else pd.Series([""] * len(interactions), index=interactions.index)),
        "period": assign_period(interactions["timestamp"].to_numpy(), split).astype("int32"),
    })


def _duckdb_tables(events: pd.DataFrame, config: PrepareConfig, use_sessions: bool) -> dict:
    connection = connect(config)
    connection.register("events", events)
    connection.execute("CREATE TEMP TABLE sessionized AS "
                       + sessionize_sql("events", config.session_gap_seconds, use_sessions))
    connection.execute("CREATE TEMP TABLE training_pairs AS "
                       + training_pairs_sql("sessionized", config.window))
    tables = {
        "sessionized": connection.execute("SELECT * FROM sessionized").df(),
        "training": connection.execute("SELECT * FROM training_pairs").df(),
        "frequencies": connection.execute(item_frequency_sql("training_pairs")).df(),
    }
    for name, period in (("valid", VALID), ("test", TEST)):
        raw = next_item_pairs_sql("sessionized", period, config.eval_lookahead)
        tables[name] = connection.execute(raw).df()
    return tables


def _movielens_sample(directory: Path, rows: int = 2000) -> pd.DataFrame:
    """The first users' ratings: MovieLens has many same-second groups (unordered groups)."""
    ratings = pd.read_csv(directory / "ratings.csv", nrows=rows)
    codes, _ = pd.factorize(ratings["movieId"], sort=True)
    return pd.DataFrame({"user_id": ratings["userId"].astype(str), "item_index": codes,
                         "timestamp": ratings["timestamp"].astype("int64")})


def _synthetic_sample() -> pd.DataFrame:
    data = generate(n_items=300, n_topics=10, n_users=120, seed=3)
    interactions = data.interactions
    index = {item_id: i for i, item_id in enumerate(data.items["item_id"])}
    return pd.DataFrame({"user_id": interactions["user_id"],
                         "item_index": interactions["item_id"].map(index).astype("int64"),
                         "timestamp": interactions["timestamp"].astype("int64"),
                         "session_id": interactions["session_id"].astype(str)})


# -- DuckDB out-of-core == DuckDB in memory ------------------------------------------------
@pytest.mark.parametrize("user_buckets", [None, 3])
def test_out_of_core_matches_in_memory_prepare(tmp_path, user_buckets):
    data = generate(n_items=400, n_topics=10, n_users=150, seed=5)
    raw = data.interactions[["user_id", "item_id", "timestamp"]].copy()
    # a same-second group, to exercise the unordered-group rule through the Parquet path
    raw.loc[raw.index[5], "timestamp"] = raw.loc[raw.index[4], "timestamp"]
    raw.to_parquet(tmp_path / "interactions.parquet", index=False)
    config = PrepareConfig(window=2)
    counts = extract_pairs_out_of_core(tmp_path / "interactions.parquet", tmp_path / "out",
                                       config, memory_limit="64MB", threads=1,
                                       user_buckets=user_buckets)
    assert counts["user_buckets"] == (user_buckets or 1)
    assert not (tmp_path / "out" / ".partial").exists()
    item_map = pd.read_parquet(tmp_path / "out" / "item_map.parquet")
    assert item_map["item_index"].tolist() == list(range(len(item_map)))
    index = dict(zip(item_map["item_id"], item_map["item_index"]))
    interactions = raw.assign(item_index=raw["item_id"].map(index).astype("int64"))
    expected = extract_pairs(interactions, len(item_map), config)

    train = pd.read_parquet(tmp_path / "out" / "train_pairs.parquet")
    pd.testing.assert_frame_equal(_sorted(train), _sorted(expected.train_pairs))
    for name in ("valid", "test"):
        got = pd.read_parquet(tmp_path / "out" / f"{name}_pairs.parquet")
        pd.testing.assert_frame_equal(_sorted(got), _sorted(getattr(expected, f"{name}_pairs")))
    stats = pd.read_parquet(tmp_path / "out" / "item_stats.parquet").sort_values("item_index")
    pd.testing.assert_frame_equal(_sorted(stats), _sorted(expected.item_stats[stats.columns]))
    for key in ("train_pairs_distinct", "train_pairs_total", "valid_pairs", "test_pairs",
                "interactions_by_period", "sessions_by_period"):
        assert counts[key] == expected.counts[key], key
    assert counts["split"] == expected.split.to_dict()


# -- Spark SQL == DuckDB -------------------------------------------------------------------
@pytest.fixture(scope="module")
def spark():
    pyspark = pytest.importorskip("pyspark")
    del pyspark
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("relrec-parity")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1")
               .config("spark.default.parallelism", "1")
               # tiny data: compiling generated code costs more than it saves
               .config("spark.sql.codegen.wholeStage", "false")
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _assert_engines_agree(spark, interactions: pd.DataFrame, config: PrepareConfig,
                          use_sessions: bool) -> dict:
    from relrec.data.spark import extract_pairs_spark

    events = _events(interactions, config, use_sessions)
    duck = _duckdb_tables(events, config, use_sessions)
    pairs = extract_pairs_spark(spark, spark.createDataFrame(events), config,
                                use_given_sessions=use_sessions)
    spark_tables = {"sessionized": pairs.sessionized, "training": pairs.training_pairs,
                    "frequencies": pairs.frequencies, "valid": pairs.valid_pairs,
                    "test": pairs.test_pairs}
    for name, frame in duck.items():
        got = spark_tables[name].toPandas()
        assert list(got.columns) == list(frame.columns), name
        pd.testing.assert_frame_equal(_sorted(got), _sorted(frame), obj=name)
    return duck


def test_spark_matches_duckdb_on_movielens_sample(spark, movielens_small_dir):
    config = PrepareConfig(window=3)
    duck = _assert_engines_agree(spark, _movielens_sample(movielens_small_dir), config, False)
    # the sample is not trivial: pairs, same-second groups and held-out pairs all occur
    assert len(duck["training"]) > 1000 and len(duck["valid"]) > 0 and len(duck["test"]) > 0
    groups = duck["sessionized"].groupby(["user_id", "session_key", "group_position"]).size()
    assert (groups > 1).any()


def test_spark_matches_duckdb_with_given_sessions(spark):
    config = PrepareConfig(window=2, eval_lookahead=2)
    duck = _assert_engines_agree(spark, _synthetic_sample(), config, True)
    assert len(duck["training"]) > 100
    # prepare's own training pairs are the same SQL result
    interactions = _synthetic_sample()
    expected = extract_pairs(interactions, int(interactions["item_index"].max()) + 1, config)
    training = duck["training"]
    pd.testing.assert_frame_equal(_sorted(training), _sorted(expected.train_pairs))


def test_spark_cluster_job_writes_the_out_of_core_tables(spark, tmp_path):
    """The spark-submit job (item map and time split computed in Spark too) writes exactly
    the tables the out-of-core DuckDB path writes."""
    from relrec.data.spark import write_pair_tables

    data = generate(n_items=150, n_topics=8, n_users=40, seed=9)
    raw = data.interactions[["user_id", "item_id", "timestamp"]]
    raw.to_parquet(tmp_path / "interactions.parquet", index=False)
    config = PrepareConfig()
    result = write_pair_tables(spark, str(tmp_path / "interactions.parquet"),
                               str(tmp_path / "spark"), config)
    counts = extract_pairs_out_of_core(tmp_path / "interactions.parquet", tmp_path / "duck",
                                       config, threads=1)
    assert result["split"] == counts["split"]
    for table in ("item_map", "train_pairs", "item_stats", "valid_pairs", "test_pairs"):
        got = pd.read_parquet(tmp_path / "spark" / table)
        expected = pd.read_parquet(tmp_path / "duck" / f"{table}.parquet")
        assert list(got.columns) == list(expected.columns), table
        pd.testing.assert_frame_equal(_sorted(got), _sorted(expected), obj=table)
    assert counts["train_pairs_distinct"] > 0 and counts["test_pairs"] > 0
