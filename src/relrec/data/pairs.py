"""Co-engagement pairs and evaluation pairs, in portable SQL.

* Training pairs: (trigger, candidate) for every candidate engaged in one of the next
  ``window`` timestamp groups after the trigger in the same session; repeated pairs are
  counted. Same-timestamp groups are unordered, so items inside one group are never paired.
* Evaluation pairs (validation and test periods): trigger → the next *distinct* item, i.e.
  the items of the first following timestamp group (within ``lookahead`` groups) that holds an
  item different from the trigger.

The SQL takes a sessionized relation (see :mod:`relrec.data.sessions`) and runs unchanged on
DuckDB and Spark SQL.
"""

from __future__ import annotations


def training_pairs_sql(sessionized: str, window: int) -> str:
    """Counted (trigger_index, candidate_index, count) pairs from the training period."""
    return f"""
    SELECT t.item_index AS trigger_index, c.item_index AS candidate_index,
           COUNT(*) AS pair_count
    FROM {sessionized} t
    JOIN {sessionized} c
      ON t.user_id = c.user_id AND t.period = c.period AND t.session_key = c.session_key
     AND c.group_position > t.group_position
     AND c.group_position <= t.group_position + {int(window)}
    WHERE t.period = 0 AND t.item_index <> c.item_index
    GROUP BY t.item_index, c.item_index
    """


def next_item_pairs_sql(sessionized: str, period: int, lookahead: int = 3) -> str:
    """(user_id, session_key, trigger_index, target_index) for trigger → next distinct item."""
    return f"""
    WITH later AS (
        SELECT t.user_id, t.session_key, t.group_position AS trigger_position,
               t.item_index AS trigger_index, c.item_index AS target_index,
               c.group_position AS target_position,
               MIN(c.group_position) OVER (
                   PARTITION BY t.user_id, t.session_key, t.group_position, t.item_index
               ) AS first_target_position
        FROM {sessionized} t
        JOIN {sessionized} c
          ON t.user_id = c.user_id AND t.period = c.period AND t.session_key = c.session_key
         AND c.group_position > t.group_position
         AND c.group_position <= t.group_position + {int(lookahead)}
        WHERE t.period = {int(period)} AND t.item_index <> c.item_index
    )
    SELECT DISTINCT user_id, session_key, trigger_position, trigger_index, target_index
    FROM later
    WHERE target_position = first_target_position
    """


def item_frequency_sql(training_pairs: str) -> str:
    """Per item: how often it is a trigger and a candidate in the training pairs."""
    return f"""
    WITH as_trigger AS (
        SELECT trigger_index AS item_index, SUM(pair_count) AS trigger_frequency
        FROM {training_pairs} GROUP BY trigger_index
    ), as_candidate AS (
        SELECT candidate_index AS item_index, SUM(pair_count) AS candidate_frequency
        FROM {training_pairs} GROUP BY candidate_index
    )
    SELECT COALESCE(a.item_index, b.item_index) AS item_index,
           COALESCE(a.trigger_frequency, 0) AS trigger_frequency,
           COALESCE(b.candidate_frequency, 0) AS candidate_frequency
    FROM as_trigger a FULL OUTER JOIN as_candidate b ON a.item_index = b.item_index
    """


def item_stats_sql(item_map: str, frequencies: str, train_items: str) -> str:
    """One row per catalogue item: trigger/candidate frequency, training interactions, in_train.

    ``frequencies`` is :func:`item_frequency_sql`'s relation (or a subquery), ``train_items``
    (item_index, train_interactions) over the training period.
    """
    return f"""
    SELECT m.item_index,
           CAST(COALESCE(f.trigger_frequency, 0) AS BIGINT) AS trigger_frequency,
           CAST(COALESCE(f.candidate_frequency, 0) AS BIGINT) AS candidate_frequency,
           CAST(COALESCE(t.train_interactions, 0) AS BIGINT) AS train_interactions,
           t.item_index IS NOT NULL AS in_train
    FROM {item_map} m
    LEFT JOIN {frequencies} f ON f.item_index = m.item_index
    LEFT JOIN {train_items} t ON t.item_index = m.item_index
    """
