"""Training and evaluation slates for the CAViaR re-ranker, from held-out sessions.

Construction (documented):

1. Sessions of one period are rebuilt from ``data/interactions.parquet`` with the run's own
   sessionization SQL (:func:`relrec.data.sessions.sessionize_sql`, the same gap / session ids
   as ``prepare``) and the run's time split. **Training uses validation-period sessions only;
   test-period sessions are used only for evaluation** (NE, calibration, re-rank metrics). The
   main model never saw either period (it is fit on the training period).
2. Every engaged item ``t`` of a session that is followed by a later timestamp group is a
   trigger. Its **slate** is the main model's top-N related list for ``t`` (the "main ranking
   pass"), minus items the user already engaged in the session up to ``t`` and items of
   ``t``'s own timestamp group (unordered, so neither before nor after ``t``).
3. A slot is **positive** when the user engaged that item later in the same session (any
   later timestamp group), negative otherwise.
4. The **context** of every slot — "the items already placed above it" — is what the user
   consumed before reaching it: the session's items up to and including ``t``, most recent
   first (at most ``k``), with ``position`` = how many items that is. At serving the context
   is the trigger followed by the items the re-ranker has placed, which the user meets in
   that order. Slates were never shown to users: the labels say what a user engaged next
   given what they had just watched, not what they clicked in this list (a caveat for the
   real-data direction; on synthetic data with planted satiation the context carries the
   planted effect: a long same-topic run makes another same-topic item less likely).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from relrec.data.sessions import sessionize_sql
from relrec.data.split import TEST, VALID, TimeSplit, assign_period
from relrec.rerank.features import similarity_to_recent
from relrec.run import RunData

PERIODS = {"valid": VALID, "test": TEST}


def period_sessions(run: RunData, period: str) -> list[list[np.ndarray]]:
    """Sessions of the ``valid`` or ``test`` period as lists of timestamp groups (item arrays)."""
    interactions = pd.read_parquet(run.run_dir / "data" / "interactions.parquet",
                                   columns=["user_id", "item_index", "timestamp", "session_id"])
    split = run.manifest["split"]
    periods = assign_period(interactions["timestamp"].to_numpy(),
                            TimeSplit(split["valid_start"], split.get("test_start")))
    session_ids = interactions["session_id"]
    use_given = bool(session_ids.notna().any())
    events = pd.DataFrame({
        "user_id": interactions["user_id"].astype(str),
        "item_index": interactions["item_index"].astype("int64"),
        "timestamp": interactions["timestamp"].astype("int64"),
        "session_id": session_ids.fillna("").astype(str) if use_given else "",
        "period": periods.astype("int32")})
    events = events[events["period"] == PERIODS[period]]
    connection = duckdb.connect()
    connection.register("events", events)
    frame = connection.execute(
        sessionize_sql("events", run.config.prepare.session_gap_seconds, use_given)
        + " ORDER BY user_id, session_key, group_position, item_index").df()
    sessions = []
    for _, session in frame.groupby(["user_id", "session_key"], sort=False):
        groups = [group["item_index"].to_numpy(np.int64)
                  for _, group in session.groupby("group_position", sort=True)]
        if len(groups) >= 2:
            sessions.append(groups)
    return sessions


@dataclass
class SlateTriggers:
    """One row per (session, trigger occurrence) of a period."""
    triggers: np.ndarray  # (T,)
    context: np.ndarray  # (T, k) items consumed up to the trigger, most recent first, -1 pad
    position: np.ndarray  # (T,) items consumed so far (trigger included)
    later: list[set]  # items engaged later in the session
    seen: list[set]  # items engaged up to the trigger (and its group)
    session: np.ndarray  # (T,) session number (for splits by session)


def slate_triggers(sessions: list[list[np.ndarray]], context_size: int,
                   max_triggers: int | None = None, seed: int = 0) -> SlateTriggers:
    triggers, contexts, positions, later, seen, session_of = [], [], [], [], [], []
    for number, groups in enumerate(sessions):
        flat_before: list[int] = []
        for g, group in enumerate(groups[:-1]):
            after = set(np.concatenate(groups[g + 1:]).tolist())
            group_items = set(group.tolist())
            for trigger in group.tolist():
                history = flat_before + [trigger]
                recent = history[::-1][:context_size]
                triggers.append(trigger)
                contexts.append(recent + [-1] * (context_size - len(recent)))
                positions.append(len(history))
                later.append(after - set(history))
                seen.append(set(flat_before) | group_items)
                session_of.append(number)
            flat_before += group.tolist()
    order = np.arange(len(triggers))
    if max_triggers is not None and len(order) > max_triggers:
        order = np.sort(np.random.default_rng(seed).choice(len(order), max_triggers,
                                                           replace=False))
    return SlateTriggers(np.asarray(triggers, np.int64)[order],
                         np.asarray(contexts, np.int64).reshape(-1, context_size)[order],
                         np.asarray(positions, np.int64)[order],
                         [later[i] for i in order], [seen[i] for i in order],
                         np.asarray(session_of, np.int64)[order])


@dataclass
class Slates:
    """Flattened slots: features of both models, labels and the bookkeeping to group them."""
    pointwise: np.ndarray
    contextual: np.ndarray
    labels: np.ndarray
    row: np.ndarray  # slot -> trigger occurrence
    session: np.ndarray
    similarity: np.ndarray  # CAViaR Fig. 2 bucket variable (candidate · mean of recent 5)


def build_slates(reranker, lists, triggers: SlateTriggers, slate_size: int,
                 alpha: float | None = None) -> Slates:
    """Slates = the main ranking's top-N of each trigger (see the module docstring);
    ``lists`` is a :class:`relrec.rerank.lists.RankedLists` (its own order, at ``alpha``)."""
    scores, ranked = lists._main_search(np.asarray(triggers.triggers), slate_size + 10, alpha)
    rows, columns = [], []
    labels = []
    for r in range(len(triggers.triggers)):
        kept = 0
        for c in range(ranked.shape[1]):
            item = int(ranked[r, c])
            if item < 0 or item in triggers.seen[r]:
                continue
            rows.append(r)
            columns.append(c)
            labels.append(item in triggers.later[r])
            kept += 1
            if kept == slate_size:
                break
    rows = np.asarray(rows, np.int64)
    columns = np.asarray(columns, np.int64)
    candidates = ranked[rows, columns]
    point, contextual = reranker.features(
        triggers.triggers[rows], candidates, scores[rows, columns], scores[rows, 0], columns,
        ranked.shape[1], triggers.context[rows], triggers.position[rows])
    similarity = similarity_to_recent(reranker.space, candidates, triggers.context[rows])
    return Slates(point, contextual, np.asarray(labels, np.float32), rows,
                  triggers.session[rows], similarity)


def normalized_entropy(probabilities: np.ndarray, labels: np.ndarray,
                       background_rate: float) -> float:
    """CAViaR §5.2: log loss per impression / entropy of the background rate (lower = better)."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    log_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    b = float(np.clip(background_rate, 1e-7, 1 - 1e-7))
    return float(log_loss / -(b * np.log(b) + (1 - b) * np.log(1 - b)))
