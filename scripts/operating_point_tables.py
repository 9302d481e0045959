"""RESULTS.md's `--preset auto` tables: one condition per call, choices made on validation,
then the sealed test period read once (counted), `auto` paired with `cf` (the search's own
`cf` candidate, same prepared split) and beside every peer tuned on validation.

    python scripts/operating_point_tables.py a OUT   # ml-latest-small, time-true tags + posters
    python scripts/operating_point_tables.py b OUT   # ml-latest-small, titles only
    python scripts/operating_point_tables.py c OUT   # synthetic, pure-noise content vectors

Data: $RELREC_MOVIELENS (default ../shared/data/ml-latest-small) and $RELREC_POSTERS; nothing is
copied into the repository. Writes OUT/{valid,test}.json and prints the markdown tables.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from relrec.config import RankConfig, RunConfig
from relrec.content.stage import ensure_content, write_content
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.manifest import update_manifest
from relrec.run import RunData
from relrec.studies.run_evaluation import run_evaluation
from relrec.train.blend_tuning import record_rank
from relrec.train.pipeline import train_preset

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = Path(os.environ.get("RELREC_MOVIELENS", ROOT.parent / "shared/data/ml-latest-small"))
POSTERS = Path(os.environ.get("RELREC_POSTERS",
                              ROOT.parent / "shared/data/ml-latest-small-posters"))


def prepare_condition(condition: str, out: Path) -> Path:
    run_dir = out / "auto"
    config = RunConfig()
    if condition == "a":
        prepare_run(run_dir, config, movielens=MOVIELENS, images=POSTERS)
    elif condition == "b":  # a ratings log whose items carry titles only: no tags, no posters
        movies = pd.read_csv(MOVIELENS / "movies.csv", dtype=str)
        ratings = pd.read_csv(MOVIELENS / "ratings.csv", dtype=str)
        items = pd.DataFrame({"item_id": movies["movieId"], "title": movies["title"],
                              "topics": movies["genres"].replace("(no genres listed)", "")})
        interactions = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
        interactions["timestamp"] = interactions["timestamp"].astype("int64")
        interactions["rating"] = interactions["rating"].astype(float)
        prepare_run(run_dir, config, interactions=interactions, items=items)
    elif condition == "c":  # planted topics, content vectors that are pure noise
        dataset = generate(n_items=2000, n_topics=20, n_users=5000, seed=11)
        prepare_run(run_dir, config, interactions=dataset.interactions, items=dataset.items)
        noise = np.random.default_rng(11).normal(size=dataset.content_vectors.shape)
        write_content(RunData(run_dir), "text", noise.astype(np.float32),
                      source="pure noise (condition c)")
    else:
        raise SystemExit(f"unknown condition {condition!r}: a, b or c")
    if condition != "c":
        ensure_content(RunData(run_dir), ["text", "visual"] if condition == "a" else ["text"],
                       config.content, progress=False)
    return run_dir


def twin(run_dir: Path, out: Path, name: str, model: str, rank: RankConfig) -> Path:
    """A model of the search as a run of the same prepared split (for pairing)."""
    target = out / name
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(
        "candidates", "model", "refit", "evaluation"))
    shutil.copytree(run_dir / model, target / "model")
    record_rank(target, rank)
    update_manifest(target, "operating_point", None)
    return target


def main() -> None:
    condition, out = sys.argv[1], Path(sys.argv[2])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    run_dir = prepare_condition(condition, out)
    config = RunConfig()
    started = time.perf_counter()
    summary = train_preset(run_dir, config, progress=False, say=print)
    print(f"relrec train --preset auto: {time.perf_counter() - started:.0f}s")
    record = summary["operating_point"]
    twins = [twin(run_dir, out, "cf", "candidates/cf", RankConfig())]
    if record.get("refit"):  # the served model saw the validation period: pair the scored one
        twins.append(twin(run_dir, out, "auto-scored", record["scored_model"],
                          RankConfig(content_blend=record["content_blend"],
                                     ease_blend=record.get("ease_blend", 0.0))))
    for split in ("valid", "test"):  # test: ONE read, after every choice is made
        result = run_evaluation(run_dir, config.evaluate, split=split, against=twins)
        result["operating_point"] = record
        (out / f"{split}.json").write_text(json.dumps(result, indent=2))
        print(f"wrote {out / f'{split}.json'}")


if __name__ == "__main__":
    main()
