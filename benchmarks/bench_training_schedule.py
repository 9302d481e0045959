"""Epochs to quality: does a larger step size or batch reach `cf`'s validation quality sooner?

    python benchmarks/bench_training_schedule.py RUN_DIR [--grid schedule|size] [--out FILE]

Trains `--preset cf` on RUN_DIR once per variant (learning rate × batch size; everything else
the preset's defaults, early stopping as shipped), in one process, one after the other, and
reports wall time of the training call, epochs run, best epoch, and the validation recall@10,
recall@50 and topic match@10 of the kept epoch, each as a ratio to the shipped defaults
(the first row). Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from relrec.config import RunConfig
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.rerank.lists import RankedLists
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config

# the former default (constant 3e-3, early stopping) is every grid's reference row
SHIPPED = {"learning_rate": 3e-3, "batch_size": 1024, "learning_rate_schedule": "constant"}
GRIDS = {
    "schedule": [SHIPPED, {"learning_rate": 6e-3, "batch_size": 1024},
                 {"learning_rate": 1e-2, "batch_size": 1024},
                 {"learning_rate": 6e-3, "batch_size": 2048}],
    # a cosine decay over a short horizon: the best epoch is the last, no epochs past it
    "cosine": [SHIPPED,
               {**SHIPPED, "learning_rate_schedule": "cosine", "max_epochs": 3},
               {**SHIPPED, "learning_rate": 6e-3, "learning_rate_schedule": "cosine",
                "max_epochs": 3},
               {**SHIPPED, "learning_rate": 6e-3, "learning_rate_schedule": "cosine",
                "max_epochs": 2},
               {"learning_rate": 3e-3, "batch_size": 512, "learning_rate_schedule": "cosine",
                "max_epochs": 2},
               {"learning_rate": 6e-3, "learning_rate_schedule": "cosine", "batch_size": 2048,
                "max_epochs": 3}],
    # the cosine grid's neighbourhood: a higher peak, one epoch more, a warm-up
    "cosine-peak": [SHIPPED,
                    {**SHIPPED, "learning_rate": 1e-2, "learning_rate_schedule": "cosine",
                     "max_epochs": 3},
                    {**SHIPPED, "learning_rate": 6e-3, "learning_rate_schedule": "cosine",
                     "max_epochs": 4},
                    {**SHIPPED, "learning_rate": 1e-2, "learning_rate_schedule": "cosine",
                     "max_epochs": 4},
                    {**SHIPPED, "learning_rate": 1e-2, "learning_rate_schedule": "cosine",
                     "max_epochs": 3, "warmup_fraction": 0.1}],
    # fewer FLOPs per pair: the step already runs at ~50% of the matmul bound
    "size": [SHIPPED, {**SHIPPED, "batch_size": 512},
             {**SHIPPED, "embedding_dim": 64, "id_dim": 64, "hidden_dims": [128]}],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="schedule")
    parser.add_argument("--out", default=None, help="default: results/training_<grid>.json")
    args = parser.parse_args()
    out = Path(args.out or Path(__file__).resolve().parent / f"results/training_{args.grid}.json")
    run = RunData(args.run_dir)
    config = RunConfig()
    config.evaluate.n_bootstrap = 50
    segments = {"all": segment_pairs(run, "valid", config.evaluate)["all"]}
    rows = []
    for variant in GRIDS[args.grid]:
        name = "schedule/" + "_".join(f"{key}{value}" for key, value in variant.items()
                                      ).replace(" ", "").replace("[", "").replace("]", "")
        trial = config.model_copy(deep=True)
        trial.train = resolve_train_config(config.train, "cf", variant)
        started = time.perf_counter()
        summary = train_run(args.run_dir, trial, progress=False, model_name=name)
        seconds = time.perf_counter() - started
        model = RankedLists.load(args.run_dir, model_name=name)
        metrics = evaluate_system(run, model, name, config.evaluate, "valid",
                                  segments).summary["all"]
        rows.append({**variant, "embedding_dim": trial.train.embedding_dim, "seconds": round(seconds, 2),
                     "epochs_run": len(summary["history"]), "best_epoch": summary["best_epoch"],
                     **{key: metrics[key]["value"] for key in (
                         "recall@10", "recall@50", "topic_match_rate@10")}})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for row in rows:
        row["speedup"] = round(base["seconds"] / row["seconds"], 2)
        for key in ("recall@10", "recall@50", "topic_match_rate@10"):
            row[f"{key}_ratio"] = round(row[key] / base[key], 4)
    result = {"date": date.today().isoformat(), "run": str(args.run_dir),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}", "rows": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        setting = ", ".join(f"{key} {row[key]}" for key in GRIDS[args.grid][0] | {
            "embedding_dim": 0} if key in row)
        print(f"{setting}: {row['seconds']:.0f}s "
              f"({row['speedup']:.2f}x), epochs {row['epochs_run']} (best {row['best_epoch']}), "
              f"recall@50 ×{row['recall@50_ratio']:.3f}, topic ×"
              f"{row['topic_match_rate@10_ratio']:.3f}")


if __name__ == "__main__":
    main()
