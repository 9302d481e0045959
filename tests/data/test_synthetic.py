"""Synthetic data with planted structure: the planted answers must be recoverable."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest

from relrec.data.synthetic import (
    SyntheticConfig,
    generate,
    stream_interactions_to_parquet,
    topic_name,
    write_dataset,
)

SMALL = dict(n_items=400, n_topics=10, n_users=300, seed=5)


@pytest.fixture(scope="module")
def dataset():
    return generate()


def same_topic_run_lengths(dataset):
    """Lengths of maximal runs of consecutive same-primary-topic items within sessions."""
    topic = dataset.item_topic[dataset.interactions["item_id"].str[1:].astype(int).to_numpy()]
    session = dataset.interactions["session_id"].to_numpy()
    new_run = np.ones(len(topic), dtype=bool)
    new_run[1:] = (topic[1:] != topic[:-1]) | (session[1:] != session[:-1])
    starts = np.flatnonzero(new_run)
    return np.diff(np.append(starts, len(topic)))


# ------------------------------------------------------------------------------- config / API


def test_config_forbids_unknown_fields_and_checks_sizes():
    with pytest.raises(pydantic.ValidationError):
        SyntheticConfig(n_itemz=3)
    with pytest.raises(pydantic.ValidationError):
        SyntheticConfig(n_items=5, n_topics=10)
    with pytest.raises(pydantic.ValidationError):
        generate(autoplay_rate=1.5)
    config = SyntheticConfig(n_items=50, n_topics=5, n_users=10)
    assert generate(config, seed=1).config.seed == 1


def test_determinism_by_seed():
    first, second = generate(**SMALL), generate(**SMALL)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.transitions, second.transitions)
    np.testing.assert_array_equal(first.content_vectors, second.content_vectors)
    np.testing.assert_array_equal(first.popularity, second.popularity)

    other = generate(**{**SMALL, "seed": 6})
    assert not np.array_equal(other.item_topic, first.item_topic)
    assert not first.interactions["item_id"].equals(other.interactions["item_id"])

    # session parameters leave the catalogue untouched
    satiated = generate(**SMALL, satiation=0.5, autoplay_rate=0.1)
    pd.testing.assert_frame_equal(satiated.items, first.items)
    np.testing.assert_array_equal(satiated.content_vectors, first.content_vectors)


def test_schema_and_dtypes(dataset, tmp_path):
    interactions, items = dataset.interactions, dataset.items
    assert list(interactions.columns) == ["user_id", "item_id", "timestamp", "session_id",
                                          "weight"]
    assert pd.api.types.is_string_dtype(interactions["user_id"])
    assert pd.api.types.is_string_dtype(interactions["item_id"])
    assert interactions["timestamp"].dtype == np.int64
    assert interactions["weight"].dtype == np.float64
    assert (interactions["weight"] == 1.0).all()
    assert all(isinstance(s, str) for s in interactions["session_id"])
    assert interactions["user_id"].nunique() == 1500

    assert list(items.columns) == ["item_id", "title", "description", "tags", "topics",
                                   "image", "video"]
    assert items["item_id"].tolist() == [f"i{i}" for i in range(2000)]
    assert all(isinstance(t, str) and t for t in items["title"])
    assert items["description"].isna().any() and items["description"].notna().any()
    assert all(isinstance(t, list) and len(t) <= 3 for t in items["tags"])
    assert items["image"].isna().all() and items["video"].isna().all()
    assert set(interactions["item_id"]) <= set(items["item_id"])

    n_items = len(items)
    assert dataset.content_vectors.dtype == np.float32
    assert dataset.content_vectors.shape == (n_items, 32)
    assert np.issubdtype(dataset.item_topic.dtype, np.integer)
    assert dataset.item_topic.shape == (n_items,)
    assert set(np.unique(dataset.item_topic)) == set(range(20))
    assert dataset.popularity.shape == (n_items,)
    assert dataset.popularity.sum() == pytest.approx(1.0)
    # topics column: primary topic first, then the secondary one
    for topics, primary, secondary in zip(items["topics"], dataset.item_topic,
                                          dataset.item_secondary_topic):
        assert topics[0] == dataset.topic_names[primary] == topic_name(primary, 20)
        assert len(topics) == (2 if secondary >= 0 else 1)
    assert dataset.topic_names[7] == "topic_07"
    secondary_share = (dataset.item_secondary_topic >= 0).mean()
    assert 0.15 < secondary_share < 0.25

    paths = write_dataset(dataset, tmp_path / "out")
    interactions_table = pq.read_table(paths["interactions"])
    items_table = pq.read_table(paths["items"])
    assert interactions_table.num_rows == len(interactions)
    assert interactions_table.schema.field("timestamp").type == pa.int64()
    assert interactions_table.schema.field("session_id").type == pa.string()
    assert items_table.schema.field("tags").type == pa.list_(pa.string())
    assert items_table.schema.field("topics").type == pa.list_(pa.string())
    assert items_table.column("topics").to_pylist() == items["topics"].tolist()
    assert items_table.column("description").null_count == items["description"].isna().sum()


def test_topic_names_never_appear_in_text(dataset):
    items = dataset.items
    texts = (items["title"].tolist() + items["description"].dropna().tolist()
             + [tag for tags in items["tags"] for tag in tags])
    assert not any("topic" in text.lower() for text in texts)
    assert not any(any(ch.isdigit() for ch in text) for text in texts)


def test_text_carries_topic_noisily():
    """Title words come mostly from the item's own topic vocabulary at low noise, less at high."""
    def own_vocabulary_share(text_noise):
        data = generate(n_items=400, n_topics=10, n_users=5, text_noise=text_noise)
        words_by_topic = {}
        for words, topic in zip(data.items["title"], data.item_topic):
            words_by_topic.setdefault(topic, []).extend(w.lower() for w in words.split())
        counts = {t: pd.Series(w).value_counts() for t, w in words_by_topic.items()}
        # a word "belongs" to the topic whose titles use it most
        owner = {}
        for topic, count in counts.items():
            for word, n in count.items():
                if n > owner.get(word, (None, 0))[1]:
                    owner[word] = (topic, n)
        hits = [owner[w.lower()][0] == t for words, t in zip(data.items["title"], data.item_topic)
                for w in words.split()]
        return np.mean(hits)

    clean, noisy = own_vocabulary_share(0.1), own_vocabulary_share(0.8)
    assert clean > 0.85
    assert 0.1 < noisy < clean - 0.3


# ------------------------------------------------------------------------- planted structure


def test_power_law_popularity(dataset):
    counts = dataset.interactions["item_id"].value_counts()
    top = max(1, len(dataset.items) // 100)
    assert counts.iloc[:top].sum() / counts.sum() > 0.10
    # the planted probabilities are a power law, randomly spread over topics
    ordered = np.sort(dataset.popularity)[::-1]
    assert ordered[0] / ordered[9] == pytest.approx(10 ** 1.1, rel=1e-6)
    top_items = np.argsort(-dataset.popularity)[:200]
    assert len(np.unique(dataset.item_topic[top_items])) == 20
    # every topic has popular and niche items, and most of the catalogue is engaged
    assert counts.size > 0.8 * len(dataset.items)


def test_on_topic_and_autoplay_transitions(dataset):
    transitions = dataset.transitions
    assert len(transitions) == len(dataset.interactions) - dataset.interactions[
        "session_id"].nunique()
    assert not transitions["is_satiation"].any()  # satiation=0 by default
    autoplay = dataset.autoplay_pair_mask
    assert autoplay.mean() == pytest.approx(0.25, abs=0.02)
    assert (transitions["from_index"] != transitions["to_index"]).all()

    topic_sets = dataset.item_topic_sets()
    shares_topic = np.array([bool(topic_sets[a] & topic_sets[b]) for a, b in
                             zip(transitions["from_index"], transitions["to_index"])])
    assert shares_topic[~autoplay].mean() > 0.95
    same_primary = (dataset.item_topic[transitions["from_index"]]
                    == dataset.item_topic[transitions["to_index"]])
    assert same_primary[~autoplay].mean() > 0.8

    # autoplay lands on globally popular items, mostly in another topic
    targets = transitions.loc[autoplay, "to_index"].to_numpy()
    assert np.isin(targets, dataset.autoplay_pool).all()
    top_2_percent = np.argsort(-dataset.popularity)[:40]
    assert np.isin(targets, top_2_percent).all()
    assert (~same_primary[autoplay]).mean() > 0.7
    assert shares_topic[autoplay].mean() < 0.5


def test_content_vectors_recover_topic_noisily(dataset):
    vectors = dataset.content_vectors
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    planted = (vectors @ dataset.topic_centroids.T).argmax(axis=1)
    accuracy = (planted == dataset.item_topic).mean()
    chance = 1 / 20
    assert 5 * chance < accuracy < 0.95
    # the same from class means estimated on the data (what a test without centroids does)
    means = np.stack([vectors[dataset.item_topic == t].mean(axis=0) for t in range(20)])
    estimated = (vectors @ means.T).argmax(axis=1)
    assert 5 * chance < (estimated == dataset.item_topic).mean() < 0.97
    # less noise, better recovery
    clean = generate(n_users=5, text_noise=0.1)
    clean_accuracy = ((clean.content_vectors @ clean.topic_centroids.T).argmax(axis=1)
                      == clean.item_topic).mean()
    assert clean_accuracy > 0.98


def test_satiation_shortens_same_topic_runs():
    base = generate(**SMALL, autoplay_rate=0.1)
    satiated = generate(**SMALL, autoplay_rate=0.1, satiation=0.5)
    assert not base.transitions["is_satiation"].any()
    flags = satiated.transitions["is_satiation"].to_numpy()
    assert flags.any()
    assert same_topic_run_lengths(satiated).mean() < 0.8 * same_topic_run_lengths(base).mean()
    # a satiated step always leaves the primary topic
    tr = satiated.transitions[flags]
    assert (satiated.item_topic[tr["from_index"]] != satiated.item_topic[tr["to_index"]]).all()
    # and its probability grows with the run just seen: never right after a topic change
    steps = satiated.transitions
    topics = satiated.item_topic
    run = np.ones(len(steps), dtype=int)
    from_topic = topics[steps["from_index"].to_numpy()]
    to_topic = topics[steps["to_index"].to_numpy()]
    session = steps["session_id"].to_numpy()
    for k in range(1, len(steps)):  # run of same-primary-topic items ending at from_item
        if session[k] == session[k - 1] and from_topic[k - 1] == to_topic[k - 1]:
            run[k] = run[k - 1] + 1
    not_auto = ~steps["is_autoplay"].to_numpy()
    assert not flags[not_auto & (run == 1)].any()
    rate_2 = flags[not_auto & (run == 2)].mean()
    rate_long = flags[not_auto & (run >= 4)].mean()
    assert rate_2 == pytest.approx(0.5, abs=0.08)
    assert rate_long > rate_2 + 0.15


def test_timestamps_and_sessions(dataset):
    data = dataset.interactions
    same_user = data["user_id"].to_numpy()[1:] == data["user_id"].to_numpy()[:-1]
    same_session = data["session_id"].to_numpy()[1:] == data["session_id"].to_numpy()[:-1]
    gaps = np.diff(data["timestamp"].to_numpy())
    assert (gaps[same_session] >= 10).all() and (gaps[same_session] <= 600).all()
    assert (gaps[same_user & ~same_session] > 2 * 3600).all()
    # a 30-minute sessionization gap recovers the planted sessions exactly
    new_session = np.ones(len(data), dtype=bool)
    new_session[1:] = ~same_user | (gaps > 30 * 60)
    assert new_session.sum() == data["session_id"].nunique()
    assert data["timestamp"].min() >= 1_600_000_000
    lengths = data.groupby("session_id").size()
    assert lengths.mean() == pytest.approx(8.0, rel=0.05)
    sessions_per_user = data.groupby("user_id")["session_id"].nunique()
    assert sessions_per_user.min() >= 1
    assert sessions_per_user.mean() == pytest.approx(4.0, rel=0.05)


# ----------------------------------------------------------------------------------- streaming


def test_stream_writes_exact_rows_in_bounded_chunks(tmp_path):
    path = tmp_path / "big" / "log.parquet"
    config = SyntheticConfig(n_items=300, n_topics=6, seed=2)
    result = stream_interactions_to_parquet(path, 50_000, config=config, chunk_size=10_000)
    assert result["rows"] == 50_000 and result["n_items"] == 300
    assert result["bytes"] == path.stat().st_size > 0
    assert result["chunks"] == 5
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_rows == 50_000
    assert parquet.metadata.num_row_groups == 5
    assert all(parquet.metadata.row_group(k).num_rows <= 10_000 for k in range(5))
    assert parquet.schema_arrow.names == ["user_id", "item_id", "timestamp"]
    assert list(tmp_path.joinpath("big").iterdir()) == [path]  # no temporary left over

    table = parquet.read().to_pandas()
    assert table["user_id"].nunique() == result["n_users"]
    assert set(table["item_id"]) <= {f"i{i}" for i in range(300)}
    # each user's rows are contiguous and their timestamps increase
    same_user = table["user_id"].to_numpy()[1:] == table["user_id"].to_numpy()[:-1]
    assert (~same_user).sum() == table["user_id"].nunique() - 1
    gaps = np.diff(table["timestamp"].to_numpy())
    assert (gaps[same_user] >= 10).all()
    assert ((gaps[same_user] <= 600) | (gaps[same_user] > 2 * 3600)).all()
    n_sessions = (~same_user).sum() + 1 + (gaps[same_user] > 30 * 60).sum()
    assert 50_000 / n_sessions == pytest.approx(8.0, rel=0.1)
    # the planted popularity shows through
    counts = table["item_id"].value_counts()
    assert counts.iloc[:3].sum() / counts.sum() > 0.10

    again = tmp_path / "again.parquet"
    stream_interactions_to_parquet(again, 50_000, config=config, chunk_size=10_000)
    assert pq.read_table(again).equals(pq.read_table(path))
    empty = stream_interactions_to_parquet(tmp_path / "empty.parquet", 0, config=config)
    assert empty["rows"] == 0 and pq.read_table(tmp_path / "empty.parquet").num_rows == 0
