"""``relrec evaluate``: the run's model and the reference systems on the same split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from relrec.config import EvaluateConfig
from relrec.evaluate.evaluation import (FEW_USERS_WARNING, evaluate_system, format_interval,
                                        paired_differences, segment_pairs)
from relrec.evaluate.peer_tuning import tune_peers
from relrec.evaluate.peers import Popularity
from relrec.errors import InputError
from relrec.evaluate.sealed import include_in_read, open_test_period, reads_line, split_key
from relrec.manifest import atomic_write_json, update_manifest
from relrec.related import RelatedItems


def _same_pairs(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(getattr(a[name], part), getattr(b[name], part))
        for name in a for part in ("triggers", "trigger_row", "targets"))


def run_evaluation(run_dir: str | Path, config: EvaluateConfig, split: str = "valid",
                   include_peers: bool = True,
                   against: list[str | Path] | tuple = (),
                   content_blend: float | None = None) -> dict:
    """Score the trained model (and peers); write evaluation/metrics.json and the manifest.

    ``against``: other run directories trained on the *same* prepared split (checked: the same
    held-out pairs); their models are scored too and paired with this one, so "model − other
    run" gets a paired interval (same resampled triggers) instead of two unpaired ones.
    """
    model = RelatedItems.load(run_dir, content_blend=content_blend)
    run = model.run
    test_reads = open_test_period(run, "relrec evaluate") if split == "test" else None
    segments = segment_pairs(run, split, config)
    systems = {"model": model}
    seen: set[Path] = set()
    for other_dir in against:
        other = RelatedItems.load(other_dir)
        resolved = Path(other_dir).resolve()
        if resolved == Path(run_dir).resolve() or resolved in seen:
            raise InputError(f"{other_dir}: given twice (or is the run itself) in --against")
        seen.add(resolved)
        name = f"run:{resolved.name}"
        if name in systems:  # two runs with the same folder name: add the parent's
            name = f"run:{resolved.parent.name}/{resolved.name}"
        if name in systems:
            name = f"run:{resolved}"
        if split == "test":  # same test pairs and users: part of the same counted read
            if other.run.n_items != run.n_items or split_key(other.run) != split_key(run):
                raise InputError(f"{other_dir}: not the same prepared data as {run_dir} "
                                 "(its test pairs differ); --against needs runs of one split")
            include_in_read(other.run)
        if other.run.n_items != run.n_items or not _same_pairs(
                segment_pairs(other.run, split, config), segments):
            raise InputError(f"{other_dir}: not the same prepared data as {run_dir} "
                             f"(its {split} pairs differ); --against needs runs of one split")
        systems[name] = other
    peer_tuning = None
    if include_peers:
        # peers get what relrec gets: hyper-parameters chosen on validation (cached per split)
        systems["popularity"] = Popularity().fit(run)
        tuned = tune_peers(run, config)
        systems.update(tuned["systems"])
        peer_tuning = tuned["record"]
    evaluations = {name: evaluate_system(run, system, name, config, split, segments)
                   for name, system in systems.items()}
    result = {
        "split": split,
        "preset": run.manifest.get("train", {}).get("train_config", {}).get("preset"),
        "rank": model.rank.model_dump(mode="json"),
        "relevance": "topic labels" if run.has_topics else "content similarity (no topics)",
        "systems": {name: evaluation.summary for name, evaluation in evaluations.items()},
        "paired_differences": {
            f"model - {name}": paired_differences(evaluations["model"], evaluations[name],
                                                  config, segments=("all",))
            for name in evaluations if name != "model"},
        "config": config.model_dump(mode="json"),
        "users": segments["all"].n_users,
        "peer_tuning": peer_tuning,
        "content_cut": run.manifest.get("content_cut"),
        "test_reads": test_reads,
    }
    atomic_write_json(Path(run_dir) / "evaluation" / f"metrics_{split}.json", result)
    update_manifest(run_dir, f"evaluation_{split}", result)
    return result


def metrics_table(result: dict, segment: str = "all") -> Table:
    systems = result["systems"]
    metrics = [m for m in next(iter(systems.values()))[segment] if m not in {"counts"}]
    users = result.get("users")
    table = Table(title=f"{result['split']} metrics ({segment} warm triggers, {users} users), "
                        "% with 95% interval over users")
    table.add_column("metric")
    for name in systems:
        table.add_column(name)
    for metric in metrics:
        percent = not metric.startswith(("novelty",))
        table.add_row(metric, *[format_interval(systems[name][segment][metric], percent)
                                if metric in systems[name][segment] else "-" for name in systems])
    return table


def paired_table(result: dict, segment: str = "all") -> Table:
    """model − each other system, paired bootstrap over the same triggers (percentage points)."""
    differences = result["paired_differences"]
    table = Table(title=f"{result['split']}: paired differences, percentage points, "
                        "95% interval over users")
    table.add_column("metric")
    for name in differences:
        table.add_column(name)
    metrics = sorted({metric for d in differences.values() for metric in d.get(segment, {})
                      if not metric.startswith("novelty")})
    for metric in metrics:
        table.add_row(metric, *[format_interval(d[segment][metric]) if metric in d.get(segment, {})
                                else "-" for d in differences.values()])
    return table


def operating_point_table(record: dict) -> Table:
    """The ``--preset auto`` search: every candidate's validation row and the choice."""
    table = Table(title=f"operating point (--preset auto, validation): {record['rule']}; "
                        f"search {record['search_seconds']:.0f}s = {record['search_vs_cf']:.1f}× "
                        f"one cf training", title_justify="left")
    for column in ("candidate", "recall@10", "topic match@10", "popular share@10",
                   "cold recall@10", "best epoch", ""):
        table.add_column(column)
    for row in record["rows"]:
        if "skipped" in row:
            table.add_row(row["name"], "-", "-", "-", "-", "-", f"skipped ({row['skipped']})")
            continue
        cells = [format_interval(row[metric]) if metric in row else "-"
                 for metric in ("recall@10", "topic_match_rate@10", "popular_share@10",
                                "cold_recall@10")]
        mark = "← chosen" if row["name"] == record["chosen"] else (
            "" if row["name"] in record["eligible"] else "below the tolerance")
        if row.get("cut_at_budget"):
            mark = (mark + "; cut at the budget").lstrip("; ")
        table.add_row(row["name"], *cells, str(row.get("best_epoch", "-")), mark)
    return table


def interval_notes(result: dict) -> list[str]:
    """Lines to print under the tables: few users, test reads."""
    notes = []
    users = result.get("users") or 0
    cut = result.get("content_cut") or {}
    if cut.get("rule") != "train_end":
        rule = cut.get("rule", "not recorded: prepared before the cut existed")
        notes.append("warning: this run's dated content is not cut at the end of the training "
                     f"period (content_cut: {rule}); its features may have seen the periods "
                     "scored here")
    if users == 0:
        notes.append("warning: this run's held-out pairs carry no users, so intervals resample "
                     "triggers (too narrow); run `relrec prepare` again")
    elif users < FEW_USERS_WARNING:
        notes.append(f"warning: the {result['split']} period holds {users} users (< "
                     f"{FEW_USERS_WARNING}); intervals resample users and are wide")
    for family, record in (result.get("peer_tuning") or {}).get("families", {}).items():
        if record.get("skipped"):
            notes.append(f"{family}: skipped ({record['skipped']})")
        else:
            notes.append(f"{family}: {record['chosen']} chosen on validation recall@10 "
                         f"({len(record['rows'])} settings, {record['source']})")
    if result.get("test_reads"):
        notes.append(reads_line(result["test_reads"]))
    return notes
