"""Tune the reference systems on the validation period, so the peers are strong.

Every peer family has a small stated grid (:data:`GRIDS`, at most ``budget`` points per family,
:data:`DEFAULT_BUDGET`). Each grid point is fitted on the training period and scored on the
**validation** held-out pairs (``evaluate_system(..., split="valid")``); the point with the
highest validation recall@10 (warm pairs, the ``all`` segment; ties: the earlier grid point)
is chosen. The test period is never read.

The choice is cached as JSON in ``cache_dir`` (default ``RUN/peers/``, file
:data:`CACHE_NAME`), keyed by the SHA-256 of the run's ``pairs/train_pairs.parquet`` and
``pairs/valid_pairs.parquet`` (a re-prepared split re-tunes) and, per family, by its grid and
seed; the next call only refits the chosen setting.

Families (name keys): ``covisitation`` (normalization), ``als`` (factors × regularization),
``item2vec`` (window × epochs), ``ease_users`` and ``ease_sessions`` (λ). A family whose peer
raises :class:`~relrec.evaluate.peers.PeerSkipped` (e.g. EASE over :data:`EASE_MAX_ITEMS
<relrec.evaluate.peers.EASE_MAX_ITEMS>` items) is reported as skipped with its note.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from relrec.config import EvaluateConfig
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.evaluate.peers import EASE, CoVisitation, ImplicitALS, Item2Vec, PeerSkipped
from relrec.manifest import atomic_write_json, file_sha256
from relrec.run import RunData

CACHE_NAME = "peer_tuning.json"
CACHE_VERSION = 1
METRIC = "recall@10"
DEFAULT_BUDGET = 8  # grid points per family at most; the full default scan is 26 fits
EASE_L2 = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)

GRIDS: dict[str, list[dict]] = {
    "covisitation": [{"normalization": "count"}, {"normalization": "cosine"}],
    "als": [{"factors": f, "regularization": r} for f in (16, 32, 64, 128) for r in (0.05, 0.5)],
    "item2vec": [{"vector_size": 64, "window": w, "epochs": e} for w in (3, 10) for e in (5, 10)],
    "ease_users": [{"l2": l2} for l2 in EASE_L2],
    "ease_sessions": [{"l2": l2} for l2 in EASE_L2],
}
FAMILIES = tuple(GRIDS)

_BUILDERS: dict[str, Callable[[dict, int], object]] = {
    "covisitation": lambda params, seed: CoVisitation(**params),
    "als": lambda params, seed: ImplicitALS(**params, seed=seed),
    "item2vec": lambda params, seed: Item2Vec(**params, seed=seed),
    "ease_users": lambda params, seed: EASE(rows="users", **params),
    "ease_sessions": lambda params, seed: EASE(rows="sessions", **params),
}


def build_peer(family: str, params: dict, seed: int = 0):
    """An unfitted peer of ``family`` with ``params`` (a grid point)."""
    return _BUILDERS[family](dict(params), seed)


def grid_for(family: str, budget: int = DEFAULT_BUDGET) -> list[dict]:
    """The family's grid, thinned to at most ``budget`` evenly spaced points (ends kept)."""
    grid = GRIDS[family]
    if budget < 1:
        raise ValueError("budget must be >= 1")
    if len(grid) <= budget:
        return [dict(point) for point in grid]
    positions = np.unique(np.round(np.linspace(0, len(grid) - 1, budget)).astype(int))
    return [dict(grid[p]) for p in positions]


def data_key(run: RunData) -> str:
    """SHA-256 over the training and validation pairs files (what tuning depends on)."""
    digest = hashlib.sha256()
    for relative in ("pairs/train_pairs.parquet", "pairs/valid_pairs.parquet"):
        digest.update(relative.encode())
        digest.update(file_sha256(run.run_dir / relative).encode())
    return digest.hexdigest()


def _tuning_config(config: EvaluateConfig) -> EvaluateConfig:
    """Only point values are used: recall@10 / topic match@10 and the fewest resamples."""
    return EvaluateConfig.model_validate(
        {**config.model_dump(mode="json"), "ks": [10], "n_bootstrap": 10})


def _fit(family: str, params: dict, seed: int, run: RunData):
    system = build_peer(family, params, seed)
    start = time.perf_counter()
    system.fit(run)
    return system, time.perf_counter() - start


def _score(run: RunData, system, family: str, config: EvaluateConfig, segments) -> dict:
    summary = evaluate_system(run, system, family, config, split="valid",
                              segments=segments).summary["all"]
    return {metric: summary[metric]["value"] if metric in summary else None
            for metric in (METRIC, "topic_match_rate@10")}


def _read_cache(path: Path, key: str) -> dict:
    if not path.exists():
        return {}
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if cached.get("version") != CACHE_VERSION or cached.get("data_key") != key:
        return {}
    return cached.get("families", {})


def tune_peers(run: RunData | str | Path, evaluate_config: EvaluateConfig,
               cache_dir: str | Path | None = None, budget: int = DEFAULT_BUDGET,
               families: tuple[str, ...] | list[str] = FAMILIES, seed: int = 0,
               use_cache: bool = True) -> dict:
    """Choose each peer family's setting by validation recall@10; return the fitted peers.

    Returns ``{"systems": {family: fitted peer}, "record": {...}}``; the record holds
    ``split`` ("valid"), ``metric``, ``data_key``, ``cache_path``, ``budget``, ``seed`` and
    ``families[family]`` = ``{"grid": [params], "rows": [{"params", "recall@10",
    "topic_match_rate@10", "fit_seconds"}], "chosen": params, "validation": {metric: value}
    of the chosen point, "fit_seconds": of the returned peer, "source": "scan" | "cache",
    "skipped": None | note}``. Skipped families have no system.
    """
    run = run if isinstance(run, RunData) else RunData(run)
    unknown = [family for family in families if family not in GRIDS]
    if unknown:
        raise ValueError(f"unknown peer families {unknown}; choose from {list(GRIDS)}")
    config = _tuning_config(evaluate_config)
    cache_path = Path(cache_dir if cache_dir is not None else run.run_dir / "peers") / CACHE_NAME
    key = data_key(run)
    cached = _read_cache(cache_path, key) if use_cache else {}
    segments = None
    systems, records = {}, {}
    for family in families:
        grid = grid_for(family, budget)
        entry = cached.get(family)
        if entry and entry.get("grid") == grid and entry.get("seed") == seed:
            try:
                system, seconds = _fit(family, entry["chosen"], seed, run)
            except PeerSkipped as skipped:
                records[family] = {**entry, "source": "cache", "skipped": skipped.note}
                continue
            systems[family] = system
            records[family] = {**entry, "fit_seconds": seconds, "source": "cache",
                               "skipped": None}
            continue
        if segments is None:  # the choice reads the "all" segment only: score nothing else
            segments = {"all": segment_pairs(run, "valid", config)["all"]}
        rows, best, best_value = [], None, -np.inf
        try:
            for params in grid:
                system, seconds = _fit(family, params, seed, run)
                scores = _score(run, system, family, config, segments)
                rows.append({"params": params, **scores, "fit_seconds": seconds})
                value = scores[METRIC] if scores[METRIC] is not None else -np.inf
                if best is None or value > best_value:
                    best, best_value, best_seconds = (params, system, scores), value, seconds
                del system
        except PeerSkipped as skipped:
            records[family] = {"grid": grid, "seed": seed, "rows": rows, "chosen": None,
                               "validation": None, "fit_seconds": None, "source": "scan",
                               "skipped": skipped.note}
            continue
        params, system, scores = best
        systems[family] = system
        records[family] = {"grid": grid, "seed": seed, "rows": rows, "chosen": params,
                           "validation": scores, "fit_seconds": best_seconds,
                           "source": "scan", "skipped": None}
        best = None
        cached[family] = {name: records[family][name]
                          for name in ("grid", "seed", "rows", "chosen", "validation")}
        if use_cache:
            atomic_write_json(cache_path, {"version": CACHE_VERSION, "data_key": key,
                                           "metric": METRIC, "split": "valid",
                                           "families": cached})
    record = {"split": "valid", "metric": METRIC, "segment": "all", "data_key": key,
              "cache_path": str(cache_path), "budget": budget, "seed": seed,
              "families": records}
    return {"systems": systems, "record": record}
