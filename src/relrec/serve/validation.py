"""Exported related lists checked before they are served (the precomputed table's input)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from relrec.serve.bundle import PRECOMPUTED_STAGED, BundleError


def validated_lists(frame: pd.DataFrame, item_ids: np.ndarray, max_precomputed_k: int):
    """(trigger, item, rank, score) arrays of exported lists, or BundleError: every id
    known, scores finite, each trigger's ranks exactly 1..n (no gap, no repeat) with no
    item twice, and K within ``max_precomputed_k`` — checked before the (n_items, K)
    tables are allocated (one absurd rank would size them)."""
    n_items = len(item_ids)
    where = f"exported lists ({PRECOMPUTED_STAGED})"
    lookup = pd.Series(np.arange(n_items), index=item_ids.astype(str))
    positions = {}
    for column in ("trigger", "item"):
        values = frame[column].astype(str)
        found = lookup.reindex(values).to_numpy()
        unknown = np.isnan(found)
        if unknown.any():
            shown = ", ".join(repr(v) for v in pd.unique(values[unknown])[:5])
            raise BundleError(f"{where}: {int(unknown.sum())} rows name a {column} id that "
                              f"is not in the run's catalogue ({shown}): export again")
        positions[column] = found.astype(np.int64)
    trigger, item = positions["trigger"], positions["item"]
    score = frame["score"].to_numpy(np.float64)
    if not np.isfinite(score).all():
        raise BundleError(f"{where}: {int((~np.isfinite(score)).sum())} scores are not "
                          "finite (NaN/inf): export again")
    raw_rank = frame["rank"].to_numpy()
    if not np.issubdtype(raw_rank.dtype, np.integer):
        raw_rank = raw_rank.astype(np.float64)
        if not (np.isfinite(raw_rank).all() and (raw_rank == np.round(raw_rank)).all()):
            raise BundleError(f"{where}: ranks must be whole numbers")
    rank = raw_rank.astype(np.int64)
    if len(rank):
        order = np.lexsort((rank, trigger))
        sorted_trigger, sorted_rank = trigger[order], rank[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_trigger)) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        expected = np.arange(len(order)) - group_start + 1
        wrong = np.flatnonzero(sorted_rank != expected)
        if len(wrong):
            first = wrong[0]
            raise BundleError(
                f"{where}: trigger {str(item_ids[sorted_trigger[first]])!r} has "
                f"rank {int(sorted_rank[first])} where rank {int(expected[first])} belongs: "
                "each trigger's ranks must run 1..n without gaps or repeats; export again")
        pair = trigger * np.int64(n_items) + item
        if len(np.unique(pair)) != len(pair):
            raise BundleError(f"{where}: an item appears twice in one trigger's list")
        k = int(rank.max())
        if k > max_precomputed_k:
            raise BundleError(
                f"{where}: K={k} rows per trigger is over max_precomputed_k="
                f"{max_precomputed_k} (the lookup table would hold n_items x K "
                "entries): export with a smaller --k or raise max_precomputed_k")
    return trigger, item, rank, score.astype(np.float32)
