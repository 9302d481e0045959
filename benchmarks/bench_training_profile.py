"""Where a training step and an epoch spend their time (issue "Train in seconds, not minutes").

The step is replayed phase by phase with the trainer's own model and data, each phase timed on
its own (CPU ops are synchronous, so wall time between phases is the phase's time):

* batch assembly (slice of the epoch permutation, gathers of triggers / candidates / weights,
  the batch's distinct items: the tower runs once per distinct item, as in the trainer);
* tower forward per modality (ID embedding, text projection, visual projection), the shared
  MLP and the head(s);
* the loss forward: the accidental hits and logQ, the MTMH teacher, and the fused in-batch
  softmax (logits, softmax, loss and the logits' gradient; the KL of a distilling head);
* backward, split at detach boundaries into the loss, the MLP + heads and each modality;
* zero_grad + optimizer step.

Per epoch: validation recall (item embeddings + exact FAISS search), the checkpoint write and
the progress-bar updates. Shares are printed; absolute times depend on the machine's load.

    python benchmarks/bench_training_profile.py RUN_DIR --model cf|content|mtmh [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from relrec.config import RunConfig, TrainConfig
from relrec.content.store import fused_content
from relrec.model.losses import accidental_hits, distillation_targets, \
    log_sampling_probability, sampled_softmax_loss
from relrec.train.multihead import VARIANTS, MultiHeadTrainer
from relrec.train.presets import resolve_train_config
from relrec.train.setup import prepare_training
from relrec.train.trainer import Trainer, validation_recall

MODELS = {"cf": ("cf", {}),
          "content": ("cf", {"use_text": True, "use_visual": True, "id_dropout": 0.1}),
          "mtmh": ("mtmh", {})}


class Clock:
    def __init__(self):
        self.seconds = defaultdict(float)
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] += now - self.last
        self.last = now


def loss_phases(clock, prefix, te, ce, t, c, temperature, weights, log_q, hits,
                distillation=None):
    """The trainer's fused in-batch softmax (``relrec.model.losses``): logits, softmax, the
    loss and the gradient of the logits (and the KL when the head distils)."""
    loss, _ = sampled_softmax_loss(te, ce, t, c, temperature, weights, log_q,
                                   distillation=distillation, hits=hits)
    clock.lap(f"{prefix}fused forward" + (" (L_co + KL)" if distillation is not None else ""))
    return loss


def profile_step(clock, trainer, tower, optimizer, triggers, candidates, weights, order, batch,
                 log_q_table):
    config = trainer.config
    size = config.batch_size
    rows = order[batch * size:(batch + 1) * size]
    t, c, w = triggers[rows], candidates[rows], weights[rows]
    batch_items = torch.cat([t, c])
    batch_dropped = tower.id_dropout_mask(batch_items.shape)
    # the tower runs once per distinct (item, ID dropped), as the trainer's unique_rows_forward
    keys = batch_items * 2 + (batch_dropped.long() if batch_dropped is not None else 0)
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    items = unique // 2
    dropped = (unique % 2).bool() if batch_dropped is not None else None
    clock.lap("batch assembly")
    leaves = {}
    parts = []
    if tower.config.use_id:
        id_rows = items
        if dropped is not None:
            id_rows = torch.where(dropped, torch.full_like(items, tower.out_of_vocabulary_row),
                                  items)
        leaves["ID"] = tower.id_embedding(id_rows)
        parts.append(leaves["ID"])
        clock.lap("forward: ID embedding")
    for modality in tower.content_modalities:
        leaves[modality] = tower._project(modality, items)
        parts.append(leaves[modality])
        clock.lap(f"forward: {modality} projection")
    joined = torch.cat(parts, dim=-1)
    cut = joined.detach().requires_grad_()
    shared = tower.shared(cut)
    outputs = {name: tower._finish(layer(shared))[inverse]
               for name, layer in tower.heads.items()}
    clock.lap("forward: shared MLP + heads")
    detached = {name: v.detach().requires_grad_() for name, v in outputs.items()}
    log_q = log_q_table[c] if log_q_table is not None else None
    hits = accidental_hits(t, c, torch.arange(size))  # once a batch, for every head
    clock.lap("loss: accidental hits + logQ")
    if isinstance(trainer, MultiHeadTrainer):
        total = 0.0
        for head in trainer.heads:
            vectors = detached[head]
            unit = head in trainer.unit_heads
            if unit:
                vectors = F.normalize(vectors, dim=-1)
            temperature = config.relevance_temperature if unit else config.temperature
            tv, cv = vectors.split(size)
            targets = None
            if head in trainer.kl_heads and config.relevance_weight > 0:
                targets = distillation_targets(
                    trainer.teacher[t], trainer.teacher[c], config.content_temperature, t, c,
                    weight=config.relevance_weight, column_ok=trainer.teacher_ok[c],
                    row_ok=trainer.teacher_ok[t])
                clock.lap(f"loss {head}: teacher (content B×B, softmax)")
            total = total + loss_phases(clock, f"loss {head}: ", tv, cv, t, c, temperature, w,
                                        log_q, hits, targets)
        loss = total
    else:
        vectors = detached[tower.config.heads[0]]
        tv, cv = vectors.split(size)
        loss = loss_phases(clock, "loss: ", tv, cv, t, c, config.temperature, w, log_q, hits)
    optimizer.zero_grad(set_to_none=True)
    clock.lap("zero_grad")
    loss.backward()
    clock.lap("backward: loss")
    torch.autograd.backward([outputs[n] for n in detached], [detached[n].grad for n in detached])
    clock.lap("backward: shared MLP + heads")
    offset = 0
    for name, leaf in leaves.items():
        width = leaf.shape[1]
        leaf.backward(cut.grad[:, offset:offset + width])
        offset += width
        clock.lap(f"backward: {name}" + ("" if name == "ID" else " projection"))
    optimizer.step()
    clock.lap("optimizer step")
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--model", choices=list(MODELS), default="cf")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, overrides = MODELS[args.model]
    train_config = resolve_train_config(TrainConfig(), preset, overrides)
    config = RunConfig(train=train_config)
    if preset == "mtmh":
        setup = prepare_training(args.run, config, progress=False, extra_modalities=("text",),
                                 with_semantic_labels=False)
        heads, kl_heads, _ = VARIANTS["mtmh"]
        teacher, teacher_ok, _ = fused_content(setup.run, tuple(setup.available) or ("text",))
        trainer = MultiHeadTrainer(setup.train_config, "/tmp/bench_profile_model",
                                   variant="mtmh", teacher=teacher, teacher_ok=teacher_ok,
                                   progress=False)
        tower = setup.tower(heads=list(heads))
    else:
        setup = prepare_training(args.run, config, progress=False)
        trainer = Trainer(setup.train_config, "/tmp/bench_profile_model", progress=False)
        tower = setup.tower()
    tower.train()
    optimizer = trainer._optimizer(tower)
    examples = setup.examples
    triggers = torch.as_tensor(examples.triggers)
    candidates = torch.as_tensor(examples.candidates)
    weights = torch.as_tensor(examples.weights)
    log_q_table = log_sampling_probability(torch.as_tensor(setup.run.candidate_frequency))
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(examples)))
    for warm in range(3):
        profile_step(Clock(), trainer, tower, optimizer, triggers, candidates, weights, order,
                     warm, log_q_table)
    clock = Clock()
    for batch in range(3, 3 + args.steps):
        profile_step(clock, trainer, tower, optimizer, triggers, candidates, weights, order,
                     batch, log_q_table)
    step_seconds = sum(clock.seconds.values()) / args.steps
    steps_per_epoch = max(1, len(examples) // trainer.config.batch_size)

    # the real trainer's step for comparison (the replay adds detach copies)
    started = time.perf_counter()
    for batch in range(3 + args.steps, 3 + 2 * args.steps):
        rows = order[batch * trainer.config.batch_size:(batch + 1) * trainer.config.batch_size]
        trainer.train_step(tower, optimizer, triggers[rows], candidates[rows], weights[rows],
                           log_q_table)
    trainer_step = (time.perf_counter() - started) / args.steps

    epoch = {}
    started = time.perf_counter()
    recall = validation_recall(tower, setup.eligible, setup.known, setup.valid_triggers,
                               setup.valid_targets, trainer.config.early_stopping_k)
    epoch["validation"] = time.perf_counter() - started
    trainer.model_dir.mkdir(parents=True, exist_ok=True)
    best_state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
    started = time.perf_counter()
    trainer._save_checkpoint(tower, optimizer, 0, {"epoch": 0, "recall": recall}, best_state,
                             "profile", 0)
    epoch["checkpoint"] = time.perf_counter() - started
    from rich.progress import Progress  # the trainer's progress bar, updated once per step

    with Progress(disable=False, transient=True) as progress:
        task = progress.add_task("p", total=steps_per_epoch, status="")
        started = time.perf_counter()
        for step in range(steps_per_epoch):
            progress.update(task, advance=1, status=f"epoch 0 loss {1.0 / (step + 1):.3f}")
        epoch["progress updates"] = time.perf_counter() - started
    epoch["steps"] = trainer_step * steps_per_epoch
    epoch_total = sum(epoch.values())
    result = {
        "model": args.model, "threads": torch.get_num_threads(),
        "batch_size": trainer.config.batch_size, "steps_per_epoch": steps_per_epoch,
        "validation_pairs": int(len(setup.valid_triggers)),
        "replayed_step_ms": round(1000 * step_seconds, 2),
        "trainer_step_ms": round(1000 * trainer_step, 2),
        "step_shares": {name: round(s / args.steps / step_seconds, 3)
                        for name, s in clock.seconds.items()},
        "epoch_seconds": {k: round(v, 3) for k, v in epoch.items()},
        "epoch_shares": {k: round(v / epoch_total, 3) for k, v in epoch.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
