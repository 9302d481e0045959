"""Training losses as pure functions over a batch of (trigger, candidate) pairs.

References: *Balancing Semantic Relevance and Engagement in Related Video Recommendations*
(eq. 1-7); Yi et al. 2019, *Sampling-bias-corrected neural modeling for large corpus item
recommendations* (logQ correction); MTMH (eq. 2, distillation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sampled_softmax_loss(trigger_embeddings: torch.Tensor, candidate_embeddings: torch.Tensor,
                         trigger_ids: torch.Tensor, candidate_ids: torch.Tensor,
                         temperature: float, weights: torch.Tensor | None = None,
                         candidate_log_q: torch.Tensor | None = None,
                         positive_columns: torch.Tensor | None = None,
                         normalizer: float | None = None,
                         scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted in-batch sampled-softmax cross-entropy (paper eq. 2, eq. 5-6).

    Accidental hits — a column j whose candidate is the same item as row i's positive, or is
    row i's trigger itself — are masked to -inf so an item is never pushed away from itself.

    Returns ``(loss, per_pair_cross_entropy)`` with ``loss = Σ_i w_i · CE_i / normalizer``.
    The per-pair weight carries the multi-task objective: eq. 4 is eq. 2 masked by I(sem), it
    shares eq. 2's negatives, so ``w_sem·L_sem + w_co·L_co`` is exactly one cross-entropy with
    weight ``w_co + w_sem·I(sem)``; OPC (eq. 6-7) multiplies it by ``1/log(1+freq(trigger))``.

    ``positive_columns`` gives row i's positive column (default ``i``); a distributed caller
    passes the rank's offset into the gathered candidates. ``normalizer`` defaults to the number
    of rows (a plain mean when all weights are 1); DDP passes the global batch size.
    ``scores``: the B×B ``trigger · candidate / temperature`` already computed by the caller
    (a loss that shares them, e.g. the MTMH distillation), used instead of a second matmul.
    """
    rows = trigger_embeddings.shape[0]
    if positive_columns is None:
        positive_columns = torch.arange(rows, device=trigger_embeddings.device)
    # one pass builds the additive B×B bias (-logQ of the column, -inf on accidental hits);
    # addmm adds it to the logits matmul, so neither the masks nor logQ are autograd nodes
    positive_ids = candidate_ids[positive_columns]
    accidental = ((candidate_ids.unsqueeze(0) == positive_ids.unsqueeze(1))
                  | (candidate_ids.unsqueeze(0) == trigger_ids.unsqueeze(1)))
    accidental[torch.arange(rows, device=accidental.device), positive_columns] = False
    if candidate_log_q is not None:
        bias = torch.where(accidental, float("-inf"),
                           -candidate_log_q.to(trigger_embeddings.dtype).unsqueeze(0))
    else:
        bias = torch.zeros(accidental.shape, dtype=trigger_embeddings.dtype,
                           device=accidental.device).masked_fill_(accidental, float("-inf"))
    if scores is None:
        logits = torch.addmm(bias, trigger_embeddings, candidate_embeddings.T,
                             alpha=1.0 / temperature)
    else:
        logits = scores + bias
    cross_entropy = F.cross_entropy(logits, positive_columns, reduction="none")
    if weights is None:
        weights = torch.ones_like(cross_entropy)
    total = (weights * cross_entropy).sum()
    return total / (normalizer if normalizer is not None else rows), cross_entropy


def opc_weights(trigger_frequency: torch.Tensor) -> torch.Tensor:
    """Off-policy correction weight ``1 / log(1 + freq(trigger))`` (paper eq. 7).

    Triggers seen once get ``1/log 2``; frequency is clamped at 1 so the weight stays finite.
    """
    return 1.0 / torch.log1p(trigger_frequency.clamp(min=1).to(torch.float32))


def multitask_weights(semantic_label: torch.Tensor, w_co: float, w_sem: float) -> torch.Tensor:
    """Per-pair weight ``w_co + w_sem · I(sem)`` equivalent to paper eq. 5 (see above)."""
    return w_co + w_sem * semantic_label.to(torch.float32)


def log_sampling_probability(candidate_frequency: torch.Tensor) -> torch.Tensor:
    """log q(item): an in-batch negative's sampling probability is its share of positives."""
    frequency = candidate_frequency.to(torch.float64).clamp(min=1.0)
    return (torch.log(frequency) - math.log(float(frequency.sum()))).to(torch.float32)


def distillation_kl(trigger_embeddings: torch.Tensor, candidate_embeddings: torch.Tensor,
                    trigger_content: torch.Tensor, candidate_content: torch.Tensor,
                    temperature: float, content_temperature: float) -> torch.Tensor:
    """MTMH eq. 2: mean over triggers of KL(P_content ‖ Q_model) over the batch's candidates.

    P = softmax of the frozen content similarities / τ_c, Q = softmax of the model's / τ.
    """
    model_log_q = F.log_softmax(trigger_embeddings @ candidate_embeddings.T / temperature, dim=1)
    with torch.no_grad():
        teacher_log_p = F.log_softmax(trigger_content @ candidate_content.T / content_temperature,
                                      dim=1)
    return F.kl_div(model_log_q, teacher_log_p, log_target=True, reduction="batchmean")
