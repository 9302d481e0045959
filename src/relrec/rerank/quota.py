"""MTMH serving-time quota merge (MTMH §3.5).

Each head's top-N is ranked on its own (its own index, its own scores). The merged list of
``k`` slots takes **exactly** ``n_e = round(α·k)`` slots from the engagement head and
``k - n_e`` from the relevance head (round half up: ``floor(α·k + 0.5)``), interleaved in
proportion: slot ``s`` (0-based) goes to the engagement head when the engagement slots used so
far are fewer than ``round((s + 1) · n_e / k)`` (Bresenham), so the two heads' slots are spread
evenly down the list. A head's item already placed by the other head is skipped and the slot
back-filled from the same head (its next item). α = 1 returns the engagement head's list, α = 0
the relevance head's. Per-head lists of length N ≥ k always suffice: a head needs at most its
own quota plus the other head's placements. If a head runs out (a catalogue smaller than k, or
filters upstream), the remaining slots are taken from the other head and ``-1`` pads what is
left; that is the only case where the counts differ from the quota, and it is reported.
"""

from __future__ import annotations

import math

import numpy as np

ENGAGEMENT_SOURCE, RELEVANCE_SOURCE = 0, 1


def engagement_slots(alpha: float, k: int) -> int:
    """``round(α·k)``, halves rounded up."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return int(math.floor(alpha * k + 0.5))


def slot_plan(alpha: float, k: int) -> np.ndarray:
    """Which head fills each slot (0 = engagement, 1 = relevance), interleaved in proportion."""
    n_e = engagement_slots(alpha, k)
    plan = np.empty(k, dtype=np.int8)
    used = 0
    for slot in range(k):
        target = math.floor((slot + 1) * n_e / k + 0.5) if k else 0
        if used < target:
            plan[slot] = ENGAGEMENT_SOURCE
            used += 1
        else:
            plan[slot] = RELEVANCE_SOURCE
    return plan


def _two_dimensional(values) -> np.ndarray:
    """``values`` as (rows, N): an empty list of lists has no second axis."""
    array = np.asarray(values)
    return array if array.ndim == 2 else array.reshape(len(array), 0)


def quota_merge(engagement_indices: np.ndarray, engagement_scores: np.ndarray,
                relevance_indices: np.ndarray, relevance_scores: np.ndarray, k: int,
                alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Merge two heads' ranked lists (rows = triggers, ``-1`` pads) into ``k`` slots.

    Returns ``(scores, indices, source, short_rows)``: each placed item's score in its own
    head (the heads' scales differ; use the rank, not the score, across heads), the merged item
    indices, the head each slot came from (0 engagement, 1 relevance, -1 empty) and the number
    of rows where a head ran out and the quota could not be met exactly.
    """
    lists = (_two_dimensional(engagement_indices), _two_dimensional(relevance_indices))
    list_scores = (_two_dimensional(engagement_scores), _two_dimensional(relevance_scores))
    n = lists[0].shape[0]
    plan = slot_plan(alpha, k)
    indices = np.full((n, k), -1, dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    source = np.full((n, k), -1, dtype=np.int8)
    # every row at once, one slot after another (a Python loop per row was 2.6 s of choosing
    # the operating point of an ml-latest-small model)
    pointers = np.zeros((2, n), dtype=np.int64)
    short = np.zeros(n, dtype=bool)
    all_rows = np.arange(n)
    for slot in range(k):
        wanted = int(plan[slot])
        open_rows = all_rows
        for head in (wanted, 1 - wanted):
            candidates, length = lists[head], lists[head].shape[1]
            pointer = pointers[head]
            # skip padding and items already placed in the row (by either head)
            moving = open_rows
            while len(moving):
                inside = pointer[moving] < length
                moving = moving[inside]
                items = candidates[moving, pointer[moving]]
                taken = (items < 0) | (indices[moving, :slot] == items[:, None]).any(axis=1)
                moving = moving[taken]
                pointer[moving] += 1
            has_item = pointer[open_rows] < length
            found, open_rows = open_rows[has_item], open_rows[~has_item]
            placed = pointer[found]
            indices[found, slot] = candidates[found, placed]
            scores[found, slot] = list_scores[head][found, placed]
            source[found, slot] = head
            pointer[found] += 1
            if head != wanted:
                short[found] = True
        short[open_rows] = True
    return scores, indices, source, int(short.sum())
