"""Approximate vs exact item-to-item search at catalogue scale (issue 6, part 3).

Item vectors: a mixture of Gaussians on the unit sphere (``--clusters`` random unit centres,
each item = normalise(centre + N(0, σ²/d)) ), so nearest neighbours are meaningful and not all
ties. Queries are catalogue items (item-to-item, the trigger excluded). For each index kind of
:class:`relrec.index.faiss_index.ItemIndex` — exact (``IndexFlatIP``, the reference), HNSW
and IVF-PQ at a few search breadths — it records build seconds, index memory (serialized
bytes), queries/s (batched, in the same process as the exact reference) and recall@10 /
recall@100 against exact search.

    python benchmarks/bench_ann.py --sizes 100000 1000000 --queries 2000 \\
        --out benchmarks/results/ann.json

Heavy at 1M (HNSW build): a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from relrec.index.faiss_index import ItemIndex, choose_index_kind


def clustered_unit_vectors(n: int, dim: int, clusters: int, spread: float, seed: int
                           ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        labels = rng.integers(0, clusters, stop - start)
        block = centres[labels] + rng.standard_normal((stop - start, dim)).astype(np.float32) \
            * (spread / np.sqrt(dim))
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def index_bytes(index: ItemIndex) -> int:
    return int(faiss.serialize_index(index._index).nbytes)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(np.intersect1d(f[:k], t[:k])) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def timed_search(index: ItemIndex, vectors: np.ndarray, queries: np.ndarray, k: int
                 ) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, found = index.search(vectors[queries], k, exclude=queries)
    return found, len(queries) / (time.perf_counter() - started)


def bench_size(n: int, args) -> list[dict]:
    vectors = clustered_unit_vectors(n, args.dim, args.clusters, args.spread, args.seed)
    queries = np.random.default_rng(args.seed + 1).choice(n, args.queries, replace=False)
    ids = np.arange(n)
    rows = []
    k = max(args.ks)

    started = time.perf_counter()
    exact = ItemIndex(args.dim, "exact")
    exact.add(vectors, ids)
    build = time.perf_counter() - started
    truth, exact_qps = timed_search(exact, vectors, queries, k)
    rows.append({"n_items": n, "kind": "exact", "params": "IndexFlatIP",
                 "build_seconds": round(build, 2), "index_bytes": index_bytes(exact),
                 "qps": round(exact_qps, 1), "speedup_vs_exact": 1.0,
                 **{f"recall@{kk}": 1.0 for kk in args.ks}})
    del exact

    ivf = {"ivf_lists": int(args.ivf_lists_factor * np.sqrt(n)), "pq_bytes": args.pq_bytes}
    configs = [("hnsw", {"hnsw_neighbors": args.hnsw_m}, args.ef_search),
               ("ivfpq", ivf, args.nprobe),
               ("ivfpq", {**ivf, "refine": "sq8", "refine_factor": args.refine_factor},
                args.nprobe)]
    for kind, params, breadths in configs:
        if kind not in args.kinds:
            continue
        started = time.perf_counter()
        index = ItemIndex(args.dim, kind, **params)
        index.add(vectors, ids)
        build = time.perf_counter() - started
        size = index_bytes(index)
        for breadth in breadths:
            index.search_breadth = breadth
            found, qps = timed_search(index, vectors, queries, k)
            label = (f"M={params['hnsw_neighbors']} efC=80 efSearch={breadth}" if kind == "hnsw"
                     else f"nlist={params['ivf_lists']} m={params['pq_bytes']}x8bit "
                          f"nprobe={breadth}" + (f" + refine {params['refine']}×"
                                                 f"{params['refine_factor']}"
                                                 if params.get("refine") else ""))
            row = {"n_items": n, "kind": kind, "params": label, "build_seconds": round(build, 2),
                   "index_bytes": size, "qps": round(qps, 1),
                   "speedup_vs_exact": round(qps / exact_qps, 2),
                   **{f"recall@{kk}": round(recall(found, truth, kk), 4) for kk in args.ks}}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--ivf-lists-factor", type=float, default=4.0)
    parser.add_argument("--pq-bytes", type=int, default=32)
    parser.add_argument("--nprobe", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivfpq"],
                        help="approximate kinds to measure against exact")
    parser.add_argument("--refine-factor", type=int, default=4,
                        help="IVF-PQ + SQ8 re-rank of refine_factor·k candidates")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/ann.json")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    results = []
    for n in args.sizes:
        results.extend(bench_size(n, args))
    payload = {"date": time.strftime("%Y-%m-%d"),
               "machine": {"cpus": os.cpu_count(), "faiss_threads": args.threads,
                           "platform": platform.platform(), "faiss": faiss.__version__},
               "args": vars(args),
               "choose_index_kind": {n: choose_index_kind(n) for n in args.sizes},
               "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    for row in results:
        print(f"| {row['n_items']:,} | {row['kind']} | {row['params']} | "
              f"{row['build_seconds']} | {row['index_bytes'] / 2**20:.0f} | {row['qps']:,.0f} | "
              f"{row['speedup_vs_exact']} | "
              + " | ".join(f"{row[f'recall@{k}']:.3f}" for k in args.ks) + " |")


if __name__ == "__main__":
    main()
