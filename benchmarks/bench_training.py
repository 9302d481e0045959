"""Training throughput (pairs/s) against the FLOP bound of the batch.

The bound: the model FLOPs of one training step (tower forward on 2B items, B×B logits,
backward ≈ 2× forward) divided by the machine's measured dense matmul FLOP/s in the same
process (torch.mm on 2048×2048 float32). Reported: pairs/s, achieved model FLOP/s and the
ratio achieved / bound.

    python benchmarks/bench_training.py [--run RUN_DIR] [--items N] [--batch-size 1024]
        [--steps 60] [--sparse-id both|on|off]

Without --run it trains on random pairs over ``--items`` items (default: ml-latest-small's
9,742). ``--sparse-id both`` measures dense Adam and sparse ID gradients + SparseAdam (the
trainer's own optimizer choice) in the same process.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relrec.config import TrainConfig
from relrec.model.losses import sampled_softmax_loss
from relrec.model.tower import ItemTower
from relrec.train.trainer import Trainer, build_tower_config


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def step_flops(config: TrainConfig, batch: int) -> float:
    widths = [config.id_dim, *config.hidden_dims, config.embedding_dim]
    mlp = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    forward = 2 * batch * mlp + 2 * batch * batch * config.embedding_dim
    return 3.0 * forward  # backward ≈ 2× forward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=None)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--items", type=int, default=9742)
    parser.add_argument("--sparse-id", choices=["both", "on", "off"], default="both")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file "
                        "(commit it under benchmarks/results/)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        from relrec.run import RunData

        run = RunData(args.run)
        n_items = run.n_items
        pairs = run.train_pairs
        triggers = np.repeat(pairs["trigger_index"].to_numpy(), pairs["pair_count"].to_numpy())
        candidates = np.repeat(pairs["candidate_index"].to_numpy(),
                               pairs["pair_count"].to_numpy())
    else:
        rng = np.random.default_rng(0)
        n_items = args.items
        triggers = rng.integers(0, n_items, 330_000)
        candidates = rng.integers(0, n_items, 330_000)
    bound = matmul_flops_per_second()
    triggers_t, candidates_t = torch.as_tensor(triggers), torch.as_tensor(candidates)
    order = torch.randperm(len(triggers))
    results = []
    for sparse in {"both": [False, True], "on": [True], "off": [False]}[args.sparse_id]:
        config = TrainConfig(batch_size=args.batch_size, sparse_id_gradients=sparse)
        torch.manual_seed(0)
        tower = ItemTower(build_tower_config(n_items, config))
        optimizer = Trainer(config, "unused", progress=False)._optimizer(tower)

        def step(rows):
            t, c = triggers_t[rows], candidates_t[rows]
            embeddings = tower(torch.cat([t, c]))
            te, ce = embeddings.split(len(t))
            loss, _ = sampled_softmax_loss(te, ce, t, c, config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        for warm in range(3):
            step(order[warm * args.batch_size:(warm + 1) * args.batch_size])
        started = time.perf_counter()
        for index in range(args.steps):
            start = (index * args.batch_size) % (len(order) - args.batch_size)
            step(order[start:start + args.batch_size])
        seconds = time.perf_counter() - started
        pairs_per_second = args.steps * args.batch_size / seconds
        achieved = args.steps * step_flops(config, args.batch_size) / seconds
        results.append({
            "n_items": n_items, "sparse_id_gradients": sparse,
            "optimizers": [type(o).__name__ for o in optimizer.optimizers],
            "batch_size": args.batch_size, "steps": args.steps,
            "pairs_per_second": round(pairs_per_second),
            "model_gflops_per_second": round(achieved / 1e9, 2),
            "matmul_bound_gflops_per_second": round(bound / 1e9, 1),
            "achieved_over_bound": round(achieved / bound, 4),
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
        })
    if len(results) == 2:
        results[1]["speedup_over_dense"] = round(results[1]["pairs_per_second"]
                                                 / results[0]["pairs_per_second"], 2)
    print(json.dumps(results, indent=2))
    if args.out:
        import datetime

        Path(args.out).write_text(json.dumps(
            {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
             "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
