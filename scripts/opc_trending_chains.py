"""OPC on planted "trending chains" (RESULTS.md, H3): paired topic match@10 of every bottom-10%
trigger's list, CF with OPC − CF without, for several initialisations.

    python scripts/opc_trending_chains.py [--seeds 0 1 2] [--epochs 20] [--keep last|best]

The same data and tower as ``tests/evaluate/test_study_paper.py`` (which asserts seeds 0-2 at
20 epochs, last epoch kept). ``--keep best`` reproduces the early-stopped comparison, which
measures the stopping epoch more than OPC (bottom-decile topic match grows with training
length while validation recall is flat within noise).
"""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np

from relrec.config import RunConfig
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.evaluate.bootstrap import paired_bootstrap_difference
from relrec.evaluate.metrics import popularity_masks, topic_match_rate_at_k
from relrec.related import RelatedItems
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config

TOWER = {"max_epochs": 8, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
         "hidden_dims": [64], "early_stopping_k": 20, "patience": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="/tmp/opc-trending")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--keep", choices=["last", "best"], default="last")
    args = parser.parse_args()
    dataset = generate(n_items=1000, n_topics=10, n_users=1500, sessions_per_user=4,
                       session_length=8, autoplay_rate=0.1, trending_autoplay_rate=0.8,
                       popularity_exponent=1.0, seed=2)
    shutil.rmtree(args.out, ignore_errors=True)
    prepare_run(args.out, RunConfig(), interactions=dataset.interactions, items=dataset.items)
    run = RunData(args.out)
    _, bottom = popularity_masks(run.trigger_frequency, 0.01, 0.10, eligible=run.in_train)
    triggers = np.flatnonzero(bottom)
    for seed in args.seeds:
        topic_match = {}
        for name, overrides in {"cf": {}, "cf_opc": {"opc": True}}.items():
            config = RunConfig()
            config.train = resolve_train_config(config.train, "cf",
                                                {**TOWER, **overrides, "seed": seed,
                                                 "max_epochs": args.epochs,
                                                 "keep_epoch": args.keep})
            train_run(args.out, config, progress=False, model_name=f"{name}_{seed}")
            model = RelatedItems.load(args.out, model_name=f"{name}_{seed}")
            ranked = model.ranked_indices(run.item_ids[triggers], 10)
            topic_match[name] = topic_match_rate_at_k(ranked, triggers, run.topic_matrix, 10)
        difference = paired_bootstrap_difference(topic_match["cf_opc"], topic_match["cf"], 500, 0)
        print(json.dumps({"seed": seed, "epochs": args.epochs, "keep": args.keep,
                          "bottom_decile_triggers": len(triggers),
                          "opc_minus_cf_topic_match@10": difference.to_dict()}), flush=True)


if __name__ == "__main__":
    main()
