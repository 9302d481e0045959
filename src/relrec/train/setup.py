"""What every training path shares (single process, DDP, two heads): the run's examples and
validation pairs, content computed when missing, checkpoints, Ctrl-C reports, the finite-weights
check and the saved summary."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from relrec.config import RunConfig, TrainConfig
from relrec.errors import RelrecError
from relrec.manifest import atomic_path, update_manifest
from relrec.model.tower import KNOWN_ITEMS, ItemTower
from relrec.run import RunData
from relrec.content.labels import choose_semantic_threshold, pair_cosine, semantic_labels
from relrec.content.stage import ensure_content
from relrec.content.store import load_content, required_content
from relrec.train.trainer import Trainer, build_examples, build_tower_config, \
    save_training_summary

CHECKPOINT = "checkpoint.safetensors"  # in the model folder (Trainer._checkpoint_path)


class TrainingError(RelrecError):
    """Training finished but its result must not be saved (non-finite weights)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``str()`` says where it stopped and how to resume."""


def checkpoint_epoch(path: Path) -> int | None:
    """The last completed (0-based) epoch a checkpoint holds; None if none or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            return int((handle.metadata() or {})["epoch"])
    except Exception:  # noqa: BLE001 - unreadable: treated as no checkpoint here
        return None


def interrupt_message(run_dir: str | Path, trainer: Trainer | None = None,
                      model_name: str = "model") -> str:
    """Where training stopped (epoch / step, 1-based) and how to go on from its checkpoint."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / model_name / CHECKPOINT
    position = getattr(trainer, "position", None)
    if position:
        where = (f"in epoch {position['epoch'] + 1} of {position['epochs']}, "
                 + ("validating after step" if position.get("validating") else "at step")
                 + f" {position['step']} of {position['steps']}")
    else:
        where = "before the first training step"
    done = checkpoint_epoch(checkpoint)
    if done is None:
        resume = (f"no checkpoint yet (one is written after every epoch): `relrec train "
                  f"{run_dir}` starts from the beginning")
    else:
        resume = (f"checkpoint {checkpoint} holds {done + 1} completed epoch(s): "
                  f"`relrec train {run_dir}` with the same options (--epochs may change) "
                  f"resumes from epoch {done + 2}")
    return f"interrupted {where}; {resume}"


@contextlib.contextmanager
def reporting_interrupts(run_dir: str | Path, trainer: Trainer, model_name: str = "model"):
    """Turn Ctrl-C inside ``trainer.fit`` into :class:`TrainingInterrupted` with its report."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupt_message(run_dir, trainer, model_name)) from None


def discard_checkpoint(run_dir: str | Path, model_name: str = "model") -> Path | None:
    """Delete the model's training checkpoint (``relrec train --restart``); returns its path
    when there was one."""
    model_dir = Path(run_dir) / model_name
    (model_dir / f".{CHECKPOINT}.tmp").unlink(missing_ok=True)
    path = model_dir / CHECKPOINT
    if path.exists():
        path.unlink()
        return path
    return None


def check_finite(tower: ItemTower, known: np.ndarray, model_dir: Path) -> None:
    """Refuse to save a model whose weights or item embeddings hold NaN / inf (a diverged
    run): served, such vectors would be empty related lists."""
    broken = [name for name, tensor in tower.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if not broken:
        for head in tower.config.heads:
            if not np.isfinite(tower.item_embeddings(known, head=head)).all():
                broken.append(f"the {head!r} item embeddings")
    if broken:
        raise TrainingError(
            f"training ended with non-finite values (NaN/inf) in {', '.join(broken[:3])}"
            f"{' …' if len(broken) > 3 else ''}: the model was not saved to {model_dir}; lower "
            "the learning rate or check the inputs, then `relrec train "
            f"{model_dir.parent} --restart` (the checkpoint holds the same values)")


def semantic_pair_labels(run: RunData, train_config: TrainConfig, notes: dict) -> np.ndarray | None:
    """I(sem) for each distinct training pair from text cosine (paper eq. 3)."""
    if train_config.w_sem <= 0:
        return None
    text = load_content(run, "text")
    if text is None:
        raise FileNotFoundError("text embeddings are needed for semantic labels")
    vectors, ok = text
    pairs = run.train_pairs
    triggers = pairs["trigger_index"].to_numpy()
    candidates = pairs["candidate_index"].to_numpy()
    scores = pair_cosine(vectors, triggers, candidates)
    both_ok = ok[triggers] & ok[candidates]
    rng = np.random.default_rng(train_config.seed)
    usable = np.flatnonzero(ok)
    if not len(usable):
        raise ValueError("no item has a text embedding: semantic labels (w_sem > 0) need text")
    random_a, random_b = rng.choice(usable, 20000), rng.choice(usable, 20000)
    random_scores = pair_cosine(vectors, random_a, random_b)
    if train_config.semantic_threshold is not None:
        threshold, rule = train_config.semantic_threshold, "given in the config"
    else:
        threshold, rule = choose_semantic_threshold(
            np.repeat(scores[both_ok], pairs["pair_count"].to_numpy()[both_ok]),
            rule=train_config.semantic_threshold_rule, random_pair_scores=random_scores)
    labels = semantic_labels(scores, threshold) & both_ok
    weighted_share = float((labels * pairs["pair_count"]).sum() / pairs["pair_count"].sum())
    # agreement of the pseudo-labels with co-engagement: how much more often a co-engaged pair
    # is labelled related than a random pair is
    random_share = float(semantic_labels(random_scores, threshold).mean())
    lift = weighted_share / random_share if random_share > 0 else None
    # the guard reads distinct pairs: a few heavy pairs make the weighted share noisy
    distinct_share = float(labels[both_ok].mean()) if both_ok.any() else 0.0
    distinct_lift = distinct_share / random_share if random_share > 0 else None
    notes["semantic_labels"] = {
        "threshold": float(threshold), "rule": rule,
        "positive_share_of_pairs": weighted_share, "positive_share_of_random_pairs": random_share,
        "co_engagement_lift": lift, "co_engagement_lift_distinct_pairs": distinct_lift}
    lift = distinct_lift
    if train_config.semantic_min_lift > 0 and (lift is None or
                                               lift < train_config.semantic_min_lift):
        notes["semantic_labels"]["dropped"] = (
            f"the semantic task was dropped: its pseudo-labels call co-engaged pairs related "
            f"{'as often as' if lift is None else f'{lift:.2f}x as often as'} random pairs "
            f"(< semantic_min_lift {train_config.semantic_min_lift:g}); the text carries no "
            "relatedness signal the task could teach")
        return None
    return labels


@dataclass
class TrainingSetup:
    """Everything a trainer needs from a run, shared by single-process, DDP and two-head
    training: the effective config (modalities without data switched off), examples with
    their per-pair weights, and the validation pairs used for early stopping."""
    run: RunData
    train_config: TrainConfig
    text_dim: int
    visual_dim: int
    available: dict
    examples: object
    known: np.ndarray
    eligible: np.ndarray
    valid_triggers: np.ndarray
    valid_targets: np.ndarray
    notes: dict
    started: float

    def tower(self, heads: list[str] | None = None) -> ItemTower:
        torch.manual_seed(self.train_config.seed)  # the same initial weights on every rank
        tower = ItemTower(build_tower_config(self.run.n_items, self.train_config,
                                             self.text_dim, self.visual_dim, heads=heads))
        tower.attach_content(required_content(self.run, tower.content_modalities))
        return tower

    def fit_arguments(self, **fingerprint_extra) -> dict:
        return {"known": self.known, "eligible": self.eligible,
                "valid_triggers": self.valid_triggers, "valid_targets": self.valid_targets,
                "candidate_frequency": self.run.candidate_frequency,
                "fingerprint_payload": {"run": str(self.run.manifest.get("inputs")),
                                        "pairs": self.run.manifest.get("pairs"),
                                        **fingerprint_extra}}

    def finish(self, tower: ItemTower, summary: dict, model_name: str = "model") -> dict:
        """Save weights, the training summary and the manifest section."""
        model_dir = self.run.run_dir / model_name
        check_finite(tower, self.known, model_dir)
        tower.save(model_dir)
        with atomic_path(model_dir / KNOWN_ITEMS) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, self.known, allow_pickle=False)
        summary.update({"train_config": self.train_config.model_dump(mode="json"),
                        "tower": tower.config.model_dump(mode="json"), "notes": self.notes,
                        "modality_scales": tower.modality_scales(),
                        "seconds": time.perf_counter() - self.started})
        save_training_summary(model_dir, summary)
        section = "train" if model_name == "model" else f"train:{model_name}"
        update_manifest(self.run.run_dir, section, {
            k: v for k, v in summary.items() if k != "history"}
            | {"epochs_run": len(summary["history"])})
        return summary


def prepare_training(run_dir: str | Path, config: RunConfig, *, progress: bool = True,
                     notes: dict | None = None, extra_modalities: tuple[str, ...] = (),
                     with_semantic_labels: bool = True, fill_content=None) -> TrainingSetup:
    """Content (computed if missing), semantic labels and examples for ``config.train``.

    ``fill_content(run, modalities, notes) -> {modality: dim}`` replaces the plain
    :func:`relrec.content.stage.ensure_content` call (DDP: rank 0 first, then the others).
    """
    run = RunData(run_dir)
    train_config = config.train
    notes = {} if notes is None else notes
    started = time.perf_counter()
    needs_text = train_config.use_text or (with_semantic_labels and train_config.w_sem > 0)
    modalities = [m for m, wanted in (("text", needs_text),
                                      ("visual", train_config.use_visual)) if wanted]
    modalities += [m for m in extra_modalities if m not in modalities]
    available: dict = {}
    if modalities:
        if fill_content is None:
            available = ensure_content(run, modalities, config.content, progress=progress,
                                       notes=notes)
        else:
            available = fill_content(run, modalities, notes)
    text_dim = available.get("text", 0) if train_config.use_text else 0
    visual_dim = available.get("visual", 0) if train_config.use_visual else 0
    train_config = train_config.model_copy(update={
        "use_text": train_config.use_text and bool(text_dim),
        "use_visual": train_config.use_visual and bool(visual_dim)})
    if not (train_config.use_id or text_dim or visual_dim):
        raise ValueError("no input left for the tower: enable use_id or provide content")
    semantic_label = (semantic_pair_labels(run, train_config, notes) if with_semantic_labels
                      else None)
    examples = build_examples(run.train_pairs, run.trigger_frequency, train_config,
                              semantic_label)
    known = run.in_train
    has_content = bool(text_dim or visual_dim)
    eligible = np.ones(run.n_items, dtype=bool) if has_content else known.copy()
    valid = run.valid_pairs
    valid = valid[~valid["cold"]] if not has_content else valid
    return TrainingSetup(run, train_config, text_dim, visual_dim, available, examples, known,
                         eligible, valid["trigger_index"].to_numpy(),
                         valid["target_index"].to_numpy(), notes, started)
