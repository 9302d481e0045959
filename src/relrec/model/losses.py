"""Training losses as pure functions over a batch of (trigger, candidate) pairs.

References: *Balancing Semantic Relevance and Engagement in Related Video Recommendations*
(eq. 1-7); Yi et al. 2019, *Sampling-bias-corrected neural modeling for large corpus item
recommendations* (logQ correction); MTMH (eq. 2, distillation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


#: the logit of a column a row must not score (an accidental hit): excluded from its softmax
EXCLUDED = float("-inf")
#: the distillation's excluded columns: finite, so that ``P · log Q`` is 0, not NaN, where both
#: distributions are 0
DISTILLATION_EXCLUDED = -1e30


def same_item_entries(row_items: torch.Tensor,
                      column_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(i, j)`` with ``column_items[j] == row_items[i]``, as (rows, columns).

    The columns are sorted once and each row's matches are one contiguous run of them
    (``searchsorted``): O((B + C) log C + matches) instead of a B×C comparison — popular items
    repeat within a batch, but the matches are a few thousand of the B×C = 10^6 entries.
    """
    sorted_items, order = torch.sort(column_items)
    first = torch.searchsorted(sorted_items, row_items)
    counts = torch.searchsorted(sorted_items, row_items, right=True) - first
    total = int(counts.sum())  # known once: no device sync per repeat_interleave on CUDA
    rows = torch.repeat_interleave(torch.arange(len(row_items), device=row_items.device),
                                   counts, output_size=total)
    run_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts,
                                        output_size=total)
    offsets = torch.arange(total, device=row_items.device) - run_start
    return rows, order[torch.repeat_interleave(first, counts, output_size=total) + offsets]


def accidental_hits(trigger_ids: torch.Tensor, candidate_ids: torch.Tensor,
                    positive_columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) a row must not score as negatives: a column holding the same item as the
    row's positive, or the row's trigger itself; the positive column is never one of them."""
    by_positive = same_item_entries(candidate_ids[positive_columns], candidate_ids)
    by_trigger = same_item_entries(trigger_ids, candidate_ids)
    rows = torch.cat([by_positive[0], by_trigger[0]])
    columns = torch.cat([by_positive[1], by_trigger[1]])
    keep = columns != positive_columns[rows]
    return rows[keep], columns[keep]


def _softmax_and_log_normalizer(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(logits), logsumexp(logits))`` per row, from one softmax and two max passes.

    The row's largest entry has the largest probability, ``1 / Σ exp(z − max)``, which never
    underflows, so ``logsumexp = max(z) − log max(softmax)``. (torch's ``logsumexp`` is several
    B×C passes, and ``exp`` of a log-softmax is slower than the softmax itself on CPU.)
    """
    row_max = logits.amax(dim=1)
    probabilities = torch.softmax(logits, dim=1)
    return probabilities, row_max - torch.log(probabilities.amax(dim=1))


class _InBatchSoftmax(torch.autograd.Function):
    """The in-batch softmax losses of one head over its B×C scores ``s = scale · t·cᵀ``, with
    the gradient of those scores computed in the forward pass (the loss is a scalar).

    * cross-entropy (paper eq. 2, 5-7): ``Σ_i w_i · CE_i`` over ``softmax(s_i + b)`` with ``b``
      the per-column bias (−logQ) and the accidental hits excluded; its gradient w.r.t.
      ``s_i`` is ``w_i · (softmax_i − onehot(positive_i))``;
    * distillation (MTMH eq. 2): ``Σ_i r_i · KL(P_i ‖ softmax(s_i + b'))``, gradient
      ``r_i · (Q_i − P_i)``.

    Against autograd's formulation (bias matrix, masked_fill, log_softmax, nll, their
    backwards, KL's own log-softmaxes) this makes two or three passes over the B×C matrix
    instead of ten or more; the backward is the two matrix products. Values and gradients equal
    the reference formulation's to rounding (tests/model/test_losses.py).
    """

    @staticmethod
    def forward(ctx, trigger, candidate, scale, softmax_terms, distillation):
        rows = trigger.shape[0]
        # under no_grad (or frozen inputs) only the loss: no gradient built, nothing saved
        needs_gradient = any(ctx.needs_input_grad[:2])
        loss = trigger.new_zeros(())
        cross_entropy = gradient = None
        row_scale = None  # the cross-entropy's row weights, applied in backward (see there)
        column_bias = None if softmax_terms is None else softmax_terms[0]
        if distillation is None and column_bias is not None:
            scores = None  # the matrix product adds the bias
            logits = torch.addmm(column_bias, trigger, candidate.T, alpha=scale)
        else:
            scores = torch.mm(trigger, candidate.T)
            if scale != 1.0:
                scores.mul_(scale)
            if softmax_terms is None:  # the distillation alone
                logits = None
            elif distillation is None:
                logits = scores
            else:  # the distillation needs the scores without the cross-entropy's bias
                logits = scores.clone()
            if column_bias is not None:
                logits.add_(column_bias)
        if softmax_terms is not None:
            _, excluded, positive_columns, row_weights = softmax_terms
            row_index = torch.arange(rows, device=trigger.device)
            logits[excluded] = EXCLUDED
            gradient, log_normalizer = _softmax_and_log_normalizer(logits)
            cross_entropy = log_normalizer - logits[row_index, positive_columns]
            del logits
            if needs_gradient:
                gradient[row_index, positive_columns] -= 1.0  # softmax − onehot(positive)
            loss = loss + (row_weights * cross_entropy).sum()
            row_scale = row_weights
        if distillation is not None:
            # .to: a float32 teacher for a float64 tower
            teacher = distillation.probabilities.to(scores.dtype)
            negentropy = distillation.negentropy.to(scores.dtype)
            distillation_weights = distillation.row_weights.to(scores.dtype)
            if distillation.column_bias is not None:
                scores.add_(distillation.column_bias.to(scores.dtype))
            scores[distillation.excluded] = DISTILLATION_EXCLUDED
            model, log_normalizer = _softmax_and_log_normalizer(scores)
            # Σ_j P·log Q = P·s − logsumexp(s) (each teacher row sums to 1)
            cross = torch.linalg.vecdot(teacher, scores) - log_normalizer
            del scores
            loss = loss + (distillation_weights * (negentropy - cross)).sum()
            if needs_gradient:
                distillation_gradient = model.sub_(teacher).mul_(
                    distillation_weights.unsqueeze(1))
                if gradient is None:
                    gradient = distillation_gradient
                else:
                    gradient.mul_(row_scale.unsqueeze(1)).add_(distillation_gradient)
            row_scale = None
        ctx.scale = scale
        ctx.scaled_rows = row_scale is not None
        if needs_gradient:
            ctx.save_for_backward(trigger, candidate, gradient,
                                  row_scale if row_scale is not None else gradient.new_empty(0))
        if cross_entropy is None:
            cross_entropy = trigger.new_empty(0)
        ctx.mark_non_differentiable(cross_entropy)
        return loss, cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_cross_entropy):
        trigger, candidate, gradient, row_scale = ctx.saved_tensors
        factor = grad_loss * ctx.scale
        # the row weights scale the B×C gradient's rows: applied to the B×d side instead
        rows = (row_scale * factor).unsqueeze(1) if ctx.scaled_rows else factor
        grad_trigger = grad_candidate = None
        if ctx.needs_input_grad[0]:
            grad_trigger = torch.mm(gradient, candidate).mul_(rows)
        if ctx.needs_input_grad[1]:
            grad_candidate = torch.mm(gradient.T, trigger * rows)
        return grad_trigger, grad_candidate, None, None, None


@dataclass
class DistillationTargets:
    """The teacher side of MTMH eq. 2 for one batch (no gradient): ``probabilities`` P (B×C,
    0 on excluded columns), ``negentropy`` ``Σ_j P log P`` per row, the columns every row
    excludes as a (C,) bias (0 or :data:`DISTILLATION_EXCLUDED`) plus per-row exclusions
    (``excluded``: rows, columns) and the weight of each row's KL (0 for unusable rows)."""
    probabilities: torch.Tensor
    negentropy: torch.Tensor
    column_bias: torch.Tensor | None
    excluded: tuple[torch.Tensor, torch.Tensor]
    row_weights: torch.Tensor


@torch.no_grad()
def distillation_targets(trigger_content: torch.Tensor, candidate_content: torch.Tensor,
                         content_temperature: float, trigger_ids: torch.Tensor,
                         candidate_ids: torch.Tensor, weight: float = 1.0,
                         column_ok: torch.Tensor | None = None,
                         row_ok: torch.Tensor | None = None) -> DistillationTargets:
    """The teacher ``P_i = softmax_j(content_i · content_j / τ_c)`` over the usable columns
    (``column_ok``, and never the trigger's own item), for the usable rows (``row_ok`` and at
    least one usable column). Each usable row's KL weighs ``weight / usable rows`` (eq. 2's mean
    over triggers)."""
    rows, columns = trigger_content.shape[0], candidate_content.shape[0]
    logits = torch.mm(trigger_content, candidate_content.T).mul_(1.0 / content_temperature)
    column_bias = None
    if column_ok is not None and not bool(column_ok.all()):
        column_bias = torch.zeros(columns, dtype=logits.dtype, device=logits.device) \
            .masked_fill_(~column_ok, DISTILLATION_EXCLUDED)
        logits.add_(column_bias)
    excluded = same_item_entries(trigger_ids, candidate_ids)
    logits[excluded] = DISTILLATION_EXCLUDED
    probabilities, log_normalizer = _softmax_and_log_normalizer(logits)
    # Σ_j P log P = P·logits − logsumexp(logits): excluded columns have P = 0 exactly
    negentropy = torch.linalg.vecdot(probabilities, logits) - log_normalizer
    # a row needs a usable column that is not its own item
    own_rows = excluded[0] if column_ok is None else excluded[0][column_ok[excluded[1]]]
    ok_columns = columns if column_ok is None else int(column_ok.sum())
    usable = torch.bincount(own_rows, minlength=rows) < ok_columns
    if row_ok is not None:
        usable &= row_ok
    count = int(usable.sum())
    row_weights = usable.to(logits.dtype) * (weight / max(count, 1))
    probabilities[~usable] = 0.0
    negentropy[~usable] = 0.0
    return DistillationTargets(probabilities, negentropy, column_bias, excluded, row_weights)


def distillation_loss(trigger_vectors: torch.Tensor, candidate_vectors: torch.Tensor,
                      temperature: float, targets: DistillationTargets) -> torch.Tensor:
    """MTMH eq. 2 alone: ``Σ_i r_i · KL(P_i ‖ softmax_j(t_i·c_j / τ))`` with the teacher and
    its exclusions from :func:`distillation_targets` (a head whose cross-entropy uses other
    scores, e.g. MTSH's raw geometry)."""
    loss, _ = _InBatchSoftmax.apply(trigger_vectors, candidate_vectors, 1.0 / temperature, None,
                                    targets)
    return loss


def sampled_softmax_loss(trigger_embeddings: torch.Tensor, candidate_embeddings: torch.Tensor,
                         trigger_ids: torch.Tensor, candidate_ids: torch.Tensor,
                         temperature: float, weights: torch.Tensor | None = None,
                         candidate_log_q: torch.Tensor | None = None,
                         positive_columns: torch.Tensor | None = None,
                         normalizer: float | None = None,
                         distillation: DistillationTargets | None = None,
                         hits: tuple[torch.Tensor, torch.Tensor] | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted in-batch sampled-softmax cross-entropy (paper eq. 2, eq. 5-6).

    Accidental hits — a column j whose candidate is the same item as row i's positive, or is
    row i's trigger itself — are excluded from row i's softmax, so an item is never pushed
    away from itself. ``candidate_log_q`` (log sampling probability of each column's item) is
    subtracted from its logit (Yi et al. 2019).

    Returns ``(loss, per_pair_cross_entropy)`` with ``loss = Σ_i w_i · CE_i / normalizer``; the
    per-pair values are for reporting (not differentiable: the gradient flows through ``loss``).
    The per-pair weight carries the multi-task objective: eq. 4 is eq. 2 masked by I(sem), it
    shares eq. 2's negatives, so ``w_sem·L_sem + w_co·L_co`` is exactly one cross-entropy with
    weight ``w_co + w_sem·I(sem)``; OPC (eq. 6-7) multiplies it by ``1/log(1+freq(trigger))``.

    ``positive_columns`` gives row i's positive column (default ``i``); a distributed caller
    passes the rank's offset into the gathered candidates. ``normalizer`` defaults to the number
    of rows (a plain mean when all weights are 1); DDP passes the global batch size.
    ``distillation``: MTMH eq. 2 on the same scores (:func:`distillation_targets`), added to the
    loss — one pass computes both (the relevance head). ``hits``: :func:`accidental_hits` of
    these ids and positive columns, when the caller has them (heads scoring the same batch).
    """
    rows = trigger_embeddings.shape[0]
    device = trigger_embeddings.device
    if positive_columns is None:
        positive_columns = torch.arange(rows, device=device)
    if weights is None:
        weights = torch.ones(rows, dtype=trigger_embeddings.dtype, device=device)
    row_weights = weights.to(trigger_embeddings.dtype) / (normalizer if normalizer is not None
                                                          else rows)
    column_bias = (None if candidate_log_q is None
                   else -candidate_log_q.to(trigger_embeddings.dtype))
    if hits is None:
        hits = accidental_hits(trigger_ids, candidate_ids, positive_columns)
    softmax_terms = (column_bias, hits, positive_columns, row_weights)
    return _InBatchSoftmax.apply(trigger_embeddings, candidate_embeddings, 1.0 / temperature,
                                 softmax_terms, distillation)


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
