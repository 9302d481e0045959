"""Time to quality, before vs now: `relrec train --preset cf` of a commit before the training
speed work (a git worktree) and of this checkout, on the same data, in one run; `--preset mtmh`
of this checkout; an `implicit` ALS fit (64 factors, 20 iterations) on the same training
interactions as the reference a user compares with.

    python benchmarks/bench_training_versions.py [--before da662b8] [--data DIR]
        [--work /tmp/bench-training-versions] [--out benchmarks/results/training_versions.json]
        [--skip-mtmh] [--mtmh-before COMMIT] [--repeats N]

Time = wall time of the `relrec train` process until it exits (content embeddings already
cached: each run is prepared and embedded before the clock starts). Quality = the validation
recall@50 and topic match@10 of `relrec evaluate --no-peers` of that same version. Run it on a
quiet machine: nothing else may share the cores while it times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relrec(source: Path, *arguments: str, timeout: float = 3600) -> tuple[float, str]:
    """Run ``relrec`` from ``source``'s ``src`` folder; (wall seconds, stdout)."""
    environment = {**os.environ, "PYTHONPATH": str(source / "src")}
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "relrec.cli", *arguments], cwd=source,
                               env=environment, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"relrec {' '.join(arguments)} failed in {source}:\n"
                           f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    return seconds, completed.stdout


def worktree(commit: str, where: Path) -> Path:
    if not (where / "src" / "relrec").exists():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(where), commit],
                       cwd=ROOT, check=True, capture_output=True)
    return where


def prepared(source: Path, run_dir: Path, data: Path, *, text: bool) -> Path:
    if not (run_dir / "manifest.json").exists():
        relrec(source, "prepare", "--movielens", str(data), "--out", str(run_dir))
    if text:
        relrec(source, "embed", str(run_dir))
    return run_dir


def quality(source: Path, run_dir: Path) -> dict:
    _, output = relrec(source, "evaluate", str(run_dir), "--json", "--no-peers",
                       "--bootstrap", "20")
    metrics = json.loads(output)["systems"]["model"]["all"]
    return {name: metrics[name]["value"] for name in ("recall@10", "recall@50",
                                                      "topic_match_rate@10")}


def timed_training(source: Path, run_dir: Path, preset: str, repeats: int = 1) -> dict:
    """``relrec train --preset PRESET`` from scratch ``repeats`` times; the fastest counts
    (the machine's noise only ever adds time), every time is kept."""
    times = []
    for _ in range(repeats):
        for stale in ("model", "candidates", "refit"):
            subprocess.run(["rm", "-rf", str(run_dir / stale)], check=True)
        seconds, _ = relrec(source, "train", str(run_dir), "--preset", preset, "--no-progress")
        times.append(round(seconds, 2))
    seconds = min(times)
    summary = json.loads((run_dir / "model" / "training.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    pairs = manifest.get("pairs", {}).get("train_pairs_total") or manifest.get(
        "pairs", {}).get("train_pairs")
    epochs = len(summary.get("history", []))
    return {"preset": preset, "seconds": seconds, "all_seconds": times, "epochs_run": epochs,
            "best_epoch": summary.get("best_epoch"),
            "pairs_per_second": round(pairs * epochs / seconds) if pairs else None,
            **quality(source, run_dir)}


def als_seconds(run_dir: Path) -> float:
    import numpy as np
    import pandas as pd
    from implicit.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    events = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cut = manifest["split"]["valid_start"]
    events = events[events["timestamp"] < cut]
    users = events["user_id"].astype("category").cat.codes.to_numpy()
    items = events["item_index"].to_numpy()
    matrix = csr_matrix((np.ones(len(users), np.float32), (users, items)))
    model = AlternatingLeastSquares(factors=64, iterations=20, random_state=0)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    return time.perf_counter() - started


def commit_of(source: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source,
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="da662b8")
    parser.add_argument("--mtmh-before", default=None,
                        help="also time `--preset mtmh` of this commit (a worktree) in the run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="trainings per row; the fastest counts")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--work", default="/tmp/bench-training-versions")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/training_versions.json"))
    parser.add_argument("--skip-mtmh", action="store_true")
    args = parser.parse_args()
    work, data = Path(args.work), Path(args.data)
    work.mkdir(parents=True, exist_ok=True)
    before = worktree(args.before, work / "before-src")
    rows = []
    for label, source in (("before", before), ("now", ROOT)):
        run_dir = prepared(source, work / f"run-{label}", data, text=False)
        rows.append({"version": label, "commit": args.before if label == "before" else
                     commit_of(ROOT), **timed_training(source, run_dir, "cf", args.repeats)})
        print(json.dumps(rows[-1]), flush=True)
    mtmh = {}
    if not args.skip_mtmh:
        sources = [("now", ROOT)]
        if args.mtmh_before:
            sources.insert(0, ("before", worktree(args.mtmh_before,
                                                  work / f"mtmh-before-src-{args.mtmh_before}")))
        for label, source in sources:
            run_dir = prepared(source, work / f"run-{label}-text", data, text=True)
            mtmh[label] = {"version": label, "commit": commit_of(source),
                           **timed_training(source, run_dir, "mtmh", args.repeats)}
            rows.append(mtmh[label])
            print(json.dumps(rows[-1]), flush=True)
    als = als_seconds(work / "run-now")
    cf_before, cf_now = rows[0], rows[1]
    result = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "command": " ".join(sys.argv), "data": str(data), "rows": rows,
        "als_64_factors_20_iterations_seconds": round(als, 3),
        "cf_speedup_before_over_now": round(cf_before["seconds"] / cf_now["seconds"], 2),
        "cf_now_over_als": round(cf_now["seconds"] / als, 1),
        "cf_recall50_change": round(cf_now["recall@50"] / cf_before["recall@50"] - 1, 4),
        "cf_topic_change": round(cf_now["topic_match_rate@10"]
                                 / cf_before["topic_match_rate@10"] - 1, 4)}
    if "now" in mtmh:
        result["mtmh_over_cf"] = round(mtmh["now"]["seconds"] / cf_now["seconds"], 2)
    if "before" in mtmh:
        old, new = mtmh["before"], mtmh["now"]
        result["mtmh_speedup_before_over_now"] = round(old["seconds"] / new["seconds"], 2)
        result["mtmh_recall50_change"] = round(new["recall@50"] / old["recall@50"] - 1, 4)
        result["mtmh_topic_change"] = round(new["topic_match_rate@10"]
                                            / old["topic_match_rate@10"] - 1, 4)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
