"""MTMH: one shared tower, an engagement head and a relevance head (MTMH §3.2-3.3).

* **engagement head** — ``L_co`` only (in-batch sampled softmax, accidental hits masked), on
  the recommended CF base: the tower's own geometry (``normalize_embeddings``; the ``mtmh``
  preset uses the raw inner product, τ = 1 and logQ correction, so a candidate's norm carries
  its popularity).
* **relevance head** — ``L_co + w_r · KL(P_content ‖ Q_model)`` (MTMH eq. 2). This head always
  works on **unit vectors**: its ``L_co`` and its KL use cosine / ``relevance_temperature``,
  and it is served by cosine too (``multihead.json`` lists it under ``normalized_heads``;
  :class:`relrec.RelatedItems` normalises it at load). Reason: the KL compares
  two softmaxes over the batch; with raw vectors a candidate's norm (popularity) would enter Q
  but not P, so the head could not match the teacher by direction alone.
* **teacher** — for each trigger in the batch, ``P = softmax_j(cos(content_t, content_j)/τ_c)``
  over the batch's candidates, where the content vector is the fused, normalised
  ``normalise(normalise(text) ⊕ normalise(visual))`` (whichever modalities the run has; an
  item without any content is masked out: its rows take no part, its columns get P = Q = 0).
  Columns holding the trigger itself are masked as in ``L_co``. The teacher is frozen; the
  evaluation topics never enter it (they are not in the text).

Ablations (MTMH Table 2), chosen by ``variant``:

* ``mtmh`` — as above;
* ``stmh`` — two heads, single task: both heads ``L_co`` only (same geometries, no KL);
* ``mtsh`` — one head (``main``) on the multi-task loss: ``L_co`` in the tower's geometry plus
  ``w_r · KL`` on the L2-normalised head vectors.

Early stopping uses the first head's validation recall (the engagement head; ``main`` for
MTSH); each head's validation recall at the end is written to ``training.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relrec.config import RunConfig, TrainConfig
from relrec.manifest import atomic_write_json
from relrec.model.losses import accidental_hits, distillation_loss, distillation_targets, \
    sampled_softmax_loss
from relrec.model.tower import ItemTower
from relrec.content.store import fused_content
from relrec.train.setup import prepare_training, reporting_interrupts
from relrec.train.trainer import Trainer, embedding_recall, unique_rows_forward
from relrec.vectors import l2_normalize

ENGAGEMENT, RELEVANCE = "engagement", "relevance"
VARIANTS = {
    # variant: (heads, heads that take the KL, heads served / trained on unit vectors)
    "mtmh": ([ENGAGEMENT, RELEVANCE], {RELEVANCE}, {RELEVANCE}),
    "stmh": ([ENGAGEMENT, RELEVANCE], set(), {RELEVANCE}),
    "mtsh": (["main"], {"main"}, set()),
}
HEADS_FILE = "multihead.json"


def masked_distillation_kl(trigger_vectors: torch.Tensor, candidate_vectors: torch.Tensor,
                           trigger_content: torch.Tensor, candidate_content: torch.Tensor,
                           temperature: float, content_temperature: float,
                           column_mask: torch.Tensor | None = None,
                           row_mask: torch.Tensor | None = None,
                           model_logits: torch.Tensor | None = None) -> torch.Tensor:
    """MTMH eq. 2 with masks: mean over usable triggers of KL(P_content ‖ Q_model).

    ``column_mask`` (B_t, B_c) True = column takes part; ``row_mask`` (B_t,) True = trigger
    takes part. Without masks this equals :func:`relrec.model.losses.distillation_kl`.
    ``model_logits``: ``cos(trigger, candidate) / temperature`` when the caller has it already
    (the relevance head's own ``L_co`` scores), so it is not computed twice.
    """
    rows, columns = trigger_vectors.shape[0], candidate_vectors.shape[0]
    if column_mask is None:
        column_mask = torch.ones(rows, columns, dtype=torch.bool, device=trigger_vectors.device)
    if row_mask is None:
        row_mask = torch.ones(rows, dtype=torch.bool, device=trigger_vectors.device)
    row_mask = row_mask & column_mask.any(dim=1)
    if not bool(row_mask.any()):
        return trigger_vectors.sum() * 0.0
    every_row = bool(row_mask.all())  # the common case: no B×B row copies

    def rows_of(matrix):
        return matrix if every_row else matrix[row_mask]

    if model_logits is None:
        model_logits = trigger_vectors @ candidate_vectors.T / temperature
    log_q = F.log_softmax(rows_of(model_logits).masked_fill(~rows_of(column_mask),
                                                            float("-inf")), dim=1)
    usable = rows_of(column_mask)
    with torch.no_grad():
        p_logits = rows_of(trigger_content @ candidate_content.T / content_temperature)
        log_p = F.log_softmax(p_logits.masked_fill(~usable, float("-inf")), dim=1)
        p = log_p.exp()
        # Σ p·log p is a constant of the teacher; only Σ p·log q carries a gradient
        entropy_term = torch.where(usable, p * log_p, torch.zeros_like(p)).sum()
    cross_term = (p * log_q.masked_fill(~usable, 0.0)).sum()
    return (entropy_term - cross_term) / int(row_mask.sum())


class MultiHeadTrainer(Trainer):
    """:class:`Trainer` whose batch loss sums every head's loss (see the module docstring)."""

    def __init__(self, config: TrainConfig, model_dir: str | Path, *, variant: str,
                 teacher: np.ndarray | None, teacher_ok: np.ndarray | None,
                 progress: bool = True):
        super().__init__(config, model_dir, progress=progress)
        if variant not in VARIANTS:
            raise ValueError(f"unknown MTMH variant {variant!r}; choose one of {list(VARIANTS)}")
        self.variant = variant
        self.heads, self.kl_heads, self.unit_heads = VARIANTS[variant]
        if self.kl_heads and config.relevance_weight > 0 and teacher is None:
            raise ValueError(f"variant {variant} distils from content: a teacher is needed")
        self.teacher = None if teacher is None else torch.as_tensor(teacher)
        self.teacher_ok = None if teacher_ok is None else torch.as_tensor(teacher_ok)

    def batch_loss(self, tower, batch_triggers, batch_candidates, batch_weights, log_q_table):
        config = self.config
        if self.teacher is not None and self.teacher.device != batch_triggers.device:
            self.teacher = self.teacher.to(batch_triggers.device)
            self.teacher_ok = self.teacher_ok.to(batch_triggers.device)
        items = torch.cat([batch_triggers, batch_candidates])
        outputs = unique_rows_forward(
            lambda rows, dropped: tower.all_heads(rows, id_dropped=dropped), items,
            tower.id_dropout_mask(items.shape))
        log_q = log_q_table[batch_candidates] if log_q_table is not None else None
        # the same batch for every head: its accidental hits found once
        hits = accidental_hits(batch_triggers, batch_candidates,
                               torch.arange(len(batch_triggers), device=batch_triggers.device))
        total = 0.0
        for head in self.heads:
            vectors = outputs[head]
            unit = head in self.unit_heads
            if unit:
                vectors = F.normalize(vectors, dim=-1)
            temperature = config.relevance_temperature if unit else config.temperature
            trigger_vectors, candidate_vectors = vectors.split(len(batch_triggers))
            targets = None
            if head in self.kl_heads and config.relevance_weight > 0:
                targets = distillation_targets(
                    self.teacher[batch_triggers], self.teacher[batch_candidates],
                    config.content_temperature, batch_triggers, batch_candidates,
                    weight=config.relevance_weight,
                    column_ok=self.teacher_ok[batch_candidates],
                    row_ok=self.teacher_ok[batch_triggers])
            if targets is not None and not unit:
                # L_co in the head's own geometry, the KL on its unit vectors: other scores
                loss, _ = sampled_softmax_loss(trigger_vectors, candidate_vectors,
                                               batch_triggers, batch_candidates, temperature,
                                               batch_weights, log_q, hits=hits)
                loss = loss + distillation_loss(
                    F.normalize(trigger_vectors, dim=-1), F.normalize(candidate_vectors, dim=-1),
                    config.relevance_temperature, targets)
            else:
                # a unit head's L_co scores are exactly the KL's: one pass computes both
                loss, _ = sampled_softmax_loss(trigger_vectors, candidate_vectors,
                                               batch_triggers, batch_candidates, temperature,
                                               batch_weights, log_q, distillation=targets,
                                               hits=hits)
            total = total + loss
        return total


def head_embeddings(tower: ItemTower, known: np.ndarray, unit_heads) -> dict[str, np.ndarray]:
    """Every head's item vectors as served (unit heads L2-normalised)."""
    out = {}
    for head in tower.config.heads:
        vectors = tower.item_embeddings(known, head=head)
        if head in unit_heads:
            vectors = l2_normalize(vectors)
        out[head] = vectors
    return out


def train_multihead_run(run_dir: str | Path, config: RunConfig, *, progress: bool = True,
                        max_seconds: float | None = None, model_name: str = "model",
                        variant: str = "mtmh") -> dict:
    """Train an MTMH model (or an ablation) into ``RUN_DIR/<model_name>``.

    Mirrors :func:`relrec.train.pipeline.train_run` (content computed when missing, a modality
    without data dropped with a note) and writes ``multihead.json`` beside the weights.
    """
    setup = prepare_training(run_dir, config, progress=progress, notes={"variant": variant},
                             extra_modalities=("text",), with_semantic_labels=False)
    run, train_config, notes, available = setup.run, setup.train_config, setup.notes, \
        setup.available
    heads, kl_heads, unit_heads = VARIANTS[variant]
    teacher = teacher_ok = None
    if kl_heads:
        teacher, teacher_ok, used = fused_content(run, tuple(available) or ("text",))
        notes["teacher"] = {"modalities": used, "items_with_content": int(teacher_ok.sum()),
                            "content_temperature": train_config.content_temperature}

    tower = setup.tower(heads=list(heads))
    known, eligible = setup.known, setup.eligible
    valid_triggers, valid_targets = setup.valid_triggers, setup.valid_targets
    model_dir = run.run_dir / model_name
    trainer = MultiHeadTrainer(train_config, model_dir, variant=variant, teacher=teacher,
                               teacher_ok=teacher_ok, progress=progress)
    with reporting_interrupts(run.run_dir, trainer, model_name):
        summary = trainer.fit(tower, setup.examples, max_seconds=max_seconds,
                              **setup.fit_arguments(variant=variant, teacher=notes.get("teacher")))
    embeddings = head_embeddings(tower, known, unit_heads)
    k = train_config.early_stopping_k
    summary["valid_recall_by_head"] = {
        head: embedding_recall(vectors, eligible, valid_triggers, valid_targets, k)
        for head, vectors in embeddings.items()}
    atomic_write_json(model_dir / HEADS_FILE, {
        "variant": variant, "heads": list(heads), "normalized_heads": sorted(unit_heads),
        "distilled_heads": sorted(kl_heads), "default_alpha": 0.5,
        "engagement_head": ENGAGEMENT if ENGAGEMENT in heads else None,
        "relevance_head": RELEVANCE if RELEVANCE in heads else None})
    return setup.finish(tower, summary, model_name)
