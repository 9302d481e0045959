"""Would blending the model with EASE move the frontier? A validation-only probe (issue 13's
"model blended with the EASE peer" candidate, not yet a product feature).

    python scripts/ease_blend_probe.py RUN_DIR [--model candidates/cf] [--l2 1000]

For each validation trigger: the model's top ``--pool`` candidates (its own ranking, no content
blend), re-ranked by ``z(model score) + w · z(EASE weight B̂[t, c])`` (the same row
standardisation as the content blend, :func:`relrec.rerank.blend.blend_scores`), EASE fitted on
the training period's users × items with ``--l2`` (the peers' validation-tuned value on
ml-latest-small). Prints recall@10 and topic match@10 with 95% intervals over users for the
model alone, EASE alone and each w. The test period is never read.
"""

from __future__ import annotations

import argparse

import numpy as np

from relrec.config import EvaluateConfig
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.evaluate.peers import EASE
from relrec.index.base import SimilarItemsModel
from relrec.rerank.blend import blend_scores
from relrec.rerank.lists import RankedLists
from relrec.run import RunData
from results_table import cell  # scripts/results_table.py: "value [low, high]" in %


class EaseBlend(SimilarItemsModel):
    """The model's pool re-ranked by the model score plus ``weight`` × the EASE weight."""

    def __init__(self, model: RankedLists, ease: EASE, weight: float, pool: int):
        self.model, self.ease, self.weight, self.pool = model, ease, weight, pool
        self.item_ids_ = model.item_ids_

    def _search(self, trigger_indices, k: int, **options):
        triggers = np.asarray(trigger_indices, np.int64)
        scores, candidates = self.model._head_search(triggers, max(self.pool, k),
                                                     self.model.head)
        rows = self.ease.local_of_[triggers]
        columns = self.ease.local_of_[np.maximum(candidates, 0)]
        usable = (rows[:, None] >= 0) & (columns >= 0) & (candidates >= 0)
        weights = np.where(usable, self.ease.weights_[np.maximum(rows, 0)[:, None],
                                                      np.maximum(columns, 0)], 0.0)
        blended = blend_scores(scores, weights, self.weight, usable)
        order = np.argsort(-blended, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(blended, order, axis=1).astype(np.float32),
                np.take_along_axis(candidates, order, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--model", default="candidates/cf")
    parser.add_argument("--l2", type=float, default=1000.0)
    parser.add_argument("--pool", type=int, default=200)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    args = parser.parse_args()
    run = RunData(args.run_dir)
    config = EvaluateConfig(n_bootstrap=500)
    segments = {"all": segment_pairs(run, "valid", config)["all"]}
    model = RankedLists.load(args.run_dir, model_name=args.model, content_blend=0.0)
    ease = EASE(l2=args.l2, rows="users").fit(run)
    systems = {"model": model, "EASE (users)": ease}
    systems.update({f"model + {w:g} EASE": EaseBlend(model, ease, w, args.pool)
                    for w in args.weights})
    print(f"{args.run_dir} {args.model}: validation period")
    for name, system in systems.items():
        summary = evaluate_system(run, system, name, config, "valid", segments).summary["all"]
        print(f"| {name} | {cell(summary['recall@10'])} | "
              f"{cell(summary['topic_match_rate@10'])} |", flush=True)


if __name__ == "__main__":
    main()
