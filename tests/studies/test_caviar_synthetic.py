"""CAViaR known answer on planted satiation: users leave a topic after a same-topic run, so
the contextual model (context = items already consumed) predicts engagement better than the
point-wise one, and the greedy re-rank of an on-topic main ranking raises intra-list
diversity and session engagement. Derived topics are k-means clusters of content vectors."""

import pytest

from relrec.config import RunConfig
from relrec.studies.caviar import CONTEXTUAL, run_caviar_study
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config


@pytest.fixture(scope="module")
def caviar(synthetic_run):
    config = RunConfig()
    config.prepare.valid_fraction = 0.3  # enough validation sessions for the re-ranker
    config.train = resolve_train_config(config.train, "mtmh", {
        "max_epochs": 4, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20, "use_text": False, "use_visual": False})
    config.evaluate.n_bootstrap = 200
    run_dir, dataset = synthetic_run(
        config, text=True, n_items=300, n_topics=8, n_users=900, sessions_per_user=4,
        session_length=10, autoplay_rate=0.1, popularity_exponent=0.5, satiation=0.5,
        text_noise=0.3, seed=2)
    train_run(run_dir, config, progress=False)
    # main ranking: the MTMH quota merge at α = 0.5 (on-topic, as engagement rankers tend to be)
    return run_dir, run_caviar_study(run_dir, config, alpha=0.5, n_topics=8, epochs=3,
                                     max_triggers=6000)


def test_contextual_model_has_lower_normalized_entropy(caviar):
    _, (_, summary) = caviar
    difference = summary["normalized_entropy"]["contextual_minus_pointwise"]
    assert difference["high"] < 0
    assert set(summary["calibration"]) >= {"point-wise model", "contextual model"}


def test_rerank_raises_diversity_and_session_engagement(caviar):
    run_dir, (result, _) = caviar
    paired = result.row(CONTEXTUAL).paired_vs_reference
    assert paired["intra_list_diversity@10"]["low"] > 0
    assert paired["session_engagement@10"]["low"] > 0
    assert (run_dir / "rerank" / "weights.safetensors").exists()
    assert (run_dir / "study" / "caviar" / "caviar_calibration.png").exists()
