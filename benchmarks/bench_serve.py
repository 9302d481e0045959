"""Latency and throughput of ``relrec serve`` on loopback (issue 5).

Starts the real server (uvicorn, one process) on 127.0.0.1 for a trained run, first in exact
mode (``--exact``: every list from the FAISS index), then in precomputed mode (the exported
related lists; ``relrec export`` is run first when RUN_DIR/export/related.parquet is missing),
and drives ``GET /v1/items/{id}/related?k=10`` for random trained items with an asyncio httpx
client at each concurrency level: a fixed number of requests per level, after a warm-up.
Reference in the same process: the library call (``RelatedItems.similar_items``, one
trigger, no HTTP), so the HTTP/JSON overhead reads as a ratio.

    python benchmarks/bench_serve.py RUN_DIR --requests 2000 --concurrency 1 8 32 \\
        [--markdown table.md]

Bounded in time and count; loopback only. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(run_dir: Path, state_dir: Path, exact: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "relrec.cli", "serve", str(run_dir), "--host", "127.0.0.1",
            "--port", str(port), "--state-dir", str(state_dir), "--log-level", "warning"]
    if exact:
        args.append("--exact")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("server not ready in 180 s")


async def drive(url: str, item_ids: list[str], total: int, concurrency: int, k: int):
    latencies, errors = [], 0
    remaining = iter(range(total))
    rng = random.Random(concurrency)

    async def worker(client):
        nonlocal errors
        for _ in remaining:
            item = rng.choice(item_ids)
            began = time.perf_counter()
            try:
                response = await client.get(f"{url}/v1/items/{item}/related", params={"k": k})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - began)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies = np.asarray(latencies) * 1000
    return {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
            "rps": total / wall, "errors": errors, "n": total}


def library_reference(run_dir: Path, item_indices: np.ndarray, k: int, n: int = 2000) -> float:
    from relrec.related import RelatedItems

    model = RelatedItems.load(run_dir, index_kind="exact")
    rng = np.random.default_rng(0)
    timings = []
    for trigger in rng.choice(item_indices, size=n):
        began = time.perf_counter()
        model.similar_items([model.item_ids_[trigger]], k)
        timings.append(time.perf_counter() - began)
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--modes", nargs="+", default=["exact", "precomputed"])
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()

    stats = pd.read_parquet(run_dir / "pairs" / "item_stats.parquet")
    items = pd.read_parquet(run_dir / "data" / "items.parquet", columns=["item_id"])
    trained = stats.loc[stats["in_train"], "item_index"].to_numpy()
    item_ids = items["item_id"].to_numpy()[trained].astype(str).tolist()
    export = run_dir / "export" / "related.parquet"
    if "precomputed" in args.modes and not export.exists():
        subprocess.run([sys.executable, "-m", "relrec.cli", "export", str(run_dir), "--out",
                        str(export), "--k", "100", "--no-progress"], check=True)

    reference = library_reference(run_dir, trained, args.k)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as state:
        for mode in args.modes:
            process, url = start(run_dir, Path(state) / mode, exact=mode == "exact")
            try:
                asyncio.run(drive(url, item_ids, args.warmup, 4, args.k))
                for concurrency in args.concurrency:
                    result = asyncio.run(drive(url, item_ids, args.requests, concurrency, args.k))
                    rows.append({"mode": mode, "concurrency": concurrency, **result})
                    print(f"{mode:12s} c={concurrency:3d} p50 {result['p50']:7.2f} ms  "
                          f"p99 {result['p99']:7.2f} ms  {result['rps']:7.1f} req/s  "
                          f"errors {result['errors']}", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=20)

    lines = [f"Run: `{run_dir.name}` ({len(items)} items, {len(item_ids)} trained candidates), "
             f"k={args.k}, {args.requests} requests per level after {args.warmup} warm-up; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared by "
             f"server and client, Python {platform.python_version()}, {date.today()}.",
             f"Reference in the same process: library `similar_items` for one trigger (exact, "
             f"no HTTP) median {reference:.3f} ms.", "",
             "| mode | concurrency | p50 ms | p99 ms | requests/s | errors | p50 / library call |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['mode']} | {row['concurrency']} | {row['p50']:.2f} | "
                     f"{row['p99']:.2f} | {row['rps']:.0f} | {row['errors']} | "
                     f"{row['p50'] / reference:.0f}× |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
