"""EASE (closed form against a brute-force constrained solve, lists) and peer tuning on the
validation period (never the test split; cached by the pairs' hash; skips with a note)."""

import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from relrec.config import EvaluateConfig, RunConfig
from relrec.data.prepare import prepare_run
from relrec.evaluate import peer_tuning, peers
from relrec.evaluate.evaluation import evaluate_system
from relrec.evaluate.peer_tuning import grid_for, tune_peers
from relrec.evaluate.peers import (EASE, PeerSkipped, Popularity, ease_weights,
                                   ease_weights_from_rows)
from relrec.run import RunData

CONFIG = EvaluateConfig(n_bootstrap=10)
FAST = ("covisitation", "ease_users", "ease_sessions")


def _constrained_least_squares(X: np.ndarray, l2: float) -> np.ndarray:
    """min ||X − XB||² + λ||B||² s.t. diag(B) = 0 separates by column: column j is the ridge
    regression of x_j on the other columns, with B_jj = 0."""
    n = X.shape[1]
    B = np.zeros((n, n))
    for j in range(n):
        others = np.delete(np.arange(n), j)
        A = X[:, others]
        B[others, j] = np.linalg.solve(A.T @ A + l2 * np.eye(n - 1), A.T @ X[:, j])
    return B


@pytest.mark.parametrize("shape", [(40, 7), (5, 9)])
def test_ease_weights_match_a_constrained_least_squares_solve(shape):
    X = (np.random.default_rng(3).random(shape) < 0.4).astype(np.float64)
    for l2 in (0.5, 4.0, 50.0):
        B = ease_weights(X.T @ X, l2)
        assert np.all(np.diag(B) == 0.0)
        np.testing.assert_allclose(B, _constrained_least_squares(X, l2), atol=1e-10)
        # the sparse entry point (Woodbury when rows < items) gives the same weights
        np.testing.assert_allclose(ease_weights_from_rows(sp.csr_matrix(X), l2), B, atol=1e-10)


def test_ease_weights_reject_a_non_positive_penalty():
    with pytest.raises(ValueError):
        ease_weights(np.eye(3), 0.0)


@pytest.fixture(scope="module")
def planted_run(synthetic_run):
    run_dir, _ = synthetic_run(n_items=150, n_topics=6, n_users=400, sessions_per_user=4,
                               session_length=8, autoplay_rate=0.2, popularity_exponent=0.6,
                               seed=5)
    return run_dir


@pytest.fixture
def run_copy(planted_run, tmp_path):
    """A private copy (tests write caches and rewrite pairs), without the test pairs: tuning
    must never need them."""
    target = tmp_path / "run"
    shutil.copytree(planted_run, target)
    (target / "pairs" / "test_pairs.parquet").unlink()
    return target


@pytest.mark.parametrize("rows", ["users", "sessions"])
def test_ease_lists_exclude_trigger_rank_by_weight_and_backfill(planted_run, rows):
    run = RunData(planted_run)
    ease = EASE(l2=20.0, rows=rows).fit(run)
    in_train = np.flatnonzero(run.in_train)
    triggers = np.concatenate([in_train[:20], np.flatnonzero(~run.in_train)[:3]])
    k = len(in_train) + 5  # longer than the catalogue: popularity backfill, then -1 padding
    scores, ranked = ease._search(triggers, k)
    assert scores.dtype == np.float32 and ranked.dtype == np.int64
    for row, trigger in enumerate(triggers):
        listed = ranked[row][ranked[row] >= 0]
        assert trigger not in listed and len(set(listed)) == len(listed)
        assert run.in_train[listed].all()
        assert np.all(ranked[row][len(listed):] == -1)
        if run.in_train[trigger]:
            local = ease.local_of_[trigger]
            weights = ease.weights_[local, ease.local_of_[listed]]
            positive = weights > 0
            # positive weights first, in descending order: B[t, j], t's weight for j
            assert np.all(np.diff(weights[positive]) <= 0)
            assert positive[: positive.sum()].all()
            best = np.argsort(-np.where(np.arange(len(in_train)) == local, -np.inf,
                                        ease.weights_[local]), kind="stable")[0]
            assert listed[0] == in_train[best]


def test_tune_peers_picks_by_validation_only_and_caches(run_copy, monkeypatch):
    splits = []
    real_evaluate, real_segments = peer_tuning.evaluate_system, peer_tuning.segment_pairs

    def spy_evaluate(run, system, name, config, split="test", segments=None):
        splits.append(split)
        return real_evaluate(run, system, name, config, split=split, segments=segments)

    def spy_segments(run, split, config):
        splits.append(split)
        return real_segments(run, split, config)

    monkeypatch.setattr(peer_tuning, "evaluate_system", spy_evaluate)
    monkeypatch.setattr(peer_tuning, "segment_pairs", spy_segments)
    run = RunData(run_copy)
    first = tune_peers(run, CONFIG, families=FAST)
    assert splits and set(splits) == {"valid"}
    assert len(splits) == 1 + sum(len(grid_for(f)) for f in FAST)
    record = first["record"]
    assert record["split"] == "valid" and record["cache_path"].startswith(str(run_copy / "peers"))
    for family in FAST:
        entry = record["families"][family]
        values = [row["recall@10"] for row in entry["rows"]]
        assert entry["grid"] == [row["params"] for row in entry["rows"]] == grid_for(family)
        assert entry["chosen"] == entry["rows"][int(np.argmax(values))]["params"]
        assert entry["source"] == "scan" and entry["skipped"] is None
        assert family in first["systems"]
        # the returned system is the chosen fit: it reproduces the chosen validation value
        again = evaluate_system(run, first["systems"][family], family, CONFIG, split="valid")
        assert again.summary["all"]["recall@10"]["value"] == pytest.approx(max(values))
    assert first["systems"]["ease_users"].rows == "users"

    splits.clear()
    second = tune_peers(RunData(run_copy), CONFIG, families=FAST)
    assert splits == []  # no grid re-scan: only the chosen settings are refitted
    for family in FAST:
        entry = second["record"]["families"][family]
        assert entry["source"] == "cache"
        assert entry["chosen"] == record["families"][family]["chosen"]
        assert family in second["systems"]

    # a re-prepared split (different validation pairs) invalidates the cache
    valid = pd.read_parquet(run_copy / "pairs" / "valid_pairs.parquet")
    valid.iloc[: len(valid) // 2].to_parquet(run_copy / "pairs" / "valid_pairs.parquet",
                                             index=False)
    third = tune_peers(RunData(run_copy), CONFIG, families=FAST)
    assert "valid" in splits and "test" not in splits
    assert third["record"]["data_key"] != record["data_key"]
    assert all(third["record"]["families"][f]["source"] == "scan" for f in FAST)


def test_ease_beats_popularity_on_validation(run_copy):
    run = RunData(run_copy)
    tuned = tune_peers(run, CONFIG, families=("ease_users", "ease_sessions"), use_cache=False)
    popularity = evaluate_system(run, Popularity().fit(run), "popularity", CONFIG,
                                 split="valid").summary["all"]["recall@10"]["value"]
    for family in ("ease_users", "ease_sessions"):
        value = tuned["record"]["families"][family]["validation"]["recall@10"]
        assert value > popularity + 0.05, (family, value, popularity)


def test_ease_over_the_size_cap_is_skipped_with_a_note(run_copy, monkeypatch):
    run = RunData(run_copy)
    with pytest.raises(PeerSkipped, match="training items > 10"):
        EASE(rows="users", max_items=10).fit(run)
    monkeypatch.setattr(peers, "EASE_MAX_ITEMS", 10)
    tuned = tune_peers(run, CONFIG, families=("covisitation", "ease_users"))
    entry = tuned["record"]["families"]["ease_users"]
    assert "ease_users" not in tuned["systems"] and "covisitation" in tuned["systems"]
    assert entry["chosen"] is None and "EASE_MAX_ITEMS" in entry["skipped"]


def test_vector_peers_are_tuned_deterministically(run_copy):
    run = RunData(run_copy)
    families = ("als", "item2vec")
    first = tune_peers(run, CONFIG, families=families, budget=2, use_cache=False)
    second = tune_peers(run, CONFIG, families=families, budget=2, use_cache=False)
    for family in families:
        rows = first["record"]["families"][family]["rows"]
        assert len(rows) == 2
        assert [r["recall@10"] for r in rows] == [
            r["recall@10"] for r in second["record"]["families"][family]["rows"]]


def test_budget_thins_the_grid_and_keeps_its_ends():
    grid = peer_tuning.GRIDS["ease_users"]
    thinned = grid_for("ease_users", 3)
    assert len(thinned) == 3 and thinned[0] == grid[0] and thinned[-1] == grid[-1]
    assert all(len(grid_for(f)) <= peer_tuning.DEFAULT_BUDGET for f in peer_tuning.FAMILIES)


def test_ease_and_covisitation_on_movielens_small(movielens_small_dir, tmp_path):
    """End to end on real data: EASE over users vs co-visitation, chosen on validation."""
    run_dir = tmp_path / "ml"
    prepare_run(run_dir, RunConfig(), movielens=movielens_small_dir)
    (run_dir / "pairs" / "test_pairs.parquet").unlink()
    tuned = tune_peers(RunData(run_dir), CONFIG, families=("covisitation", "ease_users"),
                       budget=3)
    families = tuned["record"]["families"]
    for family in ("covisitation", "ease_users"):
        assert families[family]["validation"]["recall@10"] > 0.02, families[family]


def test_a_peer_without_its_library_is_skipped_with_the_extra_to_install():
    from relrec.evaluate.peers import _optional

    with pytest.raises(PeerSkipped, match=r"relrec\[peers\]"):
        _optional("relrec_no_such_library", "ALS")
