"""relrec tune-blend on planted data: the content blend moves lists toward the planted topics,
the choice follows the recorded validation rule and every later load ranks with it."""

import json

import pytest

from relrec.config import EvaluateConfig, RankConfig, RunConfig
from relrec.content.stage import write_content
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.train.blend_tuning import set_rank_after_training, tune_content_blend
from relrec.related import RelatedItems
from relrec.rerank.neighbours import NEIGHBOURS_FILE
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config


@pytest.fixture(scope="module")
def trained_cf(tmp_path_factory):
    dataset = generate(n_items=300, n_topics=10, n_users=500, autoplay_rate=0.4,
                       text_noise=0.3, seed=4)
    run_dir = tmp_path_factory.mktemp("blend") / "run"
    prepare_run(run_dir, RunConfig(), interactions=dataset.interactions, items=dataset.items)
    write_content(RunData(run_dir), "text", dataset.content_vectors, source="synthetic")
    config = RunConfig()
    config.train = resolve_train_config(config.train, "cf", {
        "max_epochs": 4, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20})
    train_run(run_dir, config, progress=False)
    return run_dir


def test_blend_is_tuned_on_validation_and_applied(trained_cf):
    config = RunConfig(evaluate=EvaluateConfig(n_bootstrap=50))
    result = tune_content_blend(trained_cf, config, weights=(0.5, 4.0))
    topic = {row["content_blend"]: row["topic_match_rate@10"]["value"] for row in result["rows"]}
    recall = {row["content_blend"]: row["recall@10"]["value"] for row in result["rows"]}
    assert list(topic) == [0.0, 0.5, 4.0]
    # 40% autoplay jumps make CF lists off-topic; the planted content pulls them back
    assert topic[4.0] > topic[0.0] + 0.05
    chosen = result["chosen"]
    assert recall[chosen] >= recall[0.0]
    assert all(topic[chosen] >= topic[w] for w in topic if recall[w] >= recall[0.0])
    manifest = json.loads((trained_cf / "manifest.json").read_text())
    assert manifest["config"]["rank"]["content_blend"] == chosen
    assert manifest["rank_tuning"]["rule"].startswith("highest validation topic match")
    assert RelatedItems.load(trained_cf).rank.content_blend == chosen

    # retraining with another preset ranks by the model alone again: no silent carry-over
    message = set_rank_after_training(trained_cf, RunConfig(), explicit_rank=False)
    assert "content blend 0" in message
    assert RelatedItems.load(trained_cf).rank.content_blend == 0.0


def test_an_explicit_ease_blend_fits_the_served_table(trained_cf):
    """`[rank] ease_blend` set by hand on a non-auto preset: the served model gets its EASE
    neighbour table (λ tuned on validation), loads with it, and the lists change."""
    config = RunConfig(rank=RankConfig(ease_blend=1.0), evaluate=EvaluateConfig(n_bootstrap=10))
    message = set_rank_after_training(trained_cf, config, explicit_rank=True)
    assert "EASE blend 1" in message and "EASE neighbour table" in message
    assert (trained_cf / "model" / NEIGHBOURS_FILE).is_file()
    blended = RelatedItems.load(trained_cf)
    assert blended.rank.ease_blend == 1.0
    alone = RelatedItems.load(trained_cf, ease_blend=0.0)
    ids = blended.run.item_ids[:50]
    assert (blended.similar_items(ids, 10)[0] != alone.similar_items(ids, 10)[0]).any()
    set_rank_after_training(trained_cf, RunConfig(), explicit_rank=False)
    assert RelatedItems.load(trained_cf).rank.ease_blend == 0.0
    assert not (trained_cf / "model" / NEIGHBOURS_FILE).exists()  # no stale table shipped
