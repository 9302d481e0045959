"""``relrec study RUN_DIR paper``: the ablation of *Balancing Semantic Relevance and Engagement*
(Tables I–III) plus peers, every row scored on the same split, triggers and metrics.

Rows
* Table I: baseline CF; content-only kNN; MTL at w_co:w_sem = 1:1, 1:10, 1:100, 1:500, 1:1000.
* Table II: MTL(1:R) + text; + visual; + text and visual; CF (single task) + text + visual.
* Table III: MTL(1:R) + text + visual + OPC — overall, top-1% and bottom-10% triggers are
  the ``popular_triggers`` / ``unpopular_triggers`` segments of every row.
* ours: the ``balanced`` preset.
* peers: popularity, co-visitation item-kNN, `implicit` ALS ``similar_items``, item2vec —
  each with its hyper-parameters chosen on the validation split.

R is the paper's 1:500 unless ``fusion_ratio`` says otherwise. Every variant shares the base
training configuration (the ``cf`` preset plus the user's overrides), so rows differ only in
what the paper varies. Selection (peers' hyper-parameters, the ratio recorded for the ``full``
preset) uses the validation split only; the reported table is the ``split`` requested (test).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from relrec.config import RunConfig, TrainConfig
from relrec.evaluate.evaluation import (evaluate_system, load_evaluation, paired_differences,
                                        save_evaluation, segment_pairs)
from relrec.evaluate.peer_tuning import FAMILIES as PEER_FAMILIES
from relrec.evaluate.peer_tuning import tune_peers
from relrec.evaluate.peers import ContentKNN, Popularity
from relrec.studies.report import split_notes, StudyResult, StudyRow, write_report
from relrec.evaluate.sealed import open_test_period
from relrec.manifest import atomic_write_json, update_manifest
from relrec.run import RunData
from relrec.train.presets import resolve_train_config
from relrec.related import RelatedItems
from relrec.train.pipeline import train_run

PAPER_RATIOS = (1, 10, 100, 500, 1000)
console = Console(stderr=True)


def paper_variants(fusion_ratio: float = 500) -> list[tuple[str, str, dict]]:
    """(system name, table, train-config overrides) for every trained row."""
    r = fusion_ratio
    rows = [("cf", "Table I", {})]
    rows += [(f"mtl 1:{ratio}", "Table I", {"w_sem": float(ratio)}) for ratio in PAPER_RATIOS]
    rows += [
        (f"mtl 1:{r:g} + text", "Table II", {"w_sem": r, "use_text": True}),
        (f"mtl 1:{r:g} + visual", "Table II", {"w_sem": r, "use_visual": True}),
        (f"mtl 1:{r:g} + text + visual", "Table II",
         {"w_sem": r, "use_text": True, "use_visual": True}),
        ("cf + text + visual", "Table II", {"use_text": True, "use_visual": True}),
        (f"mtl 1:{r:g} + text + visual + opc", "Table III",
         {"w_sem": r, "use_text": True, "use_visual": True, "opc": True}),
        ("cf without logQ (cosine)", "ablation",
         {"logq_correction": False, "normalize_embeddings": True, "temperature": 0.05}),
        ("cf, logQ strength 0.5", "ours (candidate)", {"logq_strength": 0.5}),
        ("text + mtl 1:10 + opc", "ours (candidate)",
         {"use_text": True, "w_sem": 10.0, "opc": True}),
    ]
    return rows


def variant_config(base: TrainConfig, overrides: dict) -> TrainConfig:
    content = overrides.get("use_text") or overrides.get("use_visual")
    fields = {**base.model_dump(), **overrides}
    if content and "id_dropout" not in overrides:
        fields["id_dropout"] = max(base.id_dropout, 0.1)  # lets cold items use content
    return TrainConfig.model_validate(fields)


def model_name_for(system: str) -> str:
    return "study_models/" + "".join(ch if ch.isalnum() else "_" for ch in system)


def tuned_peers(run: RunData, config: RunConfig, progress: bool) -> tuple[list, dict]:
    """Popularity plus every peer family of :func:`relrec.evaluate.peer_tuning.tune_peers`
    (each tuned on validation recall@10, cached per split): ``[(family, peer)]`` and, per
    family, ``{"grid": [{"settings", "valid_recall@10"}], "chosen": settings}``."""
    tuned = tune_peers(run, config.evaluate)
    chosen = [("popularity", Popularity().fit(run)), *tuned["systems"].items()]
    choices = {"popularity": {"grid": [], "chosen": {}}}
    for family, record in tuned["record"]["families"].items():
        if record.get("skipped"):
            continue
        choices[family] = {"grid": [{"settings": row["params"],
                                     "valid_recall@10": row["recall@10"]}
                                    for row in record["rows"]],
                           "chosen": record["chosen"]}
        if progress:
            console.print(f"  peer {family}: {record['chosen']} chosen on validation")
    return chosen, choices


def run_paper_study(run_dir: str | Path, config: RunConfig, *, split: str = "valid",
                    fusion_ratio: float = 500, include_peers: bool = True,
                    systems: list[str] | None = None, progress: bool = True,
                    report_only: bool = False) -> StudyResult:
    """Train and score every row; each finished row is cached under RUN/study/paper/rows, so
    an interrupted study resumes where it stopped (training itself resumes from checkpoints)
    and ``report_only`` writes the report from the rows finished so far."""
    run = RunData(run_dir)
    base = resolve_train_config(config.train, "cf")
    test_reads = open_test_period(run, "relrec study paper") if split == "test" else None
    segments = segment_pairs(run, split, config.evaluate)
    valid_segments = segment_pairs(run, "valid", config.evaluate)
    rows, evaluations, notes, validation = [], {}, [], {}
    started = time.perf_counter()
    directory = Path(run_dir) / "study" / "paper"
    rows_dir = directory / "rows"
    for system, group, overrides in paper_variants(fusion_ratio):
        if systems and system not in systems:
            continue
        train_config = variant_config(base, overrides)
        variant = config.model_copy(update={"train": train_config})
        name = model_name_for(system)
        cache = rows_dir / name.split("/")[-1]
        evaluation = load_evaluation(cache.with_name(cache.name + f"_{split}"))
        valid_evaluation = load_evaluation(cache.with_name(cache.name + "_valid"))
        training_json = Path(run_dir) / name / "training.json"
        if evaluation is None or valid_evaluation is None or not training_json.exists():
            if report_only:
                notes.append(f"{system}: not run")
                continue
            if progress:
                console.print(f"[bold]study[/bold] training {system}")
            train_run(run_dir, variant, progress=progress, model_name=name)
            model = RelatedItems.load(run_dir, model_name=name, content_blend=0.0,
                                      ease_blend=0.0)
            evaluation = evaluate_system(run, model, system, config.evaluate, split, segments)
            valid_evaluation = evaluate_system(run, model, system, config.evaluate, "valid",
                                               {"all": valid_segments["all"]})
            save_evaluation(evaluation, cache.with_name(cache.name + f"_{split}"))
            save_evaluation(valid_evaluation, cache.with_name(cache.name + "_valid"))
        summary = json.loads(training_json.read_text())
        validation[system] = valid_evaluation.summary["all"]
        evaluations[system] = evaluation
        rows.append(StudyRow(system, group, evaluation.summary, settings={
            "train": summary["train_config"], "notes": summary["notes"],
            "best_epoch": summary["best_epoch"]}))
        if summary["notes"]:
            notes.append(f"{system}: {summary['notes']}")
    if not systems or "content kNN" in systems:
        try:
            content = ContentKNN(("text", "visual")).fit(run)
        except FileNotFoundError:
            content = ContentKNN(("text",)).fit(run)
            notes.append("content kNN uses text only (no visual embeddings in the run)")
        evaluations["content kNN"] = evaluate_system(run, content, "content kNN",
                                                     config.evaluate, split, segments)
        rows.insert(1, StudyRow("content kNN", "Table I", evaluations["content kNN"].summary,
                                settings={"modalities": list(content.modalities)}))
    peer_choices = {}
    choices_path = rows_dir / "peer_choices.json"
    if include_peers:
        families = ("popularity", *PEER_FAMILIES)
        cached = {family: load_evaluation(rows_dir / f"peer_{family}_{split}")
                  for family in families}
        if all(cached.values()) and choices_path.exists():
            peer_choices = json.loads(choices_path.read_text())
            evaluations.update(cached)
        elif not report_only:
            chosen, peer_choices = tuned_peers(run, config, progress)
            for family, peer in chosen:
                evaluations[family] = evaluate_system(run, peer, family, config.evaluate,
                                                      split, segments)
                save_evaluation(evaluations[family], rows_dir / f"peer_{family}_{split}")
            atomic_write_json(choices_path, peer_choices)
        for family in families:
            if family in evaluations and family in peer_choices:
                rows.append(StudyRow(family, "peers", evaluations[family].summary,
                                     settings=peer_choices[family]["chosen"]))
    reference = "cf" if "cf" in evaluations else rows[0].system
    for row in rows:
        if row.system != reference:
            row.paired_vs_reference = paired_differences(
                evaluations[row.system], evaluations[reference], config.evaluate)["all"]
    ratio_rows = [(ratio, f"mtl 1:{ratio}") for ratio in PAPER_RATIOS
                  if f"mtl 1:{ratio}" in evaluations]
    curves = {}
    if ratio_rows:
        curves["w_co:w_sem"] = [{"x": f"1:{ratio}", "system": system}
                                for ratio, system in ratio_rows]
    operating_point = choose_operating_point(validation, peer_choices, evaluations)
    if operating_point is not None:
        notes.append(f"validation choice of the operating point: {operating_point}")
    choice = choose_ratio(validation, ratio_rows)
    if choice is not None:
        notes.append(f"validation choice for the `full` preset: w_sem = {choice['w_sem']} "
                     f"({choice['rule']})")
    notes.extend(split_notes(segments, test_reads))
    result = StudyResult(
        name="paper", split=split, reference=reference, rows=rows, curves=curves, notes=notes,
        relevance_metric="topic_match_rate@10" if run.has_topics else "content_similarity@10",
        manifest=str(Path(run_dir) / "manifest.json"))
    paths = write_report(result, directory)
    update_manifest(run_dir, "study_paper", {
        "report": str(paths["html"]), "results": str(paths["json"]), "split": split,
        "validation": validation, "peer_choices": peer_choices, "full_ratio_choice": choice,
        "operating_point_choice": operating_point,
        "seconds": time.perf_counter() - started})
    return result


def choose_ratio(validation: dict, ratio_rows) -> dict | None:
    """The documented rule for the ``full`` preset's w_co:w_sem, on the validation split:
    the ratio with the highest topic match rate@10 whose recall@10 is at least 95% of the
    baseline CF's (the paper's "favourable trade-off")."""
    if "cf" not in validation or not ratio_rows:
        return None
    metric = "topic_match_rate@10" if "topic_match_rate@10" in validation["cf"] else None
    if metric is None:
        return None
    floor = 0.95 * validation["cf"]["recall@10"]["value"]
    eligible = [(validation[system][metric]["value"], ratio) for ratio, system in ratio_rows
                if validation[system]["recall@10"]["value"] >= floor]
    if not eligible:
        return {"w_sem": None, "rule": "no ratio kept 95% of CF's validation recall@10"}
    _, ratio = max(eligible)
    return {"w_sem": float(ratio), "rule": "highest validation topic match@10 with recall@10 "
            "≥ 95% of baseline CF's"}


def choose_operating_point(validation: dict, peer_choices: dict, evaluations: dict) -> dict | None:
    """Among the trained rows, the highest validation topic match@10 whose validation
    recall@10 is at least the best peer's (so it can dominate every peer); if none reaches
    the best peer, the highest validation recall@10. Validation split only."""
    best_peer = max((max(entry["valid_recall@10"] for entry in choice["grid"])
                     for choice in peer_choices.values() if choice["grid"]), default=None)
    candidates = {name: metrics for name, metrics in validation.items()
                  if "topic_match_rate@10" in metrics}
    if not candidates:
        return None
    if best_peer is not None:
        eligible = {name: m for name, m in candidates.items()
                    if m["recall@10"]["value"] >= best_peer}
        if eligible:
            name = max(eligible, key=lambda n: eligible[n]["topic_match_rate@10"]["value"])
            return {"system": name, "rule": "highest validation topic match@10 with "
                    f"recall@10 ≥ best peer's ({best_peer:.4f})"}
    name = max(candidates, key=lambda n: candidates[n]["recall@10"]["value"])
    return {"system": name, "rule": "no row reached the best peer's validation recall@10 "
            f"({best_peer}); highest validation recall@10"}
