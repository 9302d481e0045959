"""``relrec train --preset auto``: how far to trust content, chosen on the validation period.

A fixed preset that wins on one dataset need not win on the next: with weak or noisy content,
forcing the tower to lean on it (ID dropout, fused features, a heavy semantic task) costs
engagement. ``auto`` trains ``cf`` first, then a bounded family of candidates that trust
content more and more (:func:`candidate_family`), scores each on the **validation** period —
and each trained candidate once more per content-blend weight of its ranking and per weight of
the EASE peer blended into it (memorisation beside the tower's generalisation,
:mod:`relrec.rerank.neighbours`; EASE's λ is the peer's validation-tuned one), which need no
training — and keeps one by a stated rule (:func:`choose_operating_point`):

* ``prefer="relevance"`` (default): the highest validation topic match@10 among candidates
  whose validation recall@10 is at least ``cf``'s minus ``tolerance`` (a fraction of ``cf``'s
  value, default 2%); ``cf`` itself is always eligible, so the choice is never below it by more
  than the tolerance.
* ``prefer="engagement"``: the highest validation recall@10 among candidates whose topic
  match@10 is at least ``cf``'s minus ``tolerance`` of it.
* without topic labels: the highest validation recall@10 (content cannot judge content).

Budget: the whole search (cf included, scoring included; first-time content embedding and
EASE's peer tuning, cached per split, excluded) stays within ``budget_factor`` × the time of
the ``cf`` training measured in the same run: before each candidate the longest scoring so far
is set aside, a candidate that would then start with less than half a ``cf`` training left is
skipped, and one that starts is cut at what is left (the rows say so).
Every candidate's validation row, the rule and the choice go to the manifest's
``operating_point`` section (``relrec evaluate`` prints them; the report plots the frontier).
The test period is never read here.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from relrec.config import RankConfig, RunConfig
from relrec.content.stage import ensure_content
from relrec.content.store import load_content
from relrec.data.prepare import write_refit_run
from relrec.evaluate.evaluation import evaluate_system, segment_pairs
from relrec.evaluate.peers import ContentKNN
from relrec.manifest import atomic_write_json, read_manifest, update_manifest
from relrec.rerank.lists import BlendGrid, RankedLists
from relrec.rerank.neighbours import NeighbourWeights
from relrec.run import RunData
from relrec.train.blend_tuning import record_rank
from relrec.train.neighbour_table import fit_neighbour_table, tuned_neighbour_table
from relrec.train.presets import resolve_train_config

TOLERANCE = 0.02
BUDGET_FACTOR = 4.0
BLEND_WEIGHTS = (0.125, 0.25, 0.5, 1.0, 2.0)
#: weights of the EASE term (model + EASE rows, relrec.rerank.neighbours)
EASE_WEIGHTS = (0.5, 1.0, 2.0)
CANDIDATES_FOLDER = "candidates"
REFIT_FOLDER = "refit"
RELEVANCE = "topic_match_rate@10"
ENGAGEMENT = "recall@10"
ROW_METRICS = ("recall@10", "recall@50", "topic_match_rate@10", "popular_share@10")
SCORED_KS = [10, 50]

console = Console(stderr=True)


@dataclass(frozen=True)
class Candidate:
    """One trained configuration of the search: ``overrides`` over the ``cf`` preset."""
    name: str
    overrides: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # content modalities it cannot do without


def candidate_family(available: set[str]) -> list[Candidate]:
    """The candidates, from ``cf`` (no content) to the paper's recipe, in the order they are
    tried (the budget may stop the search before the last ones). Each trusts content a little
    more than the one before: content fused beside the ID, then ID dropout (cold items learn
    to stand on content), then a light semantic task (paper eq. 4-5 at 1:10), then the paper's
    recipe (1:500, text + visual, OPC)."""
    text, visual = "text" in available, "visual" in available
    both = {"use_text": text, "use_visual": visual}
    family = [Candidate("cf")]
    if text or visual:
        names = " + ".join(m for m in ("text", "visual") if m in available)
        family.append(Candidate(f"cf + {names}", {**both, "id_dropout": 0.1},
                                tuple(m for m in ("text", "visual") if m in available)))
        family.append(Candidate(f"cf + {names}, no ID dropout", {**both, "id_dropout": 0.0},
                                tuple(m for m in ("text", "visual") if m in available)))
    if text:
        family.append(Candidate("text + mtl 1:10", {"use_text": True, "w_sem": 10.0,
                                                    "id_dropout": 0.1}, ("text",)))
        family.append(Candidate("full (paper)", {**both, "w_sem": 500.0, "opc": True,
                                                 "id_dropout": 0.1}, ("text",)))
    return family


def _value(row: dict, metric: str) -> float | None:
    entry = row.get(metric)
    return None if entry is None else float(entry["value"])


def choose_operating_point(rows: list[dict], tolerance: float = TOLERANCE,
                           prefer: Literal["relevance", "engagement"] = "relevance",
                           reference: str = "cf", reference_eligible: bool = True) -> dict:
    """The rule of :mod:`relrec.train.operating_point` over validation ``rows`` (each with
    ``name`` and metric entries ``{"value": …}``). Returns ``{"name", "rule", "eligible",
    "met"}``.

    ``reference_eligible=False``: the reference only sets the floor (``full`` chooses among its
    own settings against ``cf``); when no other row reaches the floor, the row closest to it
    (highest guarded metric) is returned with ``met = False``. Ties go to the earlier row (the
    one that trusts content less)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    base = next((row for row in rows if row["name"] == reference), None)
    if base is None:
        raise ValueError(f"no {reference!r} row to compare with")
    pool = rows if reference_eligible else [row for row in rows if row["name"] != reference]
    if not pool:
        raise ValueError(f"no candidate besides {reference!r} to choose from")
    has_relevance = _value(base, RELEVANCE) is not None
    if not has_relevance:
        best = max(pool, key=lambda row: _value(row, ENGAGEMENT))
        return {"name": best["name"], "eligible": [row["name"] for row in pool], "met": True,
                "rule": "highest validation recall@10 (no topic labels to judge relevance)"}
    if prefer == "relevance":
        guarded, maximised, guarded_name = ENGAGEMENT, RELEVANCE, "recall@10"
        maximised_name = "topic match@10"
    elif prefer == "engagement":
        guarded, maximised, guarded_name = RELEVANCE, ENGAGEMENT, "topic match@10"
        maximised_name = "recall@10"
    else:
        raise ValueError(f"prefer must be 'relevance' or 'engagement', got {prefer!r}")
    floor = _value(base, guarded) * (1 - tolerance)
    eligible = [row for row in pool if _value(row, guarded) >= floor]
    rule = (f"highest validation {maximised_name} among candidates whose validation "
            f"{guarded_name} ≥ {reference}'s × (1 − {tolerance:g}) = {floor:.4f}")
    if not eligible:  # only possible when the reference itself is not a candidate
        best = max(pool, key=lambda row: _value(row, guarded))
        return {"name": best["name"], "eligible": [], "met": False,
                "rule": rule + f"; none reached it, so the highest validation {guarded_name}"}
    best = max(eligible, key=lambda row: _value(row, maximised))
    return {"name": best["name"], "rule": rule, "eligible": [row["name"] for row in eligible],
            "met": True}


def _row(name: str, candidate: str, summary: dict, blend: float, ease_blend: float = 0.0,
         **extra) -> dict:
    row = {"name": name, "candidate": candidate, "content_blend": blend,
           "ease_blend": ease_blend}
    row.update({metric: summary[metric] for metric in ROW_METRICS if metric in summary})
    cold = summary.get("cold_recall@10")
    if cold is not None:
        row["cold_recall@10"] = cold
    return {**row, **extra}


def _row_name(candidate: str, content: float, ease: float) -> str:
    parts = ([f"content blend {content:g}"] if content else []) + \
        ([f"EASE {ease:g}"] if ease else [])
    return ", ".join([candidate, *parts])


def _score(run: RunData, run_dir: Path, model_name: str, config: RunConfig, segments,
           candidate: str, blends: tuple[float, ...],
           neighbours: NeighbourWeights | None = None,
           ease_weights: tuple[float, ...] = ()) -> list[dict]:
    """Validation rows of one trained candidate: its ranking alone, each content-blend weight,
    and with a neighbour table each EASE weight, alone and beside each content weight (a
    blend re-orders the candidate pool; no training)."""
    model = RankedLists.load(run_dir, model_name=model_name, content_blend=0.0,
                             ease_blend=0.0)
    model.neighbours = neighbours
    model.rank = model.rank.model_copy(update={"blend_modalities": ["text"]})
    rows = []
    grid = [(content, 0.0) for content in (0.0, *blends)]
    if neighbours is not None:
        grid += [(content, ease) for ease in ease_weights for content in (0.0, *blends)]
    system = BlendGrid(model)  # one search per trigger set, whatever the weights
    # the rows read @10 and @50 only: deeper cut-offs would cost time and change nothing
    scoring = config.evaluate.model_copy(update={"ks": SCORED_KS})
    for content, ease in grid:
        system.weights = {"content_blend": content, "ease_blend": ease}
        evaluation = evaluate_system(run, system, candidate, scoring, "valid", segments)
        summary = dict(evaluation.summary["all"])
        cold = evaluation.summary.get("cold", {}).get("recall@10")
        if cold is not None:
            summary["cold_recall@10"] = cold
        rows.append(_row(_row_name(candidate, content, ease), candidate, summary, content,
                         ease))
    return rows


def search_operating_point(run_dir: str | Path, config: RunConfig, *, train,
                           tolerance: float = TOLERANCE,
                           prefer: Literal["relevance", "engagement"] = "relevance",
                           budget_factor: float = BUDGET_FACTOR, progress: bool = True,
                           refit_for_serving: bool = True,
                           overrides: dict | None = None, say=lambda line: None) -> dict:
    """Train and score the candidates, choose one, install it as ``RUN/model``.

    ``train(run_dir, config, progress=, max_seconds=, model_name=) -> summary`` trains one
    configuration (:func:`relrec.train.pipeline.train_run`). ``overrides`` (the user's
    explicit options, e.g. ``--epochs``) apply to every candidate. Returns the record written
    to the manifest's ``operating_point`` section."""
    run_dir = Path(run_dir)
    run = RunData(run_dir)
    # first-time content embedding is not part of the search's budget
    present = [m for m in ("text", "visual") if _has_source(run, m)]
    available = {}
    if present:
        notes: dict = {}
        available = ensure_content(run, present, config.content, progress=progress,
                                   notes=notes)
    available = {m for m, dim in available.items() if dim}
    family = candidate_family(available)
    # EASE's λ is the validation-tuned peer's (cached per split) and, like first-time content
    # embedding, outside the search's budget
    ease, neighbours = tuned_neighbour_table(run, config.evaluate, seed=config.train.seed)
    if neighbours is None:
        say(f"auto: no model + EASE rows ({ease['skipped']})")
    segments = segment_pairs(run, "valid", config.evaluate)
    segments = {name: segments[name] for name in ("all", "cold") if name in segments}
    started = time.perf_counter()
    rows: list[dict] = []
    trained: dict[str, dict] = {}
    cf_seconds = None
    scoring_seconds = 0.0  # the longest scoring so far, set aside before each training
    columns = [TextColumn("[bold]auto[/bold] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[leader]}")]
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("cf", total=len(family), leader="")
        for candidate in family:
            elapsed = time.perf_counter() - started
            if cf_seconds is not None:
                # what is left for training once this candidate's scoring is set aside
                left = budget_factor * cf_seconds - elapsed - scoring_seconds
                if left < 0.5 * cf_seconds:
                    rows.append({"name": candidate.name, "candidate": candidate.name,
                                 "skipped": f"budget: {left:.0f}s of {budget_factor:g}× cf "
                                 f"({budget_factor * cf_seconds:.0f}s) left"})
                    bar.update(task, advance=1)
                    continue
            bar.update(task, description=candidate.name)
            variant = config.model_copy(deep=True)
            variant.train = resolve_train_config(config.train, "cf",
                                                 {**candidate.overrides, **(overrides or {}),
                                                  "seed": config.train.seed})
            variant.train = variant.train.model_copy(update={"preset": "auto"})
            model_name = f"{CANDIDATES_FOLDER}/{_folder(candidate.name)}"
            limit = (None if cf_seconds is None else
                     budget_factor * cf_seconds - elapsed - scoring_seconds)
            summary = train(run_dir, variant, progress=False, max_seconds=limit,
                            model_name=model_name)
            train_seconds = time.perf_counter() - started - elapsed
            if cf_seconds is None:
                cf_seconds = train_seconds
            blends = BLEND_WEIGHTS if "text" in available else ()
            if neighbours is not None:  # each candidate folder is a servable model
                neighbours.save(run_dir / model_name)
            scoring_started = time.perf_counter()
            candidate_rows = _score(run, run_dir, model_name, variant, segments,
                                    candidate.name, blends, neighbours, EASE_WEIGHTS)
            scoring_seconds = max(scoring_seconds, time.perf_counter() - scoring_started)
            cut = bool(summary.get("stopped_by_time_limit"))
            for row in candidate_rows:
                row.update({"model": model_name, "best_epoch": summary["best_epoch"],
                            "epochs_run": len(summary["history"]),
                            "train_seconds": round(train_seconds, 2),
                            **({"cut_at_budget": True} if cut else {})})
            rows.extend(candidate_rows)
            trained[candidate.name] = {"train": variant.train.model_dump(mode="json"),
                                       "model": model_name, "summary": summary}
            scored = [row for row in rows if "skipped" not in row]
            leader = choose_operating_point(scored, tolerance, prefer)
            bar.update(task, advance=1, leader=f"leader: {leader['name']}")
    seconds = time.perf_counter() - started
    scored = [row for row in rows if "skipped" not in row]
    choice = choose_operating_point(scored, tolerance, prefer)
    chosen = next(row for row in scored if row["name"] == choice["name"])
    refit = None
    if refit_for_serving:
        refit = _refit(run_dir, config, trained[chosen["candidate"]], train, say,
                       ease if chosen["ease_blend"] > 0 else None)
    installed = _install(run_dir, chosen, refit)
    record = {
        "split": "valid", "rule": choice["rule"], "tolerance": tolerance, "prefer": prefer,
        "chosen": chosen["name"], "candidate": chosen["candidate"],
        "content_blend": chosen["content_blend"], "ease_blend": chosen["ease_blend"],
        "ease": ease,
        "served_model": ("model: the chosen configuration refit on the training + validation "
                         f"periods for {refit['epochs']} epoch(s)" if refit else
                         "model: the scored candidate itself"),
        "scored_model": chosen["model"], "refit": refit, "eligible": choice["eligible"], "rows": rows,
        "cf_train_seconds": round(cf_seconds, 2), "search_seconds": round(seconds, 2),
        "budget_seconds": round(budget_factor * cf_seconds, 2),
        "search_vs_cf": round(seconds / cf_seconds, 2), "modalities": sorted(available),
        **installed}
    update_manifest(run_dir, "operating_point", record)
    say(f"auto: {chosen['name']} ({choice['rule']}); search {seconds:.0f}s = "
        f"{seconds / cf_seconds:.1f}× one cf training ({cf_seconds:.0f}s)")
    return {**trained[chosen["candidate"]]["summary"], "operating_point": record,
            "train_config": trained[chosen["candidate"]]["train"]}


def _has_source(run: RunData, modality: str) -> bool:
    """Whether the run can have this modality: embedded already, or items that carry it."""
    if load_content(run, modality) is not None:
        return True
    items = run.items
    if modality == "text":
        return "title" in items.columns and bool(items["title"].notna().any())
    return any(column in items.columns and bool(items[column].notna().any())
               for column in ("image", "video"))


def _folder(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def _refit(run_dir: Path, config: RunConfig, trained: dict, train, say,
           ease: dict | None = None) -> dict:
    """Retrain the chosen configuration on the training + validation periods
    (:func:`relrec.data.prepare.write_refit_run`) for the epochs its search run kept; with
    ``ease`` (the chosen row blends EASE) fit its neighbour table on those periods too."""
    refit_dir = run_dir / REFIT_FOLDER
    refit_run = write_refit_run(run_dir, refit_dir, config)
    epochs = int(trained["summary"]["best_epoch"]) + 1
    variant = config.model_copy(deep=True)
    variant.train = variant.train.model_validate({**trained["train"], "max_epochs": epochs,
                                                  "keep_epoch": "last"})
    started = time.perf_counter()
    summary = train(refit_dir, variant, progress=False, max_seconds=None, model_name="model")
    if ease is not None:
        fit_neighbour_table(RunData(refit_dir), ease["family"], ease["params"]).save(
            refit_dir / "model")
    seconds = time.perf_counter() - started
    say(f"auto: refit on the training + validation periods, {epochs} epoch(s), {seconds:.0f}s")
    return {"run": REFIT_FOLDER, "epochs": epochs, "seconds": round(seconds, 2),
            "train_pairs_distinct": refit_run["pairs"]["train_pairs_distinct"],
            "items_known": int(refit_run["pairs"]["items_in_train"]),
            "content_cut": "as the scored run (dated content before the validation period)",
            "model": f"{REFIT_FOLDER}/model", "summary_best_epoch": summary["best_epoch"]}


def _install(run_dir: Path, chosen: dict, refit: dict | None) -> dict:
    """Copy the served model (the refit, else the chosen candidate) to ``RUN/model`` (what
    export and serve read) and record its ranking (the content blend) in the run's
    configuration."""
    _serve_model(run_dir, refit["model"] if refit else chosen["model"])
    record_rank(run_dir, RankConfig(content_blend=chosen["content_blend"],
                                    ease_blend=chosen["ease_blend"],
                                    blend_modalities=["text"]))
    section = (read_manifest(run_dir / REFIT_FOLDER).get("train") if refit
               else read_manifest(run_dir).get(f"train:{chosen['model']}"))
    if section is not None:
        update_manifest(run_dir, "train", section)
    summary = json.loads((run_dir / chosen["model"] / "training.json").read_text())
    return {"best_epoch": summary["best_epoch"]}


def _serve_model(run_dir: Path, model_name: str) -> None:
    """Copy ``RUN/<model_name>`` to ``RUN/model`` (what export and serve read)."""
    target = run_dir / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir / model_name, target,
                    ignore=shutil.ignore_patterns("checkpoint*", ".*.tmp"))


#: the paper's range of semantic weights (w_co = 1) and the two pseudo-label threshold rules
FULL_W_SEM = (1.0, 10.0, 100.0, 1000.0)
FULL_THRESHOLD_RULES = ("random-baseline", "quantile")
#: ``full`` may lose at most this fraction of ``cf``'s validation recall@10
FULL_TOLERANCE = 0.10


def search_full_recipe(run_dir: str | Path, config: RunConfig, *, train,
                       overrides: dict | None = None, search_threshold: bool = True,
                       progress: bool = True, say=lambda line: None) -> dict:
    """``relrec train --preset full``: the paper's recipe (text + visual + OPC + the semantic
    task of eq. 4-5) with ``w_sem`` and the pseudo-label threshold taken from validation.

    Trains ``cf`` (the floor), then ``full`` at each ``w_sem`` of :data:`FULL_W_SEM` with the
    random-baseline threshold, keeps one by :func:`choose_operating_point` (highest validation
    topic match@10 among settings whose recall@10 ≥ ``cf``'s × (1 − 0.10); none reaching it is
    said plainly), then tries the other threshold rule at that weight. Each row carries the
    pseudo-labels' agreement with co-engagement (share of co-engaged vs random pairs labelled
    related). Installs the chosen model as ``RUN/model``; returns its training summary with the
    record (manifest section ``full_recipe``)."""
    run_dir = Path(run_dir)
    run = RunData(run_dir)
    overrides = dict(overrides or {})
    segments = {"all": segment_pairs(run, "valid", config.evaluate)["all"]}
    started = time.perf_counter()
    rows: list[dict] = []
    trained: dict[str, dict] = {}
    plan = [("cf", "cf", {})] + [
        (f"full, w_sem {w_sem:g}", "full", {"w_sem": w_sem,
                                            "semantic_threshold_rule": "random-baseline"})
        for w_sem in FULL_W_SEM]
    columns = [TextColumn("[bold]full[/bold] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[leader]}")]

    def run_trial(name: str, preset: str, settings: dict) -> None:
        variant = config.model_copy(deep=True)
        variant.train = resolve_train_config(config.train, preset, {**settings, **overrides})
        variant.train = variant.train.model_copy(update={"preset": "full"})
        model_name = f"{CANDIDATES_FOLDER}/{_folder(name)}"
        trial_started = time.perf_counter()
        summary = train(run_dir, variant, progress=False, max_seconds=None,
                        model_name=model_name)
        row = _score(run, run_dir, model_name, variant, segments, name, ())[0]
        labels = summary.get("notes", {}).get("semantic_labels")
        row.update({"model": model_name, "best_epoch": summary["best_epoch"],
                    "train_seconds": round(time.perf_counter() - trial_started, 2),
                    "w_sem": variant.train.w_sem if preset == "full" else 0.0,
                    **({"semantic_labels": labels} if labels else {})})
        rows.append(row)
        trained[name] = {"train": variant.train.model_dump(mode="json"), "summary": summary,
                         "model": model_name}

    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task("cf", total=len(plan) + int(search_threshold), leader="")
        for name, preset, settings in plan:
            bar.update(task, description=name)
            run_trial(name, preset, settings)
            if len(rows) > 1:
                leader = choose_operating_point(rows, FULL_TOLERANCE, reference_eligible=False)
                bar.update(task, leader=f"leader: {leader['name']}")
            bar.update(task, advance=1)
        choice = choose_operating_point(rows, FULL_TOLERANCE, reference_eligible=False)
        if search_threshold:
            w_sem = next(row["w_sem"] for row in rows if row["name"] == choice["name"])
            name = f"full, w_sem {w_sem:g}, median threshold"
            bar.update(task, description=name)
            run_trial(name, "full", {"w_sem": w_sem, "semantic_threshold_rule": "quantile"})
            bar.update(task, advance=1)
            choice = choose_operating_point(rows, FULL_TOLERANCE, reference_eligible=False)
    chosen = next(row for row in rows if row["name"] == choice["name"])
    _serve_model(run_dir, chosen["model"])
    section = read_manifest(run_dir).get(f"train:{chosen['model']}")
    if section is not None:
        update_manifest(run_dir, "train", section)
    cf_recall = _value(rows[0], ENGAGEMENT)
    loss = 1 - _value(chosen, ENGAGEMENT) / cf_recall if cf_recall else 0.0
    labels = chosen.get("semantic_labels") or {}
    record = {"split": "valid", "rule": choice["rule"], "met": choice["met"],
              "chosen": chosen["name"], "w_sem": chosen["w_sem"],
              "threshold": labels.get("threshold"), "threshold_rule": labels.get("rule"),
              "pseudo_label_agreement": {key: labels.get(key) for key in (
                  "positive_share_of_pairs", "positive_share_of_random_pairs",
                  "co_engagement_lift")},
              "recall_loss_vs_cf": round(loss, 4), "rows": rows,
              "search_seconds": round(time.perf_counter() - started, 2)}
    update_manifest(run_dir, "full_recipe", record)
    agreement = record["pseudo_label_agreement"]
    lift = agreement["co_engagement_lift"]
    versus_cf = (f"{100 * loss:.1f}% below cf's" if loss > 0 else "not below cf's")
    say(f"full: w_sem {chosen['w_sem']:g}, {labels.get('rule', 'no semantic labels')} "
        f"({choice['rule']}); validation recall@10 {versus_cf}")
    if labels.get("dropped"):
        say(f"full: {labels['dropped']}")
    if lift is not None:
        say(f"full: pseudo-labels call {100 * agreement['positive_share_of_pairs']:.1f}% of "
            f"co-engaged training pairs related vs "
            f"{100 * agreement['positive_share_of_random_pairs']:.1f}% of random pairs "
            f"(×{lift:.2f})")
    if not choice["met"]:
        say(f"full: every w_sem in 1:1 … 1:1000 loses more than {FULL_TOLERANCE:.0%} of cf's "
            "validation recall@10 on this data; the paper's recipe does not suit it — use "
            "--preset auto")
    return {**trained[chosen["name"]]["summary"], "full_recipe": record,
            "train_config": trained[chosen["name"]]["train"]}


ALPHAS = (1.0, 0.75, 0.5, 0.25, 0.0)


def choose_mtmh_alpha(run_dir: str | Path, config: RunConfig, *, say=lambda line: None,
                      model_name: str = "model") -> dict:
    """The served α of a two-head (MTMH) model, chosen on validation by the rule of
    :func:`choose_operating_point` with α = 1 (the engagement head alone) as the reference, and
    the content teacher's own validation relevance measured against it: a teacher less on-topic
    than co-engagement cannot make the relevance head more on-topic (said plainly, recorded).
    Writes ``default_alpha`` into the model's ``multihead.json``; returns the record (manifest
    section ``mtmh_alpha``)."""
    run_dir = Path(run_dir)
    run = RunData(run_dir)
    train = config.train
    segments = {"all": segment_pairs(run, "valid", config.evaluate)["all"]}
    model = RankedLists.load(run_dir, model_name=model_name)
    rows = []
    for alpha in ALPHAS:
        summary = evaluate_system(run, model, f"alpha {alpha:g}", config.evaluate, "valid",
                                  segments, options={"alpha": alpha}).summary["all"]
        rows.append(_row(f"alpha {alpha:g}", "mtmh", summary, 0.0, alpha=alpha))
    modalities = tuple(model.tower_.content_modalities) or ("text",)
    teacher = ContentKNN(modalities).fit(run)
    teacher_row = _row("content teacher (kNN)", "teacher", evaluate_system(
        run, teacher, "teacher", config.evaluate, "valid", segments).summary["all"], 0.0)
    choice = choose_operating_point(rows, train.auto_tolerance, train.auto_prefer,
                                    reference="alpha 1")
    chosen = next(row for row in rows if row["name"] == choice["name"])
    record = {"split": "valid", "rows": rows, "teacher": teacher_row, "rule": choice["rule"],
              "chosen_alpha": chosen["alpha"], "eligible": choice["eligible"]}
    engagement = _value(rows[0], RELEVANCE)
    teacher_relevance = _value(teacher_row, RELEVANCE)
    if engagement is not None and teacher_relevance is not None:
        helps = teacher_relevance > engagement
        record["teacher_more_on_topic_than_engagement_head"] = helps
        if not helps:
            say(f"mtmh: the content teacher is less on-topic on validation than the engagement "
                f"head (topic match@10 {100 * teacher_relevance:.1f} vs {100 * engagement:.1f}):"
                " the relevance head cannot make lists more on-topic on this data")
    heads_file = run_dir / model_name / "multihead.json"
    heads = json.loads(heads_file.read_text())
    heads["default_alpha"] = chosen["alpha"]
    heads["default_alpha_rule"] = choice["rule"]
    atomic_write_json(heads_file, heads)
    update_manifest(run_dir, "mtmh_alpha", record)
    say(f"mtmh: served alpha {chosen['alpha']:g} ({choice['rule']})")
    return record
