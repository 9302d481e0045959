"""Hand-computed checks of the training losses (paper eq. 1-2, 5-7; Yi et al. 2019)."""

import math

import pytest
import torch

from relrec.model.losses import (distillation_kl, distillation_loss, distillation_targets,
                                 log_sampling_probability, multitask_weights, opc_weights,
                                 sampled_softmax_loss)


def test_sampled_softmax_matches_hand_computation():
    # 2 pairs, 1-d embeddings: triggers [1, 1], candidates [1, -1], temperature 1
    t = torch.tensor([[1.0], [1.0]])
    c = torch.tensor([[1.0], [-1.0]])
    loss, ce = sampled_softmax_loss(t, c, torch.tensor([10, 11]), torch.tensor([20, 21]), 1.0)
    # row 0: logits [1, -1], positive 1 → -log(e/(e+e^-1)); row 1: logits [1, -1], positive -1
    row0 = -math.log(math.e / (math.e + math.exp(-1)))
    row1 = -math.log(math.exp(-1) / (math.e + math.exp(-1)))
    assert torch.allclose(ce, torch.tensor([row0, row1]), atol=1e-6)
    assert abs(float(loss) - (row0 + row1) / 2) < 1e-6


def test_accidental_hits_are_masked():
    # rows 0 and 1 share the same positive item 20: neither may act as the other's negative
    t = torch.tensor([[1.0], [1.0], [1.0]])
    c = torch.tensor([[1.0], [1.0], [0.0]])
    _, ce = sampled_softmax_loss(t, c, torch.tensor([1, 2, 3]), torch.tensor([20, 20, 30]), 1.0)
    expected = -math.log(math.e / (math.e + 1.0))  # only the item-30 column remains
    assert torch.allclose(ce[:2], torch.tensor([expected, expected]), atol=1e-6)


def test_trigger_appearing_as_another_rows_candidate_is_masked():
    t = torch.tensor([[1.0], [0.5]])
    c = torch.tensor([[0.0], [1.0]])
    # row 0's trigger is item 7, which is row 1's candidate: masked for row 0 → CE 0
    _, ce = sampled_softmax_loss(t, c, torch.tensor([7, 8]), torch.tensor([9, 7]), 1.0)
    assert abs(float(ce[0])) < 1e-6


def test_weights_scale_per_pair_and_temperature_sharpens():
    t = torch.tensor([[1.0], [1.0]])
    c = torch.tensor([[1.0], [-1.0]])
    ids_t, ids_c = torch.tensor([1, 2]), torch.tensor([3, 4])
    _, ce = sampled_softmax_loss(t, c, ids_t, ids_c, 1.0)
    loss, _ = sampled_softmax_loss(t, c, ids_t, ids_c, 1.0, weights=torch.tensor([2.0, 0.0]))
    assert abs(float(loss) - 2.0 * float(ce[0]) / 2) < 1e-6
    _, sharp = sampled_softmax_loss(t, c, ids_t, ids_c, 0.1)
    assert sharp[0] < ce[0]


def test_logq_correction_subtracts_log_probability():
    t = torch.tensor([[1.0], [1.0]])
    c = torch.tensor([[1.0], [1.0]])
    log_q = torch.tensor([math.log(0.9), math.log(0.1)])
    _, ce = sampled_softmax_loss(t, c, torch.tensor([1, 2]), torch.tensor([3, 4]), 1.0,
                                 candidate_log_q=log_q)
    # row 0 logits [1 - log .9, 1 - log .1]: the rare negative gets a higher logit
    expected = -math.log(math.exp(-math.log(0.9)) / (math.exp(-math.log(0.9)) +
                                                     math.exp(-math.log(0.1))))
    assert abs(float(ce[0]) - expected) < 1e-5


def test_multitask_weight_is_eq5_as_one_cross_entropy():
    t = torch.randn(4, 3)
    c = torch.randn(4, 3)
    ids_t, ids_c = torch.arange(4), torch.arange(10, 14)
    label = torch.tensor([1, 0, 1, 0])
    _, ce = sampled_softmax_loss(t, c, ids_t, ids_c, 0.5)
    w_co, w_sem = 1.0, 10.0
    eq5 = (w_sem * (label * ce) + w_co * ce).mean()  # w_sem·L_sem + w_co·L_co
    loss, _ = sampled_softmax_loss(t, c, ids_t, ids_c, 0.5,
                                   weights=multitask_weights(label, w_co, w_sem))
    assert torch.allclose(loss, eq5, atol=1e-6)


def test_opc_weight_eq7():
    weights = opc_weights(torch.tensor([1, 9, 0]))
    assert torch.allclose(weights, torch.tensor([1 / math.log(2), 1 / math.log(10),
                                                 1 / math.log(2)]))


def test_log_sampling_probability_is_share_of_positives():
    log_q = log_sampling_probability(torch.tensor([3, 1]))
    assert torch.allclose(log_q.exp(), torch.tensor([0.75, 0.25]))


def test_distillation_kl_zero_when_model_matches_teacher():
    x = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    assert float(distillation_kl(x, x, x, x, 0.1, 0.1)) < 1e-6
    y = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    assert float(distillation_kl(y, y, x, x, 0.1, 0.1)) > 0


# --- the fused loss against autograd's reference formulation ------------------------------

def _reference_cross_entropy(t, c, trigger_ids, candidate_ids, temperature, weights, log_q,
                             positive_columns, normalizer):
    """Paper eq. 2 as autograd writes it: B×C mask of accidental hits, logQ, cross-entropy."""
    rows = t.shape[0]
    positive_ids = candidate_ids[positive_columns]
    hits = ((candidate_ids[None] == positive_ids[:, None])
            | (candidate_ids[None] == trigger_ids[:, None]))
    hits[torch.arange(rows), positive_columns] = False
    logits = (t @ c.T / temperature - log_q[None]).masked_fill(hits, float("-inf"))
    ce = torch.nn.functional.cross_entropy(logits, positive_columns, reduction="none")
    return (weights * ce).sum() / normalizer, ce


def _random_batch(seed, rows=24, columns=24, dim=6, items=9):
    generator = torch.Generator().manual_seed(seed)
    t = torch.randn(rows, dim, dtype=torch.float64, generator=generator).requires_grad_()
    c = torch.randn(columns, dim, dtype=torch.float64, generator=generator).requires_grad_()
    trigger_ids = torch.randint(0, items, (rows,), generator=generator)
    candidate_ids = torch.randint(0, items, (columns,), generator=generator)
    weights = torch.rand(rows, dtype=torch.float64, generator=generator)
    log_q = torch.randn(columns, dtype=torch.float64, generator=generator)
    return t, c, trigger_ids, candidate_ids, weights, log_q, generator


def _gradients(value, leaves):
    return torch.autograd.grad(value, leaves, retain_graph=True)


@pytest.mark.parametrize("seed", range(8))
def test_fused_cross_entropy_equals_reference_values_and_gradients(seed):
    # few distinct items: many accidental hits, repeated triggers and positives
    t, c, trigger_ids, candidate_ids, weights, log_q, _ = _random_batch(seed)
    rows = t.shape[0]
    for positive_columns, normalizer in ((torch.arange(rows), None),
                                         (torch.randperm(rows), 3.0 * rows)):
        loss, ce = sampled_softmax_loss(t, c, trigger_ids, candidate_ids, 0.7, weights, log_q,
                                        positive_columns=positive_columns,
                                        normalizer=normalizer)
        expected, expected_ce = _reference_cross_entropy(
            t, c, trigger_ids, candidate_ids, 0.7, weights, log_q, positive_columns,
            normalizer or rows)
        assert torch.allclose(loss, expected) and torch.allclose(ce, expected_ce)
        for mine, reference in zip(_gradients(loss, (t, c)), _gradients(expected, (t, c))):
            assert torch.allclose(mine, reference)


def test_fused_cross_entropy_stays_finite_where_the_positive_probability_underflows():
    # the positive scores 200 below the best negative: its softmax entry is 0 in float32
    t = torch.tensor([[1.0], [1.0]], requires_grad=True)
    c = torch.tensor([[-100.0], [100.0]], requires_grad=True)
    loss, ce = sampled_softmax_loss(t, c, torch.tensor([1, 2]), torch.tensor([3, 4]), 1.0)
    assert abs(float(ce[0]) - 200.0) < 1e-3 and float(ce[1]) < 1e-6
    loss.backward()
    assert torch.isfinite(t.grad).all() and torch.isfinite(c.grad).all()


@pytest.mark.parametrize("seed", range(6))
def test_fused_relevance_head_equals_cross_entropy_plus_masked_kl(seed):
    """MTMH's relevance head: L_co + w_r·KL(P_content ‖ Q_model) on the same unit-vector
    scores, with items lacking content and a trigger's own item excluded from the KL."""
    from relrec.train.multihead import masked_distillation_kl

    t, c, trigger_ids, candidate_ids, weights, log_q, generator = _random_batch(seed)
    rows = t.shape[0]
    content = torch.nn.functional.normalize(
        torch.randn(9, 5, dtype=torch.float64, generator=generator), dim=1)
    has_content = torch.rand(9, generator=generator) > 0.3
    has_content[candidate_ids[0]] = True
    unit_t, unit_c = (torch.nn.functional.normalize(x, dim=1) for x in (t, c))
    targets = distillation_targets(content[trigger_ids], content[candidate_ids], 0.1,
                                   trigger_ids, candidate_ids, weight=0.8,
                                   column_ok=has_content[candidate_ids],
                                   row_ok=has_content[trigger_ids])
    loss, _ = sampled_softmax_loss(unit_t, unit_c, trigger_ids, candidate_ids, 0.5, weights,
                                   log_q, distillation=targets)
    cross_entropy, _ = _reference_cross_entropy(unit_t, unit_c, trigger_ids, candidate_ids, 0.5,
                                                weights, log_q, torch.arange(rows), rows)
    column_mask = (has_content[candidate_ids][None]
                   & (candidate_ids[None] != trigger_ids[:, None]))
    kl = masked_distillation_kl(unit_t, unit_c, content[trigger_ids], content[candidate_ids],
                                0.5, 0.1, column_mask=column_mask,
                                row_mask=has_content[trigger_ids])
    assert torch.allclose(loss, cross_entropy + 0.8 * kl)
    for mine, reference in zip(_gradients(loss, (t, c)),
                               _gradients(cross_entropy + 0.8 * kl, (t, c))):
        assert torch.allclose(mine, reference)
    # the KL alone (a head whose cross-entropy uses other scores)
    alone = distillation_loss(unit_t, unit_c, 0.5, targets)
    assert torch.allclose(alone, 0.8 * kl)
    for mine, reference in zip(_gradients(alone, (t, c)), _gradients(0.8 * kl, (t, c))):
        assert torch.allclose(mine, reference)


def test_distillation_targets_drop_rows_without_a_usable_column():
    content = torch.eye(3, dtype=torch.float64)
    ids = torch.tensor([0, 1, 2])
    # column 2 has no content; row 1's only other usable column is its own item → unusable
    column_ok = torch.tensor([False, True, False])
    targets = distillation_targets(content, content, 0.1, ids, ids, weight=2.0,
                                   column_ok=column_ok)
    assert targets.row_weights.tolist() == [1.0, 0.0, 1.0]
    assert torch.allclose(targets.probabilities.sum(dim=1),
                          torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert targets.probabilities[:, [0, 2]].abs().sum() == 0


def test_fused_loss_without_gradients_and_with_a_float32_teacher_for_a_float64_tower():
    t, c, trigger_ids, candidate_ids, weights, log_q, generator = _random_batch(11)
    content = torch.nn.functional.normalize(torch.randn(9, 5, generator=generator), dim=1)
    targets = distillation_targets(content[trigger_ids], content[candidate_ids], 0.1,
                                   trigger_ids, candidate_ids)  # float32 teacher
    loss, _ = sampled_softmax_loss(t, c, trigger_ids, candidate_ids, 0.5, weights, log_q,
                                   distillation=targets)
    with torch.no_grad():
        value, _ = sampled_softmax_loss(t, c, trigger_ids, candidate_ids, 0.5, weights, log_q,
                                        distillation=targets)
    assert loss.dtype == torch.float64 and not value.requires_grad
    assert torch.allclose(loss.detach(), value)
