"""``relrec tune-blend``: choose the content-blend weight on the validation period.

Every weight of a grid re-ranks the same model's candidates (:mod:`relrec.rerank.blend`) and is
scored on the validation pairs. Rule (recorded with the choice):

* with topic labels: the weight with the highest validation topic match@10 among those whose
  validation recall@10 is at least the model's own (weight 0) — relevance without giving up
  engagement;
* without topic labels: the weight with the highest validation recall@10 (content similarity
  cannot judge a blend of content similarity).

The choice is written into the run's configuration (``[rank]`` in the manifest), so evaluate,
export, recommend and serve rank with it (see :class:`relrec.config.RankConfig` for what is
not blended; lists exported with another blend are not served); the grid goes to the
manifest's ``rank_tuning``. The test period is never read.
"""

from __future__ import annotations

from pathlib import Path

from relrec.config import RankConfig, RunConfig
from relrec.errors import RunDirError
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.manifest import read_manifest, update_manifest
from relrec.rerank.lists import RankedLists
from relrec.rerank.neighbours import NEIGHBOURS_FILE
from relrec.run import RunData
from relrec.train.neighbour_table import tuned_neighbour_table

DEFAULT_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0)


def tune_content_blend(run_dir: str | Path, config: RunConfig,
                       weights=DEFAULT_WEIGHTS, modalities=("text",),
                       apply: bool = True) -> dict:
    weights = sorted({0.0, *[float(w) for w in weights]})
    if any(w < 0 for w in weights):
        raise ValueError("content blend weights must be >= 0")
    model = RankedLists.load(run_dir, content_blend=0.0)
    if model.two_heads:
        raise ValueError(f"{run_dir}: a two-head (MTMH) model mixes relevance with --alpha; "
                         "the content blend is for single-head models")
    run = model.run
    base_rank = model.rank.model_copy(update={"blend_modalities": list(modalities)})
    segments = segment_pairs(run, "valid", config.evaluate)
    relevance = "topic_match_rate@10" if run.has_topics else None
    rows = []
    for weight in weights:
        model.rank = base_rank.model_copy(update={"content_blend": weight})
        evaluation = evaluate_system(run, model, f"blend {weight}", config.evaluate, "valid",
                                     segments)
        summary = evaluation.summary["all"]
        rows.append({"content_blend": weight,
                     **{metric: summary[metric] for metric in
                        ("recall@10", "recall@50", "topic_match_rate@10", "popular_share@10")
                        if metric in summary}})
    base_recall = rows[0]["recall@10"]["value"]
    if relevance:
        eligible = [r for r in rows if r["recall@10"]["value"] >= base_recall]
        chosen = max(eligible, key=lambda r: (r[relevance]["value"], -r["content_blend"]))
        rule = ("highest validation topic match@10 among weights whose validation recall@10 "
                f"is at least the model's own ({base_recall:.4f})")
    else:
        chosen = max(rows, key=lambda r: (r["recall@10"]["value"], -r["content_blend"]))
        rule = "highest validation recall@10 (no topic labels to judge relevance)"
    rank = base_rank.model_copy(update={"content_blend": chosen["content_blend"]})
    result = {"split": "valid", "modalities": list(modalities), "rows": rows, "rule": rule,
              "chosen": chosen["content_blend"], "applied": apply}
    if apply:
        record_rank(run_dir, rank)
    update_manifest(run_dir, "rank_tuning", result)
    return result


def record_rank(run_dir: str | Path, rank: RankConfig) -> None:
    """Write ``rank`` into the run's configuration (the manifest's ``config.rank``)."""
    recorded = dict(read_manifest(run_dir)["config"])
    recorded["rank"] = rank.model_dump(mode="json")
    update_manifest(run_dir, "config", recorded)


def set_rank_after_training(run_dir: str | Path, config: RunConfig, explicit_rank: bool) -> str:
    """The ranking a fresh model is served with, recorded in the run's configuration.

    An explicit ``[rank]`` section wins; otherwise the model ranks alone — so a blend tuned
    for an earlier model does not carry over (``--preset auto`` scores blend weights among
    its candidates and records its own choice). Called by ``relrec train`` and the torchrun
    entry point; library callers of ``train_run`` call it themselves. Returns a one-line
    description."""
    if explicit_rank:
        rank = config.rank
        description = (f"rank: content blend {rank.content_blend:g}, EASE blend "
                       f"{rank.ease_blend:g} (from the config)")
    else:
        rank = RankConfig()
        description = "rank: model scores alone (content blend 0)"
    if rank.ease_blend > 0:  # the served model needs its EASE neighbour table
        description += "; " + write_served_neighbour_table(run_dir, config)
    else:  # a table left by an earlier `auto` would be staged and shipped for nothing
        (Path(run_dir) / "model" / NEIGHBOURS_FILE).unlink(missing_ok=True)
    record_rank(run_dir, rank)
    return description


def write_served_neighbour_table(run_dir: str | Path, config: RunConfig) -> str:
    """Fit EASE (λ tuned on validation, cached per split) on the run's training period and
    save its neighbour table beside ``RUN/model``; returns a one-line description."""
    run = RunData(run_dir)
    ease, table = tuned_neighbour_table(run, config.evaluate, seed=config.train.seed)
    if table is None:
        raise RunDirError(f"{run_dir}: [rank] ease_blend needs EASE, which cannot be fitted "
                          f"here ({ease['skipped']}); set ease_blend = 0")
    table.save(run.run_dir / "model")
    return f"EASE neighbour table ({ease['family']}, {ease['params']}, chosen on validation)"
