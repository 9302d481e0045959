"""Training throughput (pairs/s) against the matmul bound of the step.

The step is the trainer's own (``Trainer.batch_loss``: the tower once per distinct item of the
batch, logQ, accidental hits, the fused in-batch softmax; zero_grad, backward, Adam). Its
analytic FLOPs are the matrix products it makes — the MLP and heads over the batch's distinct
rows (forward, gradient of the input, gradient of the weight) and the B×B logits (forward and
the two gradient products). **The bound** (the issue's definition): the time ``torch.mm`` takes
for those same products at the same shapes, measured in the same process; ``achieved / bound``
= bound time ÷ step time, each the fastest of three measurements, interleaved. For continuity
the old reference, ``torch.mm`` on 2048×2048, is printed beside it.

    python benchmarks/bench_training.py [--run RUN_DIR] [--items N] [--batch-size 1024]
        [--steps 60] [--sparse-id both|on|off] [--out JSON]

Without --run it trains on random pairs over ``--items`` items (default: ml-latest-small's
9,742). ``--sparse-id both`` measures dense Adam and sparse ID gradients + SparseAdam (the
trainer's own optimizer choice) in the same process.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relrec.config import TrainConfig
from relrec.model.losses import log_sampling_probability
from relrec.model.tower import ItemTower
from relrec.train.presets import resolve_train_config
from relrec.train.trainer import Trainer, build_tower_config, reproducible_torch


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def step_products(config: TrainConfig, batch: int, distinct_rows: int) -> list[tuple]:
    """The (m, k, n) of every matrix product of one step: forward, input gradient and weight
    gradient of each dense layer on the distinct rows; the B×B logits and their two
    gradient products."""
    widths = [config.id_dim, *config.hidden_dims, config.embedding_dim]
    products = []
    for inputs, outputs in zip(widths[:-1], widths[1:]):
        products += [(distinct_rows, inputs, outputs), (distinct_rows, outputs, inputs),
                     (inputs, distinct_rows, outputs)]
    dim = config.embedding_dim
    products += [(batch, dim, batch), (batch, batch, dim), (batch, batch, dim)]
    return products


def products_seconds(products: list[tuple], repeats: int = 30) -> float:
    """Median time of ``torch.mm`` at each shape, summed: the step's matmul bound."""
    total = 0.0
    for m, k, n in products:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - started)
        total += statistics.median(times)
    return total


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
    square_bound = matmul_flops_per_second()
    triggers_t, candidates_t = torch.as_tensor(triggers), torch.as_tensor(candidates)
    log_q_table = log_sampling_probability(torch.as_tensor(np.bincount(candidates,
                                                                       minlength=n_items)))
    order = torch.randperm(len(triggers), generator=torch.Generator().manual_seed(0))
    results = []
    for sparse in {"both": [False, True], "on": [True], "off": [False]}[args.sparse_id]:
        config = resolve_train_config(TrainConfig(batch_size=args.batch_size,
                                                  sparse_id_gradients=sparse), "cf")
        trainer = Trainer(config, "unused", progress=False)
        torch.manual_seed(0)
        tower = ItemTower(build_tower_config(n_items, config))
        distinct = []
        with reproducible_torch(config, torch.device("cpu")):  # the trainer's settings
            optimizer = trainer._optimizer(tower)

            def step(rows):
                return trainer.train_step(tower, optimizer, triggers_t[rows], candidates_t[rows],
                                          torch.ones(len(rows)), log_q_table)

            def batch(index):
                start = (index * args.batch_size) % (len(order) - args.batch_size)
                return order[start:start + args.batch_size]

            for warm in range(3):
                step(batch(warm))
            for index in range(3, 3 + args.steps):
                distinct.append(len(torch.unique(torch.cat([triggers_t[batch(index)],
                                                            candidates_t[batch(index)]]))))
            # three windows of steps and three measurements of the bound, interleaved; the
            # fastest of each counts (this VM's neighbours only ever add time)
            window = max(1, args.steps // 3)
            distinct_rows = round(statistics.mean(distinct))
            products = step_products(config, args.batch_size, distinct_rows)
            step_times, bound_times = [], []
            for repeat in range(3):
                started = time.perf_counter()
                for index in range(3 + repeat * window, 3 + (repeat + 1) * window):
                    step(batch(index))
                step_times.append((time.perf_counter() - started) / window)
                bound_times.append(products_seconds(products))
        step_seconds, bound_seconds = min(step_times), min(bound_times)
        flops = sum(2 * m * k * n for m, k, n in products)
        results.append({
            "n_items": n_items, "sparse_id_gradients": sparse,
            "optimizers": [type(o).__name__ for o in optimizer.optimizers],
            "batch_size": args.batch_size, "steps": args.steps,
            "distinct_rows_per_step": distinct_rows,
            "step_ms": round(1000 * step_seconds, 2),
            "step_ms_windows": [round(1000 * t, 2) for t in step_times],
            "matmul_bound_ms_repeats": [round(1000 * t, 2) for t in bound_times],
            "pairs_per_second": round(args.batch_size / step_seconds),
            "model_gflops_per_step": round(flops / 1e9, 3),
            "model_gflops_per_second": round(flops / step_seconds / 1e9, 2),
            "matmul_bound_ms": round(1000 * bound_seconds, 2),
            "matmul_same_shapes_gflops_per_second": round(flops / bound_seconds / 1e9, 1),
            "achieved_over_bound": round(bound_seconds / step_seconds, 4),
            "matmul_2048_gflops_per_second": round(square_bound / 1e9, 1),
            "achieved_over_2048_matmul": round(flops / step_seconds / square_bound, 4),
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                       f"{torch.backends.cpu.get_cpu_capability()}",
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
