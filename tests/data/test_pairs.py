"""Sessionization and pair extraction edge cases, with answers worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from relrec.config import PrepareConfig
from relrec.data.prepare import extract_pairs
from relrec.data.split import TEST, TRAIN, VALID, assign_period, time_split
from relrec.errors import InputError


def frame(rows, session_id=None):
    data = pd.DataFrame(rows, columns=["user_id", "item_index", "timestamp"])
    data["session_id"] = session_id
    return data


def pair_set(pairs):
    return {(int(t), int(c)): int(n) for t, c, n in pairs[["trigger_index", "candidate_index",
                                                           "pair_count"]].itertuples(index=False)}


def train_only(rows, **config):
    """Put every row in the training period by adding far-future valid/test rows."""
    extra = [("zz", 99, 10**10 + i) for i in range(20)]
    config = PrepareConfig(valid_fraction=0.05, test_fraction=0.05, **config)
    return extract_pairs(frame(rows + extra), 100, config)


def test_window_pairs_follow_order_and_window():
    # one session 0 → 1 → 2 → 3 (60 s apart), window 2
    rows = [("u", 0, 0), ("u", 1, 60), ("u", 2, 120), ("u", 3, 180)]
    pairs = train_only(rows, window=2)
    assert pair_set(pairs.train_pairs) == {(0, 1): 1, (0, 2): 1, (1, 2): 1, (1, 3): 1,
                                           (2, 3): 1}


def test_gap_splits_sessions():
    rows = [("u", 0, 0), ("u", 1, 60), ("u", 2, 60 + 1801), ("u", 3, 60 + 1801 + 10)]
    pairs = train_only(rows, window=3)
    assert pair_set(pairs.train_pairs) == {(0, 1): 1, (2, 3): 1}


def test_same_timestamp_items_are_an_unordered_group():
    # items 5 and 7 at the same second: no pair between them, both pair with before/after
    rows = [("u", 1, 0), ("u", 7, 10), ("u", 5, 10), ("u", 2, 20)]
    pairs = train_only(rows, window=1)
    assert pair_set(pairs.train_pairs) == {(1, 5): 1, (1, 7): 1, (5, 2): 1, (7, 2): 1}


def test_single_item_users_and_repeats_give_no_pairs():
    rows = [("a", 1, 0), ("b", 2, 0), ("c", 3, 0), ("c", 3, 30)]
    pairs = train_only(rows, window=3)
    assert pairs.train_pairs.empty


def test_repeated_pairs_are_counted():
    rows = [("a", 1, 0), ("a", 2, 10), ("b", 1, 0), ("b", 2, 10)]
    pairs = train_only(rows, window=3)
    assert pair_set(pairs.train_pairs) == {(1, 2): 2}
    stats = pairs.item_stats.set_index("item_index")
    assert stats.loc[1, "trigger_frequency"] == 2 and stats.loc[2, "candidate_frequency"] == 2


def test_given_session_ids_override_the_gap():
    rows = [("u", 0, 0), ("u", 1, 10_000), ("u", 2, 10_010)]
    data = frame(rows, session_id=["s1", "s1", "s2"])
    extra = frame([("zz", 99, 10**10 + i) for i in range(20)], session_id="x")
    pairs = extract_pairs(pd.concat([data, extra]), 100,
                          PrepareConfig(valid_fraction=0.05, test_fraction=0.05))
    assert pair_set(pairs.train_pairs) == {(0, 1): 1}


def test_time_split_quantiles_and_periods():
    timestamps = np.arange(100)
    split = time_split(timestamps, 0.1, 0.1)
    period = assign_period(timestamps, split)
    assert (period == TRAIN).sum() == 80 and (period == VALID).sum() == 10
    assert (period == TEST).sum() == 10
    no_test = time_split(timestamps, 0.1, 0.0)
    assert no_test.test_start is None
    assert (assign_period(timestamps, no_test) == TEST).sum() == 0


def test_test_pairs_are_next_distinct_item_and_cold_flagged():
    # training: user a watches 1 → 2 ; test period: b watches 1 → 1 (repeat) → 2 → 3 (3 unseen)
    train = [("a", 1, 0), ("a", 2, 10)]
    valid = [("v", 4, 1000 + i) for i in range(2)] + [("v", 5, 1005)]
    test = [("b", 1, 5000), ("b", 1, 5010), ("b", 2, 5020), ("b", 3, 5030)]
    rows = train + valid + test
    pairs = extract_pairs(frame(rows), 10, PrepareConfig(valid_fraction=0.3, test_fraction=0.4))
    test_pairs = pairs.test_pairs
    got = sorted(map(tuple, test_pairs[["trigger_index", "target_index", "cold"]]
                     .itertuples(index=False)))
    # 1 (t=5000) → next distinct is 2 ; 1 (t=5010) → 2 ; 2 → 3 (cold: 3 never in training)
    assert got == [(1, 2, False), (1, 2, False), (2, 3, True)]


def test_empty_period_is_a_clear_error():
    rows = [("u", 1, 0), ("u", 2, 0)]
    with pytest.raises(InputError, match="empty period"):
        extract_pairs(frame(rows), 5, PrepareConfig())
