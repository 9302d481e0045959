"""``relrec train``: a run directory + a config → a trained model in RUN_DIR/model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from relrec.config import RunConfig, TrainConfig
from relrec.manifest import update_manifest
from relrec.model.tower import ItemTower
from relrec.run import RunData
from relrec.train.content_inputs import load_content
from relrec.train.trainer import Trainer, build_examples, build_tower_config, \
    save_training_summary


def semantic_pair_labels(run: RunData, train_config: TrainConfig, notes: dict) -> np.ndarray | None:
    """I(sem) for each distinct training pair from text cosine (paper eq. 3)."""
    if train_config.w_sem <= 0:
        return None
    text = load_content(run, "text")
    if text is None:
        raise FileNotFoundError("text embeddings are needed for semantic labels")
    from relrec.content.labels import choose_semantic_threshold, pair_cosine, semantic_labels

    vectors, ok = text
    pairs = run.train_pairs
    triggers = pairs["trigger_index"].to_numpy()
    candidates = pairs["candidate_index"].to_numpy()
    scores = pair_cosine(vectors, triggers, candidates)
    both_ok = ok[triggers] & ok[candidates]
    if train_config.semantic_threshold is not None:
        threshold, rule = train_config.semantic_threshold, "given in the config"
    else:
        rng = np.random.default_rng(train_config.seed)
        usable = np.flatnonzero(ok)
        random_a, random_b = rng.choice(usable, 20000), rng.choice(usable, 20000)
        random_scores = pair_cosine(vectors, random_a, random_b)
        threshold, rule = choose_semantic_threshold(
            np.repeat(scores[both_ok], pairs["pair_count"].to_numpy()[both_ok]),
            rule="random-baseline", random_pair_scores=random_scores)
    labels = (scores >= threshold) & both_ok
    weighted_share = float((labels * pairs["pair_count"]).sum() / pairs["pair_count"].sum())
    notes["semantic_labels"] = {"threshold": float(threshold), "rule": rule,
                                "positive_share_of_pairs": weighted_share}
    return labels


def train_run(run_dir: str | Path, config: RunConfig, *, progress: bool = True,
              max_seconds: float | None = None, model_name: str = "model") -> dict:
    """Train the configured preset; computes missing content embeddings itself.

    The model goes to ``RUN_DIR/<model_name>`` (studies train many variants side by side)."""
    if config.train.preset == "mtmh":  # two heads: see relrec.train.multihead
        from relrec.train.multihead import train_multihead_run

        return train_multihead_run(run_dir, config, progress=progress, max_seconds=max_seconds,
                                   model_name=model_name)
    run = RunData(run_dir)
    train_config = config.train
    notes: dict = {}
    started = time.perf_counter()

    text_dim = visual_dim = 0
    needs_text = train_config.use_text or train_config.w_sem > 0
    if needs_text or train_config.use_visual:
        from relrec.content.stage import ensure_content

        modalities = [m for m, wanted in (("text", needs_text),
                                          ("visual", train_config.use_visual)) if wanted]
        available = ensure_content(run, modalities, config.content, progress=progress,
                                   notes=notes)
        if train_config.use_text and "text" in available:
            text_dim = available["text"]
        if train_config.use_visual and "visual" in available:
            visual_dim = available["visual"]
        if train_config.use_text and not text_dim:
            train_config = train_config.model_copy(update={"use_text": False})
        if train_config.use_visual and not visual_dim:
            train_config = train_config.model_copy(update={"use_visual": False})
        if not (train_config.use_id or text_dim or visual_dim):
            raise ValueError("no input left for the tower: enable use_id or provide content")

    semantic_label = semantic_pair_labels(run, train_config, notes)
    examples = build_examples(run.train_pairs, run.trigger_frequency, train_config,
                              semantic_label)
    tower_config = build_tower_config(run.n_items, train_config, text_dim, visual_dim)
    tower = ItemTower(tower_config)
    from relrec.train.content_inputs import attach_content

    attach_content(tower, run)

    known = run.in_train
    has_content = bool(text_dim or visual_dim)
    eligible = np.ones(run.n_items, dtype=bool) if has_content else known.copy()
    valid = run.valid_pairs
    valid = valid[~valid["cold"]] if not has_content else valid
    model_dir = run.run_dir / model_name
    trainer = Trainer(train_config, model_dir, progress=progress)
    summary = trainer.fit(
        tower, examples, known=known, eligible=eligible,
        valid_triggers=valid["trigger_index"].to_numpy(),
        valid_targets=valid["target_index"].to_numpy(),
        candidate_frequency=run.candidate_frequency,
        fingerprint_payload={"run": str(run.manifest.get("inputs")),
                             "pairs": run.manifest.get("pairs")},
        max_seconds=max_seconds)
    tower.save(model_dir)
    summary.update({"train_config": train_config.model_dump(mode="json"),
                    "tower": tower_config.model_dump(mode="json"), "notes": notes,
                    "seconds": time.perf_counter() - started})
    save_training_summary(model_dir, summary)
    section = "train" if model_name == "model" else f"train:{model_name}"
    update_manifest(run.run_dir, section, {
        k: v for k, v in summary.items() if k != "history"} | {"epochs_run": len(summary["history"])})
    return summary
