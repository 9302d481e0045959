"""Hand-computed checks of the training losses (paper eq. 1-2, 5-7; Yi et al. 2019)."""

import math

import torch

from relrec.model.losses import (distillation_kl, log_sampling_probability, multitask_weights,
                                 opc_weights, sampled_softmax_loss)


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
