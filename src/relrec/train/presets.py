"""Training presets. A preset sets defaults; fields the user set explicitly (TOML or command
line) win over it.

* ``auto``     the default: ``cf`` plus candidates that trust content more, one chosen on the
                validation period by a stated rule (:mod:`relrec.train.operating_point`);
                ``balanced`` is its old name. Its fields here are the search's start, ``cf``.
* ``cf``       ID only, ``L_co`` (the baseline two-tower).
* ``mtl``      + semantic task (paper eq. 4-5): per-pair weight ``w_co + w_sem·I(sem)``, 1:500.
* ``full``     the paper's recipe: MTL + text + visual + OPC (eq. 6-7).
* ``mtmh``     two heads (engagement, relevance) with content distillation (MTMH eq. 2).
"""

from __future__ import annotations

from relrec.config import TrainConfig

# Every preset scores by raw inner product with the logQ correction of in-batch negatives
# (Yi et al. 2019). Unit vectors without logQ learn a PMI-like score that buries popular
# items: on ml-latest-small and on the synthetic data it loses a large part of recall to
# co-visitation counts (RESULTS.md). The plain variant stays available as options.
_ENGAGEMENT_BASE = {"normalize_embeddings": False, "temperature": 1.0, "logq_correction": True}

_CF = {**_ENGAGEMENT_BASE, "use_id": True, "use_text": False, "use_visual": False,
       "w_co": 1.0, "w_sem": 0.0, "opc": False, "id_dropout": 0.0}
#: presets that are another's name
ALIASES = {"balanced": "auto"}

PRESETS: dict[str, dict] = {
    "auto": _CF,
    "cf": _CF,
    "mtl": {**_CF, "w_sem": 500.0},
    "full": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": True, "use_visual": True,
             "w_co": 1.0, "w_sem": 500.0, "opc": True, "id_dropout": 0.1},
    "mtmh": {**_ENGAGEMENT_BASE, "use_id": True, "use_text": True, "use_visual": True,
             "w_co": 1.0, "w_sem": 0.0, "opc": False, "id_dropout": 0.1},
}


def resolve_train_config(config: TrainConfig, preset: str | None = None,
                         overrides: dict | None = None) -> TrainConfig:
    """defaults < preset < fields set explicitly in ``config`` < ``overrides``."""
    preset = ALIASES.get(preset or config.preset, preset or config.preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    explicit = {name: getattr(config, name) for name in config.model_fields_set}
    merged = {**PRESETS[preset], **explicit, **(overrides or {}), "preset": preset}
    return TrainConfig.model_validate(merged)
