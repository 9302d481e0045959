"""Split by global time quantiles.

Interactions before the ``1 - valid - test`` quantile of all timestamps are training, then
validation, then test. ``test_fraction = 0`` fits on everything but a validation slice (the
production mode, and how an outside harness gives relrec only its training period).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class TimeSplit:
    valid_start: int  # first timestamp of the validation period
    test_start: int | None  # first timestamp of the test period (None: no test period)

    def to_dict(self) -> dict:
        return {"valid_start": self.valid_start, "test_start": self.test_start}


def time_split(timestamps: np.ndarray, valid_fraction: float, test_fraction: float) -> TimeSplit:
    """Boundaries at global time quantiles; raises ValueError when a period would be empty."""
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError("valid_fraction + test_fraction must be < 1")
    timestamps = np.asarray(timestamps)
    if timestamps.size == 0:
        raise ValueError("no interactions to split")
    train_end = 1.0 - valid_fraction - test_fraction
    valid_start = int(np.quantile(timestamps, train_end, method="higher"))
    test_start = (
        int(np.quantile(timestamps, 1.0 - test_fraction, method="higher"))
        if test_fraction > 0 else None
    )
    return TimeSplit(valid_start=valid_start, test_start=test_start)


def assign_period(timestamps: np.ndarray, split: TimeSplit) -> np.ndarray:
    """0 = train, 1 = validation, 2 = test for each timestamp."""
    timestamps = np.asarray(timestamps)
    period = np.where(timestamps < split.valid_start, TRAIN, VALID).astype(np.int8)
    if split.test_start is not None:
        period[timestamps >= split.test_start] = TEST
    return period


def higher_quantile_sql(events: str, position: int) -> str:
    """Portable SQL for the timestamp at 0-based sorted ``position`` (``method="higher"``),
    from a per-timestamp histogram instead of a global sort of the raw log."""
    return f"""
        WITH histogram AS (SELECT timestamp, COUNT(*) AS n FROM {events} GROUP BY timestamp),
        cumulative AS (
            SELECT timestamp, SUM(n) OVER (ORDER BY timestamp
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS c
            FROM histogram)
        SELECT MIN(timestamp) FROM cumulative WHERE c > {int(position)}"""


def events_sql(raw: str, item_map: str, split: TimeSplit, given_sessions: bool) -> str:
    """Portable SQL (DuckDB and Spark) for the ``events`` table the pair SQL reads:
    ``user_id, item_index, timestamp, session_id, period`` from a raw log ``raw`` (``user_id,
    item_id, timestamp[, session_id]``) and ``item_map`` (``item_id, item_index``); periods as
    :func:`assign_period`. ``given_sessions``: keep the log's ``session_id`` (else '')."""
    session = "COALESCE(CAST(r.session_id AS STRING), '')" if given_sessions else "''"
    test_case = (f"WHEN r.timestamp >= {int(split.test_start)} THEN {TEST} "
                 if split.test_start is not None else "")
    return f"""
        SELECT CAST(r.user_id AS STRING) AS user_id, m.item_index,
               CAST(r.timestamp AS BIGINT) AS timestamp, {session} AS session_id,
               CAST(CASE WHEN r.timestamp < {int(split.valid_start)} THEN {TRAIN} {test_case}
                         ELSE {VALID} END AS INT) AS period
        FROM {raw} r JOIN {item_map} m ON CAST(r.item_id AS STRING) = m.item_id"""
