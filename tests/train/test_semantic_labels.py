"""The semantic task's pseudo-labels (paper eq. 3) and the guard that drops them when they
carry no relatedness signal: noise text must not teach the tower anything."""

import shutil

import numpy as np
import pytest

from relrec.config import TrainConfig
from relrec.content.stage import write_content
from relrec.run import RunData
from relrec.train.setup import semantic_pair_labels


@pytest.fixture(scope="module")
def planted(synthetic_run, tmp_path_factory):
    """A copy of a shared synthetic run: the tests write text content into it."""
    run_dir, dataset = synthetic_run(n_items=300, n_topics=10, n_users=600,
                                     autoplay_rate=0.2, text_noise=0.3, seed=5)
    copy = tmp_path_factory.mktemp("labels") / "run"
    shutil.copytree(run_dir, copy)
    return RunData(copy), dataset


@pytest.mark.parametrize("rule", ["random-baseline", "quantile"])
def test_labels_from_topic_text_are_kept_and_noise_labels_dropped(planted, rule):
    run, dataset = planted
    config = TrainConfig(w_sem=10.0, semantic_threshold_rule=rule)
    write_content(run, "text", dataset.content_vectors, source="planted topics")
    notes: dict = {}
    labels = semantic_pair_labels(run, config, notes)
    assert labels is not None
    assert notes["semantic_labels"]["co_engagement_lift_distinct_pairs"] > 2.0
    assert "dropped" not in notes["semantic_labels"]

    noise = np.random.default_rng(0).normal(size=dataset.content_vectors.shape)
    write_content(RunData(run.run_dir), "text", noise.astype(np.float32), source="noise")
    notes = {}
    assert semantic_pair_labels(RunData(run.run_dir), config, notes) is None
    record = notes["semantic_labels"]
    assert 0.7 < record["co_engagement_lift_distinct_pairs"] < 1.3
    assert "dropped" in record and "semantic_min_lift" in record["dropped"]
    # the guard can be switched off (the paper's behaviour): labels come back
    kept = semantic_pair_labels(RunData(run.run_dir), config.model_copy(
        update={"semantic_min_lift": 0.0}), {})
    assert kept is not None and kept.any()
