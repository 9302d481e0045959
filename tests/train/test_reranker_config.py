"""The ``[rerank]`` section: TOML values reach the re-ranker trainer, options override them."""

import pytest
from typer.testing import CliRunner

from relrec import cli
from relrec.config import RerankConfig, RunConfig, load_config


def test_toml_rerank_values_reach_the_trainer_and_options_override(tmp_path, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text("[rerank]\nslate_size = 12\nepochs = 3\nlearning_rate = 0.01\n")
    seen = {}

    def fake_train(run_dir, settings, **overrides):
        seen.update(run_dir=run_dir, settings=settings, overrides=overrides)
        return {"slots": 1, "slates": 1, "positive_rate": 0.5, "seconds": 0.0,
                "default": {"recommended": False,
                            "holdout_ne": {"contextual": 0.9, "pointwise": 0.8},
                            "distinct_derived_topics": {"main": 3.0, "diversified": 4.0}}}

    monkeypatch.setattr(cli, "train_reranker", fake_train)
    result = CliRunner().invoke(cli.app, ["train-reranker", str(tmp_path / "run"), "--config",
                                          str(config), "--epochs", "2", "--topics", "7"])
    assert result.exit_code == 0, result.output
    assert "diversify by default: not recommended" in " ".join(result.output.split())
    settings = seen["settings"]
    assert isinstance(settings, RerankConfig) and not seen["overrides"]
    assert (settings.slate_size, settings.learning_rate) == (12, 0.01)  # from the TOML
    assert (settings.epochs, settings.n_topics) == (2, 7)                 # from the options
    assert settings.context_size == RerankConfig().context_size           # the default


def test_unknown_or_invalid_rerank_keys_are_refused(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[rerank]\nslate_sise = 12\n")
    with pytest.raises(ValueError, match="slate_sise"):
        load_config(config)
    result = CliRunner().invoke(cli.app, ["train-reranker", str(tmp_path), "--config",
                                          str(config)])
    assert result.exit_code == 2 and "slate_sise" in result.output
    with pytest.raises(ValueError, match="learning_rate"):
        RunConfig.model_validate({"rerank": {"learning_rate": 0}})


def test_train_reranker_refuses_an_unknown_override(tmp_path):
    from relrec.train.reranker import train_reranker

    with pytest.raises(ValueError, match="slate_sise"):
        train_reranker(tmp_path, RerankConfig(), slate_sise=3)


def test_distinct_topics_counts_each_list_and_ignores_padding():
    import numpy as np

    from relrec.train.reranker import _distinct_topics

    topics = np.array([0, 0, 1, 2, 2])
    assert _distinct_topics(np.array([[0, 1, 2], [3, 4, -1]]), topics) == 1.5
