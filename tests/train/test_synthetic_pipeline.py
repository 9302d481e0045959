"""Known answers on planted data: the whole pipeline through the Python API."""

import pytest

from relrec.config import EvaluateConfig, RunConfig
from relrec.evaluate.sealed import open_test_period
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.evaluate.peers import CoVisitation, Popularity
from relrec.related import RelatedItems
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config


@pytest.fixture(scope="module")
def trained_synthetic(synthetic_run):
    config = RunConfig()
    config.train = resolve_train_config(config.train, "cf", {
        "max_epochs": 10, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20, "logq_correction": True,
        "normalize_embeddings": False, "temperature": 1.0})
    run_dir, dataset = synthetic_run(
        config, n_items=400, n_topics=10, n_users=900, sessions_per_user=4, session_length=8,
        autoplay_rate=0.25, popularity_exponent=0.5, seed=1)
    train_run(run_dir, config, progress=False)
    return run_dir, dataset


def test_trained_model_recovers_planted_coengagement_better_than_popularity(trained_synthetic):
    run_dir, _ = trained_synthetic
    run = RunData(run_dir)
    config = EvaluateConfig(n_bootstrap=200)
    open_test_period(run, "pytest")
    segments = segment_pairs(run, "test", config)
    model = evaluate_system(run, RelatedItems.load(run_dir), "model", config, "test", segments)
    popularity = evaluate_system(run, Popularity().fit(run), "popularity", config, "test",
                                 segments)
    model_recall = model.summary["all"]["recall@10"]
    popular_recall = popularity.summary["all"]["recall@10"]
    assert model_recall["low"] > popular_recall["high"]
    # sessions mostly stay on topic, so the learned lists do too (popularity's do not)
    assert (model.summary["all"]["topic_match_rate@10"]["value"]
            > popularity.summary["all"]["topic_match_rate@10"]["value"] + 0.2)


def test_covisitation_peer_is_scored_on_the_same_triggers(trained_synthetic):
    run_dir, _ = trained_synthetic
    run = RunData(run_dir)
    config = EvaluateConfig(n_bootstrap=50)
    open_test_period(run, "pytest")
    segments = segment_pairs(run, "test", config)
    result = evaluate_system(run, CoVisitation().fit(run), "covisitation", config, "test",
                             segments)
    assert result.summary["all"]["counts"]["triggers"] == len(segments["all"].triggers)
    # the planted co-engagement is what co-visitation counts: it beats a popularity list
    popularity = evaluate_system(run, Popularity().fit(run), "popularity", config, "test",
                                 segments)
    assert popularity.summary["all"]["counts"] == result.summary["all"]["counts"]
    covisitation_recall = result.summary["all"]["recall@10"]
    assert covisitation_recall["low"] > popularity.summary["all"]["recall@10"]["high"], (
        covisitation_recall, popularity.summary["all"]["recall@10"])
