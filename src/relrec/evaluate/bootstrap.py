"""Percentile cluster-bootstrap intervals ("95% bootstrap intervals"; "differences
between two systems come with a paired bootstrap interval (same resamples)").

Held-out pairs are not independent: on ml-latest-small all 6,834 warm test pairs come from 70
users, one of whom supplies 26%. Resampling triggers treats each trigger as independent and so
gives intervals that are too narrow; the evaluation therefore passes ``clusters`` (the user of
each row) and whole users are resampled. Without ``clusters`` every row is its own cluster.

A metric is a :class:`~relrec.evaluate.metrics.PerTrigger` — per-trigger numerators and
denominators whose ratio of sums is the metric. One bootstrap resample draws the triggers
with replacement; its statistic is ``(w @ numerator) / (w @ denominator)`` where ``w`` holds
how many times each trigger was drawn. This is a cluster bootstrap: all test pairs (or
slots) of a trigger move together.

The resample counts come from :func:`bootstrap_weights`, generated in fixed-size blocks
from ``numpy.random.default_rng(seed)``, so the same ``(n_triggers, n_boot, seed)`` always
gives the same resamples, whether they are materialised at once or streamed block by block,
and two systems evaluated with the same seed see the same resampled triggers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from relrec.evaluate.metrics import PerTrigger

__all__ = [
    "Interval",
    "cluster_sums",
    "bootstrap_interval",
    "paired_bootstrap_difference",
    "bootstrap_weights",
]

# Elements (n_rows * n_triggers) per block of resample counts.
_BLOCK_ELEMENTS = 1 << 22


@dataclass
class Interval:
    """A point estimate with a percentile-bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready dict; non-finite numbers (an undefined metric) become ``None``."""
        return {name: (float(x) if math.isfinite(x) else None)
                for name, x in (("value", self.value), ("low", self.low), ("high", self.high))}


def _check_args(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _block_rows(n_triggers: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_triggers))


def _iter_weight_blocks(n_triggers: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resample counts in blocks of rows; the blocking depends only on ``n_triggers``, so the
    concatenation is always :func:`bootstrap_weights`."""
    if n_triggers < 0:
        raise ValueError(f"n_triggers must be >= 0, got {n_triggers}")
    rng = np.random.default_rng(seed)
    step = _block_rows(n_triggers)
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        if n_triggers == 0:
            yield np.zeros((rows, 0), dtype=np.int32)
            continue
        draws = rng.integers(0, n_triggers, size=(rows, n_triggers), dtype=np.int64)
        draws += (np.arange(rows, dtype=np.int64) * n_triggers)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * n_triggers)
        yield counts.reshape(rows, n_triggers).astype(np.int32, copy=False)


def bootstrap_weights(n_triggers: int, n_boot: int, seed: int) -> np.ndarray:
    """Resample counts, shape ``(n_boot, n_triggers)``: row ``b`` says how many times each
    trigger is drawn in resample ``b`` (each row sums to ``n_triggers``). Generated in blocks
    to bound the temporary memory; deterministic in ``(n_triggers, n_boot, seed)``."""
    _check_args(n_boot, 0.5)
    blocks = list(_iter_weight_blocks(int(n_triggers), int(n_boot), seed))
    return np.concatenate(blocks, axis=0)


def _resampled_ratios(metrics: list[PerTrigger], n_boot: int, seed: int) -> list[np.ndarray]:
    """Statistic of every metric on each of the same ``n_boot`` resamples (NaN where a
    resample drew no trigger with a positive denominator)."""
    n = len(metrics[0])
    out = [np.empty(n_boot, dtype=np.float64) for _ in metrics]
    row = 0
    for w in _iter_weight_blocks(n, n_boot, seed):
        wf = w.astype(np.float64)
        for m, dest in zip(metrics, out):
            num = wf @ m.numerator
            den = wf @ m.denominator
            with np.errstate(invalid="ignore", divide="ignore"):
                dest[row: row + w.shape[0]] = np.where(den > 0, num / den, np.nan)
        row += w.shape[0]
    return out


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _constant_ratio(metric: PerTrigger) -> bool:
    """True when every included trigger has the same ratio, so every resample's statistic
    equals the point estimate (only rounding could make them differ)."""
    inc = metric.denominator > 0
    if not inc.any():
        return False
    r = metric.numerator[inc] / metric.denominator[inc]
    return bool(np.all(r == r[0]))


def cluster_sums(metric: PerTrigger, clusters: np.ndarray | None) -> PerTrigger:
    """Numerators and denominators summed per cluster (row ``c`` = cluster ``c`` of
    ``np.unique(clusters)``), so that resampling the rows of the result resamples whole
    clusters. ``clusters`` holds one label per row of ``metric``; ``None`` returns ``metric``."""
    if clusters is None:
        return metric
    clusters = np.asarray(clusters).reshape(-1)
    if clusters.shape[0] != len(metric):
        raise ValueError(f"clusters has {clusters.shape[0]} labels for {len(metric)} rows")
    _, inverse = np.unique(clusters, return_inverse=True)
    n_clusters = int(inverse.max()) + 1 if inverse.size else 0
    return PerTrigger(np.bincount(inverse, metric.numerator, minlength=n_clusters),
                      np.bincount(inverse, metric.denominator, minlength=n_clusters))


def bootstrap_interval(metric: PerTrigger, n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95, clusters: np.ndarray | None = None
                       ) -> Interval:
    """Percentile bootstrap interval of a ratio-of-sums metric, resampling
    ``clusters`` (one label per row, e.g. the user of each row) or, when ``None``, rows.

    Only triggers with a positive denominator are resampled (the others take no part in the
    metric). ``value`` is the point estimate on all triggers; ``low``/``high`` are the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled
    statistic. All NaN when no trigger is included.
    """
    _check_args(n_boot, confidence)
    value = metric.value()
    if not math.isfinite(value):
        return Interval(float("nan"), float("nan"), float("nan"))
    metric = cluster_sums(metric, clusters)
    included = metric.subset(metric.denominator > 0)
    if _constant_ratio(included):
        return Interval(value, value, value)
    (stats,) = _resampled_ratios([included], int(n_boot), seed)
    low, high = _percentiles(stats, confidence)
    return Interval(value, low, high)


def paired_bootstrap_difference(metric_a: PerTrigger, metric_b: PerTrigger,
                                n_boot: int = 1000, seed: int = 0,
                                confidence: float = 0.95,
                                clusters: np.ndarray | None = None) -> Interval:
    """Paired percentile bootstrap interval of ``metric_a - metric_b``.

    Both metrics must be computed on the same triggers in the same order (same length; the
    caller keeps the order); each resample evaluates both systems on the SAME drawn triggers,
    so trigger-to-trigger variation shared by the two systems cancels. ``clusters`` (one label
    per row, shared by both metrics) resamples whole clusters (users) instead of rows.
    Clusters included in neither metric are dropped before resampling. The difference of a metric with itself is
    exactly 0 with a zero-width interval.
    """
    _check_args(n_boot, confidence)
    if len(metric_a) != len(metric_b):
        raise ValueError(
            f"paired bootstrap needs the same triggers: {len(metric_a)} vs {len(metric_b)} rows"
        )
    va, vb = metric_a.value(), metric_b.value()
    if not (math.isfinite(va) and math.isfinite(vb)):
        return Interval(float("nan"), float("nan"), float("nan"))
    value = va - vb
    metric_a, metric_b = cluster_sums(metric_a, clusters), cluster_sums(metric_b, clusters)
    keep = (metric_a.denominator > 0) | (metric_b.denominator > 0)
    a, b = metric_a.subset(keep), metric_b.subset(keep)
    sa, sb = _resampled_ratios([a, b], int(n_boot), seed)
    low, high = _percentiles(sa - sb, confidence)
    return Interval(value, low, high)
