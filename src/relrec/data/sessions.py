"""Sessionization in SQL.

The SQL here is plain ANSI window-function SQL so that the same text runs on DuckDB (embedded,
out-of-core) and on Spark SQL (``relrec.data.spark``) for logs that outgrow one machine.

Input relation ``events(user_id, item_index, timestamp, session_id, period)``; ``period`` is
0 = train, 1 = validation, 2 = test (see :mod:`relrec.data.split`). Sessions never cross a
period boundary, so no test information leaks into training pairs.

Items one user engaged at the same timestamp form an unordered *group*: every item in it gets
the same ``group_position`` and no order is invented between them.
"""

from __future__ import annotations


def sessionize_sql(events: str, session_gap_seconds: int, use_given_sessions: bool) -> str:
    """SQL selecting ``user_id, item_index, timestamp, period, session_key, group_position``.

    With ``use_given_sessions`` the user's ``session_id`` column defines sessions; otherwise a
    new session starts after a gap longer than ``session_gap_seconds`` between consecutive
    distinct timestamps of a user (gaps are measured between timestamp groups, so ties never
    split or reorder a session).
    """
    gap = int(session_gap_seconds)
    if use_given_sessions:
        keyed = f"""
        keyed AS (
            SELECT user_id, item_index, timestamp, period,
                   CAST(session_id AS STRING) AS session_key
            FROM {events}
        )"""
    else:
        keyed = f"""
        timestamp_groups AS (
            SELECT DISTINCT user_id, period, timestamp FROM {events}
        ),
        gaps AS (
            SELECT user_id, period, timestamp,
                   timestamp - LAG(timestamp) OVER (
                       PARTITION BY user_id, period ORDER BY timestamp) AS gap_seconds
            FROM timestamp_groups
        ),
        numbered AS (
            SELECT user_id, period, timestamp,
                   SUM(CASE WHEN gap_seconds IS NULL OR gap_seconds > {gap} THEN 1 ELSE 0 END)
                       OVER (PARTITION BY user_id, period ORDER BY timestamp
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_number
            FROM gaps
        ),
        keyed AS (
            SELECT e.user_id, e.item_index, e.timestamp, e.period,
                   CAST(n.session_number AS STRING) AS session_key
            FROM {events} e
            JOIN numbered n
              ON e.user_id = n.user_id AND e.period = n.period AND e.timestamp = n.timestamp
        )"""
    return f"""
    WITH {keyed}
    SELECT user_id, item_index, timestamp, period, session_key,
           DENSE_RANK() OVER (PARTITION BY user_id, period, session_key
                              ORDER BY timestamp) AS group_position
    FROM keyed
    """
