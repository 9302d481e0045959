"""Score any system that produces related lists on a run's held-out pairs.

A *system* is any :class:`relrec.index.base.SimilarItemsModel` — a trained model
(:class:`relrec.RelatedItems`) or a peer
(:mod:`relrec.evaluate.peers`). All systems are scored on the same triggers, so two systems'
per-trigger metrics can be compared with a paired bootstrap.

Segments: ``all`` (warm pairs: trigger and target seen in training), ``popular_triggers``
(top 1% of triggers by training frequency), ``unpopular_triggers`` (bottom 10%) and ``cold``
(pairs whose trigger or target was never seen in training), reported apart.

Intervals resample *users*: the rows of every per-trigger metric are (user, trigger) units,
each unit carrying one user's held-out pairs of that trigger. Pair metrics (recall, NDCG) are
computed per unit; list metrics (topic match, popular share, …) are computed once per distinct
trigger and shared among that trigger's units in equal parts, so every point estimate is the
same as a per-trigger computation, and a resample of users moves exactly their share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relrec.config import EvaluateConfig
from relrec.content.store import load_content
from relrec.evaluate.bootstrap import bootstrap_interval, paired_bootstrap_difference
from relrec.evaluate.metrics import (PerTrigger, content_similarity_at_k, coverage_at_k,
                                     ndcg_at_k, novelty_at_k, popular_share_at_k,
                                     popularity_masks, recall_at_k, topic_jaccard_at_k,
                                     topic_match_rate_at_k)
from relrec.evaluate.sealed import require_open
from relrec.manifest import atomic_path, atomic_write_json
from relrec.run import RunData

# Saved per-unit arrays: 2 = rows are (user, trigger) units with their users (clusters).
EVALUATION_FORMAT = 2
_FORMAT_KEY = "format|version|units"
# Below this many users in a period, intervals are wide and themselves uncertain: say so.
FEW_USERS_WARNING = 200


@dataclass
class SegmentPairs:
    triggers: np.ndarray  # distinct trigger item indices
    trigger_row: np.ndarray  # per pair, row into triggers
    targets: np.ndarray
    unit_trigger: np.ndarray | None = None  # per (user, trigger) unit, row into triggers
    pair_unit: np.ndarray | None = None  # per pair, its unit
    unit_user: np.ndarray | None = None  # per unit, its user (0..n_users-1): the clusters
    n_users: int = 0

    def __post_init__(self) -> None:
        if self.unit_trigger is None:  # no users known: every trigger is its own unit
            self.unit_trigger = np.arange(len(self.triggers), dtype=np.int64)
            self.pair_unit = np.asarray(self.trigger_row, dtype=np.int64)
            self.unit_user = self.unit_trigger.copy()
            self.n_users = 0


@dataclass
class SystemEvaluation:
    name: str
    per_trigger: dict[str, dict[str, PerTrigger]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    clusters: dict[str, np.ndarray] = field(default_factory=dict)  # per segment, unit → user


def _units(frame, trigger_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(unit_trigger, pair_unit, unit_user, n_users) for the pairs of ``frame``; a unit is
    one (user, trigger)."""
    _, user = np.unique(frame["user_id"].astype(str).to_numpy(), return_inverse=True)
    user = user.astype(np.int64).reshape(-1)
    n_users = int(user.max()) + 1 if user.size else 0
    width = int(trigger_row.max()) + 1 if trigger_row.size else 1
    unit_keys, pair_unit = np.unique(user * width + trigger_row, return_inverse=True)
    return ((unit_keys % width).astype(np.int64), pair_unit.astype(np.int64).reshape(-1),
            (unit_keys // width).astype(np.int64), n_users)


def share_among_units(metric: PerTrigger, segment: SegmentPairs) -> PerTrigger:
    """A per-distinct-trigger list metric spread over the trigger's (user, trigger) units in
    equal parts: sums, and so the point estimate, are unchanged."""
    units_per_trigger = np.bincount(segment.unit_trigger, minlength=len(segment.triggers))
    share = 1.0 / np.maximum(units_per_trigger, 1)[segment.unit_trigger]
    return PerTrigger(metric.numerator[segment.unit_trigger] * share,
                      metric.denominator[segment.unit_trigger] * share)


def segment_pairs(run: RunData, split: str, config: EvaluateConfig) -> dict[str, SegmentPairs]:
    """The held-out pairs of ``split`` ("valid" or "test") by segment. The test period is
    sealed: it must have been opened (and counted) with
    :func:`relrec.evaluate.sealed.open_test_period` first."""
    if split not in {"valid", "test"}:
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    if split == "test":
        require_open(run)
    pairs = run.test_pairs if split == "test" else run.valid_pairs
    top, bottom = popularity_masks(run.trigger_frequency, config.popular_top_fraction,
                                   config.unpopular_bottom_fraction, eligible=run.in_train)
    warm = pairs[~pairs["cold"]]
    selections = {
        "all": warm,
        "popular_triggers": warm[top[warm["trigger_index"].to_numpy()]],
        "unpopular_triggers": warm[bottom[warm["trigger_index"].to_numpy()]],
        "cold": pairs[pairs["cold"]],
    }
    out = {}
    for name, frame in selections.items():
        triggers, rows = np.unique(frame["trigger_index"].to_numpy(), return_inverse=True)
        rows = rows.astype(np.int64).reshape(-1)
        segment = SegmentPairs(triggers.astype(np.int64), rows,
                               frame["target_index"].to_numpy(np.int64))
        if "user_id" in frame.columns:  # runs prepared before users were kept lack it
            (segment.unit_trigger, segment.pair_unit, segment.unit_user,
             segment.n_users) = _units(frame, rows)
        out[name] = segment
    return out


def relevance_vectors(run: RunData) -> np.ndarray | None:
    """Content vectors for the relevance fallback when items carry no topic labels."""
    loaded = load_content(run, "text")
    return None if loaded is None else loaded[0]


def evaluate_system(run: RunData, system, name: str, config: EvaluateConfig,
                    split: str = "valid", segments: dict[str, SegmentPairs] | None = None,
                    options: dict | None = None) -> SystemEvaluation:
    """Score ``system.similar_items(…, **options)`` on every segment of ``split``."""
    segments = segments or segment_pairs(run, split, config)
    ks = sorted(config.ks)
    k_max = ks[-1]
    frequency = run.candidate_frequency.astype(np.float64)
    popular, _ = popularity_masks(frequency, config.popular_top_fraction,
                                  config.unpopular_bottom_fraction, eligible=run.in_train)
    probability = frequency / max(frequency.sum(), 1.0)
    use_topics = run.has_topics
    fallback_vectors = None if use_topics else relevance_vectors(run)
    evaluation = SystemEvaluation(name)
    for segment_name, segment in segments.items():
        metrics: dict[str, PerTrigger] = {}
        counts = {"pairs": int(len(segment.targets)), "triggers": int(len(segment.triggers)),
                  "users": int(segment.n_users),
                  "interval_unit": "user" if segment.n_users else
                  "trigger (this run's pairs carry no users: run `relrec prepare` again)"}
        evaluation.clusters[segment_name] = segment.unit_user
        if len(segment.triggers) == 0:
            evaluation.per_trigger[segment_name] = metrics
            evaluation.summary[segment_name] = {"counts": counts}
            continue
        ranked = system.ranked_indices(run.item_ids[segment.triggers], k_max,
                                       **(options or {}))
        unit_ranked = ranked[segment.unit_trigger]
        shared = lambda metric: share_among_units(metric, segment)  # noqa: E731
        for k in ks:
            metrics[f"recall@{k}"] = recall_at_k(unit_ranked, segment.pair_unit,
                                                 segment.targets, k)
            metrics[f"ndcg@{k}"] = ndcg_at_k(unit_ranked, segment.pair_unit, segment.targets, k)
            if use_topics:
                metrics[f"topic_match_rate@{k}"] = shared(topic_match_rate_at_k(
                    ranked, segment.triggers, run.topic_matrix, k))
                metrics[f"topic_jaccard@{k}"] = shared(topic_jaccard_at_k(
                    ranked, segment.triggers, run.topic_matrix, k))
            elif fallback_vectors is not None:
                metrics[f"content_similarity@{k}"] = shared(content_similarity_at_k(
                    ranked, segment.triggers, fallback_vectors, k))
            metrics[f"popular_share@{k}"] = shared(popular_share_at_k(ranked, popular, k))
            metrics[f"novelty@{k}"] = shared(novelty_at_k(ranked, probability, k))
        summary = {metric: bootstrap_interval(values, config.n_bootstrap, config.seed,
                                              clusters=segment.unit_user).to_dict()
                   for metric, values in metrics.items()}
        for k in ks:
            summary[f"coverage@{k}"] = {"value": coverage_at_k(ranked, run.n_items, k)}
        summary["counts"] = counts
        evaluation.per_trigger[segment_name] = metrics
        evaluation.summary[segment_name] = summary
    return evaluation


def paired_differences(a: SystemEvaluation, b: SystemEvaluation, config: EvaluateConfig,
                       segments=("all",)) -> dict:
    """a − b for every metric both have, paired over the same resampled users."""
    out = {}
    for segment in segments:
        common = set(a.per_trigger.get(segment, {})) & set(b.per_trigger.get(segment, {}))
        clusters = a.clusters.get(segment)
        if clusters is not None and not np.array_equal(clusters, b.clusters.get(segment)):
            raise ValueError(f"{a.name} and {b.name} were not scored on the same units")
        out[segment] = {
            metric: paired_bootstrap_difference(a.per_trigger[segment][metric],
                                                b.per_trigger[segment][metric],
                                                config.n_bootstrap, config.seed,
                                                clusters=clusters).to_dict()
            for metric in sorted(common)}
    return out


def format_interval(entry: dict, percent: bool = True) -> str:
    if "low" not in entry:
        return f"{entry['value']:.3f}"
    scale = 100.0 if percent else 1.0
    return (f"{entry['value'] * scale:.2f} [{entry['low'] * scale:.2f}, "
            f"{entry['high'] * scale:.2f}]")


def save_evaluation(evaluation: SystemEvaluation, path: str | Path) -> None:
    """Per-trigger arrays (NumPy .npz, no pickle) + the summary (JSON) beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for segment, metrics in evaluation.per_trigger.items():
        for metric, values in metrics.items():
            arrays[f"{segment}|{metric}|numerator"] = values.numerator
            arrays[f"{segment}|{metric}|denominator"] = values.denominator
    for segment, clusters in evaluation.clusters.items():
        arrays[f"{segment}|clusters|users"] = clusters
    arrays[_FORMAT_KEY] = np.array([EVALUATION_FORMAT])
    with atomic_path(path.with_suffix(".npz"), suffix=".tmp.npz") as temporary:
        np.savez(temporary, **arrays)
    atomic_write_json(path.with_suffix(".json"),
                      {"name": evaluation.name, "summary": evaluation.summary})


def load_evaluation(path: str | Path) -> SystemEvaluation | None:
    path = Path(path)
    if not (path.with_suffix(".json").exists() and path.with_suffix(".npz").exists()):
        return None
    sidecar = json.loads(path.with_suffix(".json").read_text())
    evaluation = SystemEvaluation(sidecar["name"], summary=sidecar["summary"])
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
        if _FORMAT_KEY not in arrays.files or int(arrays[_FORMAT_KEY][0]) != EVALUATION_FORMAT:
            return None  # cached before rows were (user, trigger) units: score it again
        for key in arrays.files:
            if key == _FORMAT_KEY:
                continue
            segment, metric, part = key.split("|")
            if metric == "clusters":
                evaluation.clusters[segment] = arrays[key]
                continue
            if part != "numerator":
                continue
            evaluation.per_trigger.setdefault(segment, {})[metric] = PerTrigger(
                arrays[key], arrays[f"{segment}|{metric}|denominator"])
    return evaluation
