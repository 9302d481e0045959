"""ID-table memory per item and the plan for 10^8 items (issue 6, part 4).

1. Measured: bytes per item of the tower's ID table (``nn.Embedding(n+1, d)``) in fp32 and
   fp16, and during training with Adam (parameter + dense gradient + exp_avg + exp_avg_sq),
   by summing tensor storage after one real optimizer step at ``--measure-items`` rows.
2. Simulated: the hashing trick (:class:`relrec.model.hashed_embedding.HashedIdEmbedding`) —
   share of ids whose bucket is shared with another id (1 hash) and whose bucket *pair* is
   shared (2 hashes: truly indistinguishable) for 10^6..10^8 ids and a few bucket counts,
   against the analytic 1 - exp(-(n-1)/B) and 1 - exp(-(n-1)/B²).
3. Extrapolated: memory of a 10^8-item table, whole and per GPU with TorchRec row-wise
   sharding over N GPUs (fused Adam / row-wise Adagrad optimizer state), and of hashed tables.

    python benchmarks/bench_embedding_tables.py --out benchmarks/results/embedding_tables.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from relrec.model.hashed_embedding import hash_ids, hash_parameters


def storage_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors if t is not None))


def measure_table(n_items: int, dim: int) -> dict:
    table = torch.nn.Embedding(n_items + 1, dim)
    fp32 = storage_bytes([table.weight])
    fp16 = storage_bytes([table.weight.detach().half()])
    optimizer = torch.optim.Adam(table.parameters(), lr=1e-3)
    batch = torch.randint(0, n_items, (4096,))
    table(batch).sum().backward()
    optimizer.step()
    state = optimizer.state[table.weight]
    training = storage_bytes([table.weight, table.weight.grad, state["exp_avg"],
                              state["exp_avg_sq"]])
    return {"rows": n_items + 1, "dim": dim, "bytes_per_item_fp32": fp32 / n_items,
            "bytes_per_item_fp16": fp16 / n_items,
            "bytes_per_item_training_adam_fp32": training / n_items}


def collision_shares(n_ids: int, buckets: int, chunk: int = 10_000_000,
                     pair_limit: int = 20_000_000) -> dict:
    params = hash_parameters(2, seed=0)
    counts = [np.zeros(buckets, dtype=np.int32) for _ in range(2)]
    for start in range(0, n_ids, chunk):
        hashed = hash_ids(np.arange(start, min(n_ids, start + chunk)), buckets, params)
        for j in range(2):
            counts[j] += np.bincount(hashed[:, j], minlength=buckets).astype(np.int32)
    # ids in a bucket of size > 1: sum of sizes of such buckets
    shared_one = float(counts[0][counts[0] > 1].sum() / n_ids)
    result = {"n_ids": n_ids, "buckets": buckets,
              "shared_bucket_1hash": round(shared_one, 5),
              "analytic_1hash": round(1 - math.exp(-(n_ids - 1) / buckets), 5),
              "analytic_2hash_pair": 1 - math.exp(-(n_ids - 1) / buckets**2)}
    if n_ids <= pair_limit:
        hashed = hash_ids(np.arange(n_ids), buckets, params)
        keys = hashed[:, 0] * buckets + hashed[:, 1]
        _, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
        result["shared_pair_2hash"] = float((sizes[inverse] > 1).mean())
    else:
        result["shared_pair_2hash"] = None  # analytic only (sorting 10^8 pairs costs minutes)
    return result


def plan(n_items: int, dim: int, gpus: list[int], gpu_memory_gib: float) -> list[dict]:
    gib = 2**30
    rows = []
    for name, bytes_per_value in (("fp32", 4), ("fp16", 2)):
        table = n_items * dim * bytes_per_value
        for optimizer, extra in (("inference (weights only)", 0),
                                 ("fused Adam (m, v fp32)", n_items * dim * 8),
                                 ("row-wise Adagrad (1 fp32/row)", n_items * 4)):
            total = table + extra
            for n in gpus:
                per_gpu = total / n
                rows.append({"items": n_items, "dim": dim, "weights": name,
                             "optimizer": optimizer, "gpus": n,
                             "total_gib": round(total / gib, 1),
                             "per_gpu_gib": round(per_gpu / gib, 1),
                             "fits": per_gpu / gib < 0.8 * gpu_memory_gib})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ids", nargs="+", type=int, default=[10**6, 10**7, 10**8])
    parser.add_argument("--buckets", nargs="+", type=int, default=[2**20, 2**22, 2**24])
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--gpu-memory-gib", type=float, default=80.0)
    parser.add_argument("--out", default="benchmarks/results/embedding_tables.json")
    args = parser.parse_args()
    started = time.perf_counter()
    measured = measure_table(args.measure_items, args.dim)
    print(json.dumps(measured), flush=True)
    collisions = []
    for n_ids in args.ids:
        for buckets in args.buckets:
            row = collision_shares(n_ids, buckets)
            collisions.append(row)
            print(json.dumps(row), flush=True)
    hashed = [{"buckets": b, "dim": args.dim, "gib_fp32": round(b * args.dim * 4 / 2**30, 2),
               "gib_training_adam": round(b * args.dim * 16 / 2**30, 2),
               "bytes_per_item_at_1e8": round(b * args.dim * 4 / 1e8, 3)} for b in args.buckets]
    payload = {"date": time.strftime("%Y-%m-%d"), "measured": measured,
               "collisions": collisions, "hashed_tables": hashed,
               "plan_1e8": plan(10**8, args.dim, args.gpus, args.gpu_memory_gib),
               "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
