"""Training presets (SPEC §4). A preset sets defaults; fields the user set explicitly (TOML or
command line) win over it.

* ``cf``       ID only, ``L_co`` (the baseline two-tower).
* ``mtl``      + semantic task (eq. 4-5): per-pair weight ``w_co + w_sem·I(sem)``, 1:500.
* ``full``     the paper's recipe: MTL + text + visual + OPC.
* ``balanced`` our recommended operating point (see RESULTS.md for how it was chosen):
                CF + text + visual + logQ; ``relrec train`` then tunes the content blend of
                the ranking on validation (:mod:`relrec.train.blend_tuning`).
* ``mtmh``     two heads (engagement, relevance) with content distillation.
"""

from __future__ import annotations

from relrec.config import TrainConfig

# Every preset scores by raw inner product with the logQ correction of in-batch negatives
# (Yi et al. 2019). Unit vectors without logQ learn a PMI-like score that buries popular
# items: on ml-latest-small and on the synthetic data it loses a large part of recall to
# co-visitation counts (RESULTS.md). The plain variant stays available as options.
_ENGAGEMENT_BASE = {"normalize_embeddings": False, "temperature": 1.0, "logq_correction": True}

PRESETS: dict[str, dict] = {
    "cf": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": False, "use_visual": False,
           "w_co": 1.0, "w_sem": 0.0, "opc": False, "id_dropout": 0.0},
    "mtl": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": False, "use_visual": False,
            "w_co": 1.0, "w_sem": 500.0, "opc": False, "id_dropout": 0.0},
    "full": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": True, "use_visual": True,
             "w_co": 1.0, "w_sem": 500.0, "opc": True, "id_dropout": 0.1},
    # chosen on the ml-latest-small validation split by the study's operating-point rule
    # (RESULTS.md): content fusion without the semantic task or OPC, which both cost relevance
    "balanced": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": True, "use_visual": True,
                 "w_co": 1.0, "w_sem": 0.0, "opc": False, "id_dropout": 0.1},
    "mtmh": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": True, "use_visual": True,
             "w_co": 1.0, "w_sem": 0.0, "opc": False, "id_dropout": 0.1},
}


def resolve_train_config(config: TrainConfig, preset: str | None = None,
                         overrides: dict | None = None) -> TrainConfig:
    """defaults < preset < fields set explicitly in ``config`` < ``overrides``."""
    preset = preset or config.preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    explicit = {name: getattr(config, name) for name in config.model_fields_set}
    merged = {**PRESETS[preset], **explicit, **(overrides or {}), "preset": preset}
    return TrainConfig.model_validate(merged)
