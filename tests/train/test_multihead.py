"""MTMH trainer: the masked distillation KL and a two-head model trained through `train_run`."""

import json

import numpy as np
import torch

from relrec.config import RunConfig
from relrec.content.stage import write_content
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.related import RelatedItems
from relrec.model.losses import distillation_kl
from relrec.run import RunData
from relrec.train.multihead import masked_distillation_kl
from relrec.train.operating_point import ALPHAS, choose_operating_point
from relrec.train.pipeline import train_preset, train_run
from relrec.train.presets import resolve_train_config


def test_masked_kl_equals_eq2_without_masks_and_ignores_masked_columns():
    torch.manual_seed(0)
    t, c = torch.randn(6, 4), torch.randn(6, 4)
    tc, cc = torch.randn(6, 5), torch.randn(6, 5)
    expected = distillation_kl(t, c, tc, cc, 0.5, 0.1)
    assert torch.allclose(masked_distillation_kl(t, c, tc, cc, 0.5, 0.1), expected, atol=1e-6)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[:, 2] = False
    a = masked_distillation_kl(t, c, tc, cc, 0.5, 0.1, column_mask=mask)
    c2, cc2 = c.clone(), cc.clone()
    c2[2] += 10.0
    cc2[2] -= 3.0
    assert torch.allclose(a, masked_distillation_kl(t, c2, tc, cc2, 0.5, 0.1, column_mask=mask))
    # identical distributions give zero KL; a masked-out row takes no part
    assert float(masked_distillation_kl(tc, cc, tc, cc, 0.1, 0.1)) < 1e-6
    rows = torch.tensor([True] * 5 + [False])
    part = masked_distillation_kl(t, c, tc, cc, 0.5, 0.1, row_mask=rows)
    assert torch.isfinite(part)
    t.requires_grad_(True)
    masked_distillation_kl(t, c, tc, cc, 0.5, 0.1, column_mask=mask).backward()
    assert torch.isfinite(t.grad).all()


def test_preset_mtmh_trains_two_heads_with_a_unit_relevance_head(tmp_path):
    dataset = generate(n_items=150, n_topics=5, n_users=250, sessions_per_user=3,
                       session_length=6, seed=4)
    run_dir = tmp_path / "run"
    config = RunConfig()
    config.train = resolve_train_config(config.train, "mtmh", {
        "max_epochs": 2, "batch_size": 128, "embedding_dim": 16, "id_dim": 16,
        "hidden_dims": [32], "early_stopping_k": 10, "use_visual": False})
    prepare_run(run_dir, config, interactions=dataset.interactions, items=dataset.items)
    write_content(RunData(run_dir), "text", dataset.content_vectors)
    summary = train_run(run_dir, config, progress=False)
    assert set(summary["valid_recall_by_head"]) == {"engagement", "relevance"}
    info = json.loads((run_dir / "model" / "multihead.json").read_text())
    assert info["normalized_heads"] == ["relevance"] and info["variant"] == "mtmh"
    assert summary["notes"]["teacher"]["modalities"] == ["text"]
    model = RelatedItems.load(run_dir)
    assert model.two_heads
    norms = np.linalg.norm(model.embeddings["relevance"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    triggers = np.arange(5)
    ids = model.item_ids_[triggers]
    indices = model.ranked_indices(ids, 10, alpha=0.3)
    assert indices.shape == (5, 10) and (indices >= 0).all() and model.query_notes(0.3) == []
    _, engagement = model._head_search(triggers, 10, "engagement")
    _, relevance = model._head_search(triggers, 10, "relevance")
    for row, trigger in enumerate(triggers):
        merged = indices[row].tolist()
        assert len(set(merged)) == 10 and trigger not in merged
        # α=0.3 mixes the heads: both heads' best items are in, nothing from outside them
        assert engagement[row, 0] in merged and relevance[row, 0] in merged
        assert set(merged) <= set(engagement[row]) | set(relevance[row])
    # the ends of α are the heads themselves
    np.testing.assert_array_equal(model.ranked_indices(ids, 10, alpha=1.0), engagement)
    np.testing.assert_array_equal(model.ranked_indices(ids, 10, alpha=0.0), relevance)


def test_train_preset_mtmh_chooses_the_served_alpha_on_validation(tmp_path):
    dataset = generate(n_items=150, n_topics=5, n_users=300, sessions_per_user=3,
                       session_length=6, seed=5)
    run_dir = tmp_path / "run"
    config = RunConfig()
    config.evaluate.n_bootstrap = 20
    prepare_run(run_dir, config, interactions=dataset.interactions, items=dataset.items)
    write_content(RunData(run_dir), "text", dataset.content_vectors)
    said = []
    summary = train_preset(run_dir, config, preset="mtmh", progress=False, say=said.append,
                           overrides={"max_epochs": 2, "batch_size": 128, "embedding_dim": 16,
                                      "id_dim": 16, "hidden_dims": [32],
                                      "early_stopping_k": 10})
    record = summary["mtmh_alpha"]
    assert [row["alpha"] for row in record["rows"]] == list(ALPHAS)
    expected = choose_operating_point(record["rows"], reference="alpha 1")["name"]
    assert f"alpha {record['chosen_alpha']:g}" == expected
    assert "topic_match_rate@10" in record["teacher"]
    assert isinstance(record["teacher_more_on_topic_than_engagement_head"], bool)
    assert RelatedItems.load(run_dir).default_alpha == record["chosen_alpha"]
    assert any(line.startswith("mtmh: served alpha") for line in said)
