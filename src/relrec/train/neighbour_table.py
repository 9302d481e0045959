"""The EASE neighbour table behind ``[rank] ease_blend`` (:mod:`relrec.rerank.neighbours`).

``--preset auto`` scores "model + EASE" rows: the trained model's candidate pool re-ranked by
``z(model) + w · z(B̂[t, c])``. EASE's λ is the peer's own, tuned on validation recall@10 and
cached per split (:func:`relrec.evaluate.peer_tuning.tune_peers`, the same choice the peer
tables use): users × items when the run keeps its interaction log, else training sessions ×
items. The table the served model carries is fitted again on the refit run (training +
validation periods) with that λ.
"""

from __future__ import annotations

import time

from relrec.config import EvaluateConfig
from relrec.evaluate.peer_tuning import build_peer, tune_peers
from relrec.rerank.neighbours import NeighbourWeights
from relrec.run import RunData

#: stored neighbours per item (≥ the default candidate pool of 200, so a pool's pairs are
#: mostly in the table)
NEIGHBOURS = 256
FAMILIES = ("ease_users", "ease_sessions")


def tuned_neighbour_table(run: RunData, evaluate_config: EvaluateConfig, seed: int = 0,
                          neighbours: int = NEIGHBOURS) -> tuple[dict, NeighbourWeights | None]:
    """EASE's validation-tuned setting for this split and the table of the peer that tuning
    fitted (no second fit): ``({"family", "params", "validation", "source", "seconds"}, table)``,
    or ``({"skipped": note, "seconds"}, None)`` when no family can be fitted (too many items, no
    training data)."""
    started = time.perf_counter()
    notes = []
    for family in FAMILIES:
        tuned = tune_peers(run, evaluate_config, families=(family,), seed=seed)
        record = tuned["record"]["families"][family]
        if record.get("skipped"):
            notes.append(record["skipped"])
            continue
        table = _table(tuned["systems"][family], run, family, record["chosen"], neighbours)
        return {"family": family, "params": record["chosen"], "validation":
                record["validation"], "source": record["source"],
                "seconds": round(time.perf_counter() - started, 2)}, table
    return {"skipped": "; ".join(notes),
            "seconds": round(time.perf_counter() - started, 2)}, None


def fit_neighbour_table(run: RunData, family: str, params: dict,
                        neighbours: int = NEIGHBOURS) -> NeighbourWeights:
    """EASE (``family`` at ``params``) fitted on the run's training period (a refit run's:
    training + validation), each item's ``neighbours`` largest weights kept."""
    return _table(build_peer(family, params).fit(run), run, family, params, neighbours)


def _table(ease, run: RunData, family: str, params: dict, neighbours: int) -> NeighbourWeights:
    settings = {"family": family, **params, "neighbours": int(neighbours),
                "training_end": run.training_end, "items_fitted": int(len(ease.items_))}
    return NeighbourWeights.from_dense(ease.weights_, ease.items_, run.n_items, neighbours,
                                       settings)
