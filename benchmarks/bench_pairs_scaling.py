"""Scaling curve of out-of-core pair extraction (issue 6, part 1).

For each size, the synthetic generator streams N interactions to Parquet, then
``python -m relrec.data.outofcore`` (DuckDB over ``read_parquet``, ``SET memory_limit``,
spill directory, ``COPY`` to Parquet) runs in a child process; wall time and the child's peak
RSS (``os.wait4`` rusage) are recorded, with the spill directory's peak size sampled.

    python benchmarks/bench_pairs_scaling.py --sizes 1e6 1e7 --memory-limit 2GB \\
        --data-dir /tmp/relrec_scaling --out benchmarks/results/pairs_scaling.json

The fitted exponent b of ``time ∝ N^b`` (log-log least squares) says whether the growth is
linear (b ≈ 1). Heavy: not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def run_child(command: list[str], watch: Path | None = None) -> tuple[float, int, int, str]:
    """(seconds, peak RSS bytes, peak size of ``watch`` in bytes, stdout) of one child."""
    peak_disk = 0
    done = threading.Event()

    def sample():
        nonlocal peak_disk
        while not done.is_set():
            if watch is not None and watch.exists():
                peak_disk = max(peak_disk, _dir_size(watch))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed with exit code {process.returncode}")
    return seconds, int(usage.ru_maxrss) * 1024, peak_disk, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7])
    parser.add_argument("--n-items", type=int, default=100_000)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default="/tmp/relrec_scaling")
    parser.add_argument("--keep", action="store_true", help="keep generated logs and outputs")
    parser.add_argument("--out", default="benchmarks/results/pairs_scaling.json")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in [int(s) for s in args.sizes]:
        log = data_dir / f"interactions_{size}.parquet"
        generate_seconds = None
        if not log.exists():
            code = ("import json,sys; from relrec.data.synthetic import "
                    "stream_interactions_to_parquet, SyntheticConfig; "
                    f"print(json.dumps(stream_interactions_to_parquet({str(log)!r}, {size}, "
                    f"SyntheticConfig(n_items={args.n_items}))))")
            generate_seconds, generate_rss, _, _ = run_child([sys.executable, "-c", code])
        out = data_dir / f"pairs_{size}"
        spill = data_dir / f"spill_{size}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)
        seconds, rss, spill_peak, stdout = run_child(
            [sys.executable, "-m", "relrec.data.outofcore", str(log), str(out),
             "--memory-limit", args.memory_limit, "--threads", str(args.threads),
             "--temp-directory", str(spill)], watch=spill)
        counts = json.loads(stdout.strip().splitlines()[-1])
        record = {
            "interactions": size, "log_bytes": log.stat().st_size,
            "generate_seconds": None if generate_seconds is None else round(generate_seconds, 1),
            "extract_seconds": round(seconds, 2), "peak_rss_bytes": rss,
            "spill_peak_bytes": spill_peak, "output_bytes": _dir_size(out),
            "train_pairs_distinct": counts["train_pairs_distinct"],
            "train_pairs_total": counts["train_pairs_total"],
            "valid_pairs": counts["valid_pairs"], "test_pairs": counts["test_pairs"],
            "stage_seconds": counts["seconds"],
        }
        results.append(record)
        print(json.dumps(record), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)
    sizes = np.array([r["interactions"] for r in results], dtype=float)
    summary = {}
    if len(results) >= 2:
        for key in ("extract_seconds", "peak_rss_bytes"):
            values = np.array([r[key] for r in results], dtype=float)
            summary[f"{key}_exponent"] = round(float(np.polyfit(np.log(sizes), np.log(values),
                                                                1)[0]), 3)
    payload = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"), "memory_limit": args.memory_limit,
               "threads": args.threads, "n_items": args.n_items, "results": results,
               "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
