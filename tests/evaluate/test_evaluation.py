"""Scoring systems on held-out pairs: units are (user, trigger), intervals resample users."""

import numpy as np
import pytest

from relrec.config import EvaluateConfig
from relrec.evaluate.bootstrap import bootstrap_interval
from relrec.evaluate.sealed import open_test_period
from relrec.evaluate.evaluation import evaluate_system, paired_differences, segment_pairs
from relrec.evaluate.metrics import recall_at_k, topic_match_rate_at_k
from relrec.evaluate.peers import CoVisitation, Popularity
from relrec.run import RunData


@pytest.fixture(scope="module")
def prepared(synthetic_run):
    run_dir, _ = synthetic_run(n_items=300, n_topics=8, n_users=400, sessions_per_user=3,
                               session_length=6, autoplay_rate=0.2, popularity_exponent=0.8,
                               seed=4)
    return RunData(run_dir)


def test_point_estimates_equal_a_per_trigger_computation(prepared):
    config = EvaluateConfig(n_bootstrap=100, ks=[10])
    open_test_period(prepared, "pytest")
    segments = segment_pairs(prepared, "test", config)
    segment = segments["all"]
    pairs = prepared.test_pairs[~prepared.test_pairs["cold"]]
    assert segment.n_users == pairs["user_id"].nunique() > 10
    # every unit is one user and one trigger; every pair belongs to its own user's unit
    users = np.unique(pairs["user_id"].astype(str).to_numpy(), return_inverse=True)[1]
    np.testing.assert_array_equal(segment.unit_user[segment.pair_unit], users.reshape(-1))
    np.testing.assert_array_equal(segment.unit_trigger[segment.pair_unit], segment.trigger_row)
    system = CoVisitation().fit(prepared)
    evaluation = evaluate_system(prepared, system, "covisitation", config, "test", segments)
    ranked = system.ranked_indices(prepared.item_ids[segment.triggers], 10)
    recall = recall_at_k(ranked, segment.trigger_row, segment.targets, 10).value()
    topic = topic_match_rate_at_k(ranked, segment.triggers, prepared.topic_matrix, 10).value()
    summary = evaluation.summary["all"]
    assert summary["recall@10"]["value"] == pytest.approx(recall, abs=1e-12)
    assert summary["topic_match_rate@10"]["value"] == pytest.approx(topic, abs=1e-12)
    assert summary["counts"]["users"] == segment.n_users
    assert summary["counts"]["interval_unit"] == "user"
    # the user-level interval is the cluster bootstrap over the unit rows' users
    expected = bootstrap_interval(evaluation.per_trigger["all"]["recall@10"], 100, config.seed,
                                  clusters=segment.unit_user)
    assert summary["recall@10"]["low"] == pytest.approx(expected.low)
    assert summary["recall@10"]["high"] == pytest.approx(expected.high)
    assert summary["recall@10"]["low"] < recall < summary["recall@10"]["high"]


def test_paired_differences_resample_the_same_users(prepared):
    config = EvaluateConfig(n_bootstrap=200, ks=[10])
    segments = segment_pairs(prepared, "valid", config)
    a = evaluate_system(prepared, CoVisitation().fit(prepared), "a", config, "valid", segments)
    b = evaluate_system(prepared, Popularity().fit(prepared), "b", config, "valid", segments)
    difference = paired_differences(a, b, config)["all"]["recall@10"]
    assert difference["value"] == pytest.approx(
        a.summary["all"]["recall@10"]["value"] - b.summary["all"]["recall@10"]["value"])
    assert difference["low"] < difference["value"] < difference["high"]
    b.clusters["all"] = b.clusters["all"][::-1].copy()
    with pytest.raises(ValueError, match="same units"):
        paired_differences(a, b, config)


def test_notes_warn_about_untimed_content_missing_users_and_few_users():
    from relrec.studies.run_evaluation import interval_notes

    old_run = interval_notes({"split": "valid", "users": 0, "content_cut": None})
    assert any("carry no users" in line for line in old_run)
    assert any("not recorded" in line for line in old_run)
    refit = interval_notes({"split": "valid", "users": 500,
                            "content_cut": {"rule": "data_end"}})
    assert len(refit) == 1 and "data_end" in refit[0]
    assert interval_notes({"split": "valid", "users": 500,
                           "content_cut": {"rule": "train_end"}}) == []
    few = interval_notes({"split": "test", "users": 70, "content_cut": {"rule": "train_end"},
                          "test_reads": {"run": 1, "data": 2, "ledger": "/l.json"}})
    assert "70 users" in few[0] and "read 2 time(s)" in few[1]


def test_saved_evaluations_round_trip_and_older_formats_are_a_cache_miss(prepared, tmp_path):
    from relrec.evaluate.evaluation import load_evaluation, save_evaluation

    config = EvaluateConfig(n_bootstrap=20, ks=[10])
    evaluation = evaluate_system(prepared, Popularity().fit(prepared), "p", config, "valid")
    save_evaluation(evaluation, tmp_path / "row")
    loaded = load_evaluation(tmp_path / "row")
    np.testing.assert_array_equal(loaded.clusters["all"], evaluation.clusters["all"])
    np.testing.assert_array_equal(loaded.per_trigger["all"]["recall@10"].numerator,
                                  evaluation.per_trigger["all"]["recall@10"].numerator)
    with np.load(tmp_path / "row.npz") as arrays:  # a cache written before units had users
        old = {k: arrays[k] for k in arrays.files if not k.startswith(("format", "all|clusters"))}
    np.savez(tmp_path / "row.npz", **old)
    assert load_evaluation(tmp_path / "row") is None
