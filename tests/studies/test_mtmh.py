"""MTMH known answers on planted data: a teacher that knows the topics (synthetic topic vectors)
makes the relevance head on-topic, and the α quota curve trades topic match against recall."""

import pytest

from relrec.config import RunConfig
from relrec.studies.mtmh import REFERENCE, run_mtmh_study
from relrec.train.presets import resolve_train_config


@pytest.fixture(scope="module")
def study(synthetic_run):
    config = RunConfig()
    # ID-only tower: the topics can reach the relevance head only through the teacher
    config.train = resolve_train_config(config.train, "mtmh", {
        "max_epochs": 6, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20, "use_text": False, "use_visual": False})
    config.evaluate.n_bootstrap = 200
    # the synthetic teacher: topic centroid + noise vectors; topics are used only for scoring
    run_dir, dataset = synthetic_run(
        config, text=True, n_items=400, n_topics=10, n_users=900, sessions_per_user=4,
        session_length=8, autoplay_rate=0.25, popularity_exponent=0.5, seed=1, text_noise=0.3)
    return run_dir, run_mtmh_study(run_dir, config)


def _value(result, system, metric="topic_match_rate@10"):
    return result.row(system).summary["all"][metric]


def test_relevance_head_raises_topic_match_over_the_engagement_head(study):
    _, result = study
    paired = result.row("MTMH relevance head").paired_vs_reference
    assert paired["topic_match_rate@10"]["low"] > 0.1
    assert _value(result, "MTMH relevance head")["value"] > 0.9
    # the engagement head keeps the recall
    assert paired["recall@10"]["high"] < 0


def test_alpha_curve_trades_topic_match_for_recall(study):
    run_dir, result = study
    alphas = [point["x"] for point in result.curves["alpha"]]
    topic = [_value(result, f"MTMH α={a}")["value"] for a in alphas]
    recall = [_value(result, f"MTMH α={a}", "recall@10")["value"] for a in alphas]
    assert topic[0] > topic[-1] + 0.2 and recall[-1] > recall[0] + 0.1
    # near-monotone along the curve (small bootstrap-size wiggles allowed)
    assert all(b <= a + 0.02 for a, b in zip(topic, topic[1:]))
    assert all(b >= a - 0.02 for a, b in zip(recall, recall[1:]))
    # the ends are exactly the heads
    assert _value(result, "MTMH α=1.0") == _value(result, REFERENCE)
    assert _value(result, "MTMH α=0.0") == _value(result, "MTMH relevance head")
    report = run_dir / "study" / "mtmh"
    assert (report / "alpha_recall_vs_relevance.png").exists()
    assert "alpha_recall_vs_relevance" in (report / "report.html").read_text()
    assert {"MTSH (one head, multi-task)", "STMH α=0.5"} <= {r.system for r in result.rows}
