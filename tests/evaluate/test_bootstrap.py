"""Bootstrap intervals over triggers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relrec.evaluate.bootstrap import (
    Interval,
    cluster_sums,
    bootstrap_interval,
    bootstrap_weights,
    paired_bootstrap_difference,
)
from relrec.evaluate.metrics import PerTrigger


def _random_metric(n: int, seed: int) -> PerTrigger:
    rng = np.random.default_rng(seed)
    den = rng.integers(1, 5, n).astype(float)
    num = rng.binomial(den.astype(int), 0.3).astype(float)
    return PerTrigger(num, den)


# --------------------------------------------------------------------------- weights


def test_bootstrap_weights_shape_sums_and_determinism():
    w = bootstrap_weights(50, 200, seed=7)
    assert w.shape == (200, 50)
    np.testing.assert_array_equal(w.sum(axis=1), np.full(200, 50))
    assert w.min() >= 0
    np.testing.assert_array_equal(w, bootstrap_weights(50, 200, seed=7))
    assert not np.array_equal(w, bootstrap_weights(50, 200, seed=8))
    # roughly uniform: each trigger is drawn once per resample on average
    assert abs(w.mean() - 1.0) < 1e-12
    assert 0.8 < w.mean(axis=0).min() and w.mean(axis=0).max() < 1.2


def test_bootstrap_weights_blocking_is_deterministic(monkeypatch):
    import relrec.evaluate.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "_BLOCK_ELEMENTS", 3 * 40)  # 3 resamples per block
    w = bootstrap_weights(40, 10, seed=1)
    assert w.shape == (10, 40)
    np.testing.assert_array_equal(w.sum(axis=1), np.full(10, 40))
    np.testing.assert_array_equal(w, bootstrap_weights(40, 10, seed=1))


def test_bootstrap_weights_zero_triggers():
    assert bootstrap_weights(0, 5, seed=0).shape == (5, 0)


def test_interval_matches_manual_computation_from_weights():
    m = _random_metric(300, 1)
    w = bootstrap_weights(300, 500, seed=3).astype(float)
    stats = (w @ m.numerator) / (w @ m.denominator)
    low, high = np.quantile(stats, [0.025, 0.975])
    iv = bootstrap_interval(m, n_boot=500, seed=3)
    assert iv.value == pytest.approx(m.value())
    assert iv.low == pytest.approx(low) and iv.high == pytest.approx(high)


# --------------------------------------------------------------------------- single metric


def test_interval_contains_value():
    m = _random_metric(500, 2)
    iv = bootstrap_interval(m, n_boot=1000, seed=0)
    assert iv.low < iv.value < iv.high
    assert iv.high - iv.low < 0.2


def test_degenerate_metric_has_zero_width():
    m = PerTrigger(np.full(50, 0.3), np.ones(50))
    iv = bootstrap_interval(m, n_boot=200, seed=0)
    assert iv.value == pytest.approx(0.3)
    assert iv.low == iv.value == iv.high
    # constant ratio with varying denominators (pooled recall where every trigger scores 1/2)
    den = np.arange(1, 51, dtype=float)
    iv = bootstrap_interval(PerTrigger(den / 2, den), n_boot=200, seed=0)
    assert iv.low == iv.high == iv.value == 0.5


def test_same_seed_same_interval_and_seed_matters():
    m = _random_metric(200, 4)
    assert bootstrap_interval(m, seed=11) == bootstrap_interval(m, seed=11)
    assert bootstrap_interval(m, seed=11) != bootstrap_interval(m, seed=12)


def test_higher_confidence_is_wider():
    m = _random_metric(300, 5)
    narrow = bootstrap_interval(m, confidence=0.5)
    wide = bootstrap_interval(m, confidence=0.99)
    assert wide.low <= narrow.low and narrow.high <= wide.high
    assert wide.high - wide.low > narrow.high - narrow.low


def test_excluded_triggers_do_not_change_the_interval():
    m = _random_metric(200, 6)
    padded = PerTrigger(np.concatenate([m.numerator, np.zeros(100)]),
                        np.concatenate([m.denominator, np.zeros(100)]))
    assert bootstrap_interval(padded, seed=2) == bootstrap_interval(m, seed=2)


def test_all_excluded_gives_nan_and_json_none():
    iv = bootstrap_interval(PerTrigger(np.zeros(3), np.zeros(3)))
    assert math.isnan(iv.value) and math.isnan(iv.low) and math.isnan(iv.high)
    assert iv.to_dict() == {"value": None, "low": None, "high": None}


def test_to_dict():
    assert Interval(0.5, 0.25, 0.75).to_dict() == {"value": 0.5, "low": 0.25, "high": 0.75}


def test_bad_arguments():
    m = _random_metric(10, 0)
    with pytest.raises(ValueError):
        bootstrap_interval(m, n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_interval(m, confidence=1.0)


def test_scale_10k_triggers_1000_resamples():
    # functional check at the size the evaluation uses (speed is for benchmarks/)
    m = _random_metric(10_000, 9)
    iv = bootstrap_interval(m, n_boot=1000, seed=0)
    assert iv.low < iv.value < iv.high
    other = _random_metric(10_000, 10)
    d = paired_bootstrap_difference(m, other, n_boot=1000, seed=0)
    # two independent draws of the same 30% rate: the difference interval holds 0 and the point
    assert d.low < min(0.0, d.value) and max(0.0, d.value) < d.high
    assert d.high - d.low < 0.03  # ~2 x 1.96 x sqrt(2 x 0.21 / 25,000 pairs) = 0.016


# --------------------------------------------------------------------------- paired


def test_paired_difference_with_itself_is_exactly_zero():
    m = _random_metric(300, 7)
    d = paired_bootstrap_difference(m, m, n_boot=500, seed=1)
    assert d.value == 0.0 and d.low == 0.0 and d.high == 0.0


def test_paired_difference_value_and_sign():
    a = _random_metric(300, 8)
    b = PerTrigger(a.numerator * 0.5, a.denominator)  # b is exactly half of a
    d = paired_bootstrap_difference(a, b, seed=0)
    assert d.value == pytest.approx(a.value() - b.value())
    assert 0 < d.low <= d.value <= d.high
    r = paired_bootstrap_difference(b, a, seed=0)
    assert r.value == pytest.approx(-d.value)
    assert r.low == pytest.approx(-d.high) and r.high == pytest.approx(-d.low)


def test_paired_narrower_than_unpaired_for_correlated_systems():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.uniform(0, 1, n)  # large trigger-to-trigger variation shared by both systems
    a = PerTrigger(np.clip(base + rng.normal(0, 0.02, n), 0, 1), np.ones(n))
    b = PerTrigger(np.clip(base + 0.01 + rng.normal(0, 0.02, n), 0, 1), np.ones(n))
    paired = paired_bootstrap_difference(a, b, n_boot=1000, seed=0)
    # unpaired: resample the two systems independently
    wa = bootstrap_weights(n, 1000, seed=1).astype(float)
    wb = bootstrap_weights(n, 1000, seed=2).astype(float)
    diff = (wa @ a.numerator) / wa.sum(1) - (wb @ b.numerator) / wb.sum(1)
    lo, hi = np.quantile(diff, [0.025, 0.975])
    assert paired.high - paired.low < 0.25 * (hi - lo)
    # and the paired interval resolves the difference that the unpaired one cannot
    assert paired.high < 0 < hi


def test_paired_requires_same_triggers():
    with pytest.raises(ValueError):
        paired_bootstrap_difference(_random_metric(10, 0), _random_metric(11, 0))


def test_paired_keeps_triggers_included_in_either_system():
    # system a excludes trigger 2 (e.g. a list too short for ILD), b includes it
    a = PerTrigger(np.array([1.0, 0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0, 1.0]))
    b = PerTrigger(np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    d = paired_bootstrap_difference(a, b, n_boot=300, seed=0)
    assert d.value == pytest.approx(2 / 3 - 2 / 4)
    # trigger 2 takes part (only b counts it): dropping it would make every resample's b
    # rate 2/3 or a mix without b's hit at trigger 2, and the interval could not reach -1/3
    assert d.low < d.value < d.high


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40),
       st.integers(0, 2**32 - 1))
def test_interval_properties(rows, seed):
    num = np.array([min(h, d) for h, d in rows], dtype=float)
    den = np.array([d for _, d in rows], dtype=float)
    m = PerTrigger(num, den)
    iv = bootstrap_interval(m, n_boot=200, seed=seed)
    if den.sum() == 0:
        assert math.isnan(iv.value)
        return
    assert 0.0 <= iv.low <= iv.high <= 1.0
    assert iv == bootstrap_interval(m, n_boot=200, seed=seed)
    d = paired_bootstrap_difference(m, m, n_boot=50, seed=seed)
    assert d.value == d.low == d.high == 0.0


# --------------------------------------------------------------------------- user clusters


def test_cluster_sums_resample_whole_clusters():
    m = PerTrigger(np.array([1.0, 0.0, 2.0, 1.0]), np.array([1.0, 1.0, 2.0, 3.0]))
    summed = cluster_sums(m, np.array(["b", "a", "b", "c"]))
    np.testing.assert_array_equal(summed.numerator, [0.0, 3.0, 1.0])  # a, b, c
    np.testing.assert_array_equal(summed.denominator, [1.0, 3.0, 3.0])
    assert summed.value() == m.value()
    with pytest.raises(ValueError, match="labels"):
        cluster_sums(m, np.array([0, 1]))
    # one cluster holding everything: every resample is the whole data, zero width
    iv = bootstrap_interval(m, n_boot=200, seed=0, clusters=np.zeros(4, dtype=int))
    assert iv.low == iv.high == pytest.approx(m.value())


def _correlated_world(rng, n_users=60, effect=0.05):
    """Per-user hit rates vary a lot (strong per-user correlation); each user's pairs are
    spread over several (user, trigger) rows. System b is system a plus ``effect`` per pair,
    with a per-user deviation, so the population difference is ``effect``."""
    rows_per_user = rng.integers(5, 25, n_users)
    users = np.repeat(np.arange(n_users), rows_per_user)
    pairs = rng.integers(1, 6, users.size).astype(float)
    rate_a = rng.beta(2, 6, n_users)
    rate_b = np.clip(rate_a + effect + rng.normal(0, 0.2, n_users), 0, 1)
    hits_a = rng.binomial(pairs.astype(int), rate_a[users]).astype(float)
    hits_b = rng.binomial(pairs.astype(int), rate_b[users]).astype(float)
    return PerTrigger(hits_b, pairs), PerTrigger(hits_a, pairs), users


def test_user_level_interval_covers_a_planted_effect_where_row_level_under_covers():
    """100 worlds with a known paired effect and strong per-user correlation: the 95%
    user-level interval covers it in >= 85% of worlds, the row (trigger) level one less."""
    rng = np.random.default_rng(2026)
    # the population effect of a world's generator, computed on a very large world
    big_b, big_a, _ = _correlated_world(np.random.default_rng(0), n_users=200_000)
    truth = big_b.value() - big_a.value()
    covered_users = covered_rows = 0
    for world in range(100):
        b, a, users = _correlated_world(rng)
        by_user = paired_bootstrap_difference(b, a, n_boot=400, seed=world, clusters=users)
        by_row = paired_bootstrap_difference(b, a, n_boot=400, seed=world)
        assert by_user.value == by_row.value  # same point estimate, only the interval differs
        covered_users += by_user.low <= truth <= by_user.high
        covered_rows += by_row.low <= truth <= by_row.high
    assert covered_users >= 85, (covered_users, covered_rows)
    assert covered_rows <= 80, (covered_users, covered_rows)  # under-covers
