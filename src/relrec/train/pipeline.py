"""``relrec train``: a prepared run + a config → a trained model in RUN_DIR/model.

:func:`train_preset` is what ``relrec train`` and :meth:`relrec.RelatedItems.fit` run: the preset
resolved into the config, the model trained (one head, or two for ``mtmh``), then the ranking it
is served with chosen (:func:`relrec.train.blend_tuning.set_rank_after_training`).
"""

from __future__ import annotations

from pathlib import Path

from relrec.config import RunConfig, TrainConfig
from relrec.manifest import read_manifest, update_manifest
from relrec.train.blend_tuning import set_rank_after_training
from relrec.train.multihead import train_multihead_run
from relrec.train.operating_point import (choose_mtmh_alpha, search_full_recipe,
                                          search_operating_point)
from relrec.train.presets import ALIASES, resolve_train_config
from relrec.train.setup import prepare_training, reporting_interrupts
from relrec.train.trainer import Trainer, resolve_device


def train_run(run_dir: str | Path, config: RunConfig, *, progress: bool = True,
              max_seconds: float | None = None, model_name: str = "model") -> dict:
    """Train the configured preset; computes missing content embeddings itself.

    The model goes to ``RUN_DIR/<model_name>`` (studies train many variants side by side)."""
    if config.train.preset == "mtmh":  # two heads: see relrec.train.multihead
        return train_multihead_run(run_dir, config, progress=progress, max_seconds=max_seconds,
                                   model_name=model_name)
    setup = prepare_training(run_dir, config, progress=progress)
    tower = setup.tower()
    trainer = Trainer(setup.train_config, setup.run.run_dir / model_name, progress=progress)
    with reporting_interrupts(setup.run.run_dir, trainer, model_name):
        summary = trainer.fit(tower, setup.examples, max_seconds=max_seconds,
                              **setup.fit_arguments())
    return setup.finish(tower, summary, model_name)


def train_preset(run_dir: str | Path, config: RunConfig, *, preset: str | None = None,
                 overrides: dict | None = None, explicit_rank: bool = False,
                 progress: bool = True, say=lambda line: None) -> dict:
    """Resolve ``preset`` into ``config.train`` (fields set explicitly win), train it, choose
    the ranking; returns the training summary (``rank`` = the ranking's description).
    ``auto`` (the default) searches the operating point on validation
    (:mod:`relrec.train.operating_point`). ``say`` receives one-line notes for the user."""
    overrides = dict(overrides or {})
    name = preset or config.train.preset
    if ALIASES.get(name, name) == "auto":
        if name != "auto":
            say(f"preset {name!r} is now an alias of 'auto' (the operating point is chosen "
                "on validation)")
        config = config.model_copy(deep=True)
        config.train = resolve_train_config(config.train, "auto", overrides)
        resolve_device(config.train.device)
        train = config.train
        explicit = {key: value for key, value in overrides.items()}
        summary = search_operating_point(
            run_dir, config, train=train_run, tolerance=train.auto_tolerance,
            prefer=train.auto_prefer, budget_factor=train.auto_budget, progress=progress,
            refit_for_serving=train.auto_refit,
            overrides=explicit, say=say)
        record = summary["operating_point"]
        summary["rank"] = (f"rank: content blend {record['content_blend']:g}, EASE blend "
                           f"{record['ease_blend']:g}, chosen on validation with the candidate")
        summary["preset"] = f"auto → {record['chosen']}"
        return summary
    explicit = set(overrides) | config.train.model_fields_set
    searches_full = (name == "full" and config.train.full_search
                     and overrides.get("full_search", True) and "w_sem" not in explicit)
    resolved = config.model_copy(deep=True)
    resolved.train = resolve_train_config(config.train, preset, overrides)
    resolve_device(resolved.train.device)  # an absent accelerator fails before any work
    if searches_full:  # w_sem and the pseudo-label threshold from validation
        summary = search_full_recipe(
            run_dir, config, train=train_run, overrides=overrides, progress=progress,
            search_threshold=not explicit & {"semantic_threshold", "semantic_threshold_rule"},
            say=say)
        resolved.train = TrainConfig.model_validate(summary["train_config"])
    else:
        summary = train_run(run_dir, resolved, progress=progress)
        dropped = summary.get("notes", {}).get("semantic_labels", {}).get("dropped")
        if dropped:
            say(dropped)
    config = resolved
    manifest = read_manifest(run_dir)
    if manifest.get("operating_point"):  # RUN/model is no longer auto's choice
        update_manifest(run_dir, "operating_point", None)
    if manifest.get("full_recipe") and not searches_full:
        update_manifest(run_dir, "full_recipe", None)
    summary["rank"] = set_rank_after_training(run_dir, config, explicit_rank)
    if config.train.preset == "mtmh":
        summary["mtmh_alpha"] = choose_mtmh_alpha(run_dir, config, say=say)
    summary["preset"] = config.train.preset
    return summary
