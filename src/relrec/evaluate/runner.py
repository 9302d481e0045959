"""``relrec evaluate``: the run's model and the reference systems on the same split."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from relrec.config import EvaluateConfig
from relrec.evaluate.evaluation import (evaluate_system, format_interval, paired_differences,
                                        segment_pairs)
from relrec.evaluate.peers import CoVisitation, Popularity
from relrec.manifest import atomic_write_json, update_manifest


def run_evaluation(run_dir: str | Path, config: EvaluateConfig, split: str = "test",
                   include_peers: bool = True) -> dict:
    """Score the trained model (and peers); write evaluation/metrics.json and the manifest."""
    from relrec.index.related import RelatedItems

    model = RelatedItems.load(run_dir)
    run = model.run
    segments = segment_pairs(run, split, config)
    systems = {"model": model}
    if include_peers:
        systems["popularity"] = Popularity().fit(run)
        systems["covisitation"] = CoVisitation().fit(run)
    evaluations = {name: evaluate_system(run, system, name, config, split, segments)
                   for name, system in systems.items()}
    result = {
        "split": split,
        "preset": run.manifest.get("train", {}).get("train_config", {}).get("preset"),
        "relevance": "topic labels" if run.has_topics else "content similarity (no topics)",
        "systems": {name: evaluation.summary for name, evaluation in evaluations.items()},
        "paired_differences": {
            f"model - {name}": paired_differences(evaluations["model"], evaluations[name],
                                                  config, segments=("all",))
            for name in evaluations if name != "model"},
        "config": config.model_dump(mode="json"),
    }
    atomic_write_json(Path(run_dir) / "evaluation" / f"metrics_{split}.json", result)
    update_manifest(run_dir, f"evaluation_{split}", result)
    return result


def metrics_table(result: dict, segment: str = "all") -> Table:
    systems = result["systems"]
    metrics = [m for m in next(iter(systems.values()))[segment] if m not in {"counts"}]
    table = Table(title=f"{result['split']} metrics ({segment} warm triggers), "
                        "% with 95% bootstrap interval")
    table.add_column("metric")
    for name in systems:
        table.add_column(name)
    for metric in metrics:
        percent = not metric.startswith(("novelty",))
        table.add_row(metric, *[format_interval(systems[name][segment][metric], percent)
                                if metric in systems[name][segment] else "-" for name in systems])
    return table
