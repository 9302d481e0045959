"""``relrec study RUN_DIR mtmh``: MTMH heads, the α quota curve and the MTSH / STMH ablations.

Trains (or reuses) three models in the run — ``mtmh_mtmh`` (two heads, relevance head
distilled), ``mtmh_mtsh`` (one head on the multi-task loss) and ``mtmh_stmh`` (two heads, both
``L_co`` only) — and scores on the same test triggers: each head alone, the quota merge at
α ∈ {0, 0.1, …, 1} (α = share of slots from the engagement head), the ablations and the content
kNN peer. The report adds the α curve as recall@10 against the relevance metric.
"""

from __future__ import annotations

from pathlib import Path


from relrec.config import RunConfig
from relrec.evaluate.evaluation import evaluate_system, paired_differences, segment_pairs
from relrec.studies.report import (ENGAGEMENT, RELEVANCE, pyplot, split_notes, StudyResult,
                                    StudyRow, write_report)
from relrec.evaluate.sealed import open_test_period
from relrec.run import RunData
from relrec.evaluate.peers import ContentKNN
from relrec.related import RelatedItems
from relrec.config import TrainConfig
from relrec.train.multihead import train_multihead_run
from relrec.train.presets import resolve_train_config

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
REFERENCE = "MTMH engagement head"


def train_variants(run_dir: str | Path, config: RunConfig, variants=("mtmh", "mtsh", "stmh"),
                   max_epochs: int | None = None, retrain: bool = False,
                   progress: bool = False) -> dict[str, str]:
    """Train each variant into RUN_DIR/mtmh_<variant> (kept when present unless ``retrain``)."""
    overrides = {"max_epochs": max_epochs or config.train.max_epochs, "seed": config.train.seed}
    # a config already on the mtmh preset keeps its settings; any other starts from the preset
    base = config.train if config.train.preset == "mtmh" else TrainConfig()
    train_config = resolve_train_config(base, "mtmh", overrides)
    names = {}
    for variant in variants:
        name = f"mtmh_{variant}"
        names[variant] = name
        if not retrain and (Path(run_dir) / name / "weights.safetensors").exists() \
                and (Path(run_dir) / name / "multihead.json").exists():
            continue
        variant_config = config.model_copy(update={"train": train_config})
        train_multihead_run(run_dir, variant_config, progress=progress, model_name=name,
                            variant=variant)
    return names


def alpha_curve_plot(result: StudyResult, path: Path) -> Path:
    """Recall@10 (y) against the relevance metric (x) along the α sweep, with intervals."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 5.5))
    points = result.curves.get("alpha", [])
    xs, ys = [], []
    for point in points:
        summary = result.row(point["system"]).summary["all"]
        x, y = summary.get(result.relevance_metric), summary.get(ENGAGEMENT)
        if not x or not y:
            continue
        xs.append(x["value"] * 100)
        ys.append(y["value"] * 100)
        ax.errorbar(xs[-1], ys[-1], xerr=[[xs[-1] - x["low"] * 100], [x["high"] * 100 - xs[-1]]],
                    yerr=[[ys[-1] - y["low"] * 100], [y["high"] * 100 - ys[-1]]],
                    fmt="o", color="tab:blue", capsize=2)
        ax.annotate(f"α={point['x']}", (xs[-1], ys[-1]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.plot(xs, ys, color="tab:blue", alpha=0.5, label="MTMH quota merge")
    for row in result.rows:
        if row.group in ("ablations", "peers"):
            x, y = row.summary["all"].get(result.relevance_metric), row.summary["all"].get(
                ENGAGEMENT)
            if x and y:
                ax.plot(x["value"] * 100, y["value"] * 100, "s", label=row.system)
    ax.set_xlabel(f"relevance: {result.relevance_metric} (%)")
    ax.set_ylabel(f"engagement: {ENGAGEMENT} (%)")
    ax.set_title(f"MTMH α curve ({result.split} split), 95% bootstrap intervals")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_mtmh_study(run_dir: str | Path, config: RunConfig | None = None, *,
                   max_epochs: int | None = None, split: str = "valid",
                   out_dir: str | Path | None = None, retrain: bool = False,
                   alphas=ALPHAS, progress: bool = False, peers: bool = True,
                   write: bool = True) -> StudyResult:
    run = RunData(run_dir)
    config = config or run.config
    names = train_variants(run_dir, config, max_epochs=max_epochs, retrain=retrain,
                           progress=progress)
    evaluate_config = config.evaluate
    test_reads = open_test_period(run, "relrec study mtmh") if split == "test" else None
    segments = segment_pairs(run, split, evaluate_config)
    # (name, group, system, query options, settings shown); α = 1 / 0 is one head alone
    systems: list[tuple[str, str, object, dict, dict]] = []
    mtmh = RelatedItems.load(run_dir, model_name=names["mtmh"], content_blend=0.0,
                             ease_blend=0.0)
    systems.append((REFERENCE, "MTMH heads", mtmh, {"alpha": 1.0}, {"head": "engagement"}))
    systems.append(("MTMH relevance head", "MTMH heads", mtmh, {"alpha": 0.0},
                    {"head": "relevance"}))
    for alpha in alphas:
        systems.append((f"MTMH α={alpha}", "MTMH α sweep", mtmh, {"alpha": alpha},
                        {"alpha": alpha}))
    mtsh = RelatedItems.load(run_dir, model_name=names["mtsh"], content_blend=0.0,
                             ease_blend=0.0)
    systems.append(("MTSH (one head, multi-task)", "ablations", mtsh, {}, {}))
    stmh = RelatedItems.load(run_dir, model_name=names["stmh"], content_blend=0.0,
                             ease_blend=0.0)
    systems.append(("STMH engagement head", "ablations", stmh, {"alpha": 1.0}, {}))
    systems.append(("STMH relevance head (no KL)", "ablations", stmh, {"alpha": 0.0}, {}))
    systems.append(("STMH α=0.5", "ablations", stmh, {"alpha": 0.5}, {"alpha": 0.5}))
    if peers:
        try:
            systems.append(("content kNN (teacher)", "peers", ContentKNN().fit(run), {}, {}))
        except FileNotFoundError:
            pass
    evaluations = {name: evaluate_system(run, system, name, evaluate_config, split, segments,
                                         options=query)
                   for name, _, system, query, _ in systems}
    reference = evaluations[REFERENCE]
    rows = []
    for name, group, _, _, settings in systems:
        paired = (paired_differences(evaluations[name], reference, evaluate_config)["all"]
                  if name != REFERENCE else None)
        rows.append(StudyRow(name, group, evaluations[name].summary, paired, settings))
    relevance_metric = RELEVANCE if run.has_topics else "content_similarity@10"
    training = {variant: _training_note(run_dir, name) for variant, name in names.items()}
    notes = [
        "α = share of the k slots taken from the engagement head (exactly round(α·k)), the "
        "rest from the relevance head, interleaved in proportion (relrec.rerank.quota).",
        "Engagement head: raw inner product, τ = 1, logQ. Relevance head: unit vectors, "
        "L_co at τ_r plus w_r·KL(P_content ‖ Q) over the batch (MTMH eq. 2); served by cosine.",
        "Teacher: fused normalised content vectors of the run (text ⊕ visual where present); "
        "evaluation topics never enter it.",
        f"Training: {training}",
    ]
    notes.extend(split_notes(segments, test_reads))
    result = StudyResult(name="mtmh", split=split, reference=REFERENCE, rows=rows,
                         curves={"alpha": [{"x": alpha, "system": f"MTMH α={alpha}"}
                                           for alpha in alphas]},
                         notes=notes, relevance_metric=relevance_metric,
                         manifest=str(run.run_dir / "manifest.json"))
    if write:
        directory = Path(out_dir) if out_dir else run.run_dir / "study" / "mtmh"
        directory.mkdir(parents=True, exist_ok=True)
        figure = alpha_curve_plot(result, directory / "alpha_recall_vs_relevance.png")
        write_report(result, directory, extra_figures=[figure])
    return result


def _training_note(run_dir, name) -> dict:
    import json

    path = Path(run_dir) / name / "training.json"
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    return {"best_epoch": summary.get("best_epoch"), "epochs_run": len(summary.get("history", [])),
            "valid_recall_by_head": {k: round(v, 4) for k, v in
                                     summary.get("valid_recall_by_head", {}).items()},
            "teacher": summary.get("notes", {}).get("teacher", {}).get("modalities")}


def alpha_table(result: StudyResult) -> list[dict]:
    """(α, recall@10, relevance@10) with intervals, for RESULTS.md."""
    out = []
    for point in result.curves.get("alpha", []):
        summary = result.row(point["system"]).summary["all"]
        out.append({"alpha": point["x"], "recall": summary.get(ENGAGEMENT),
                    "relevance": summary.get(result.relevance_metric)})
    return out


__all__ = ["run_mtmh_study", "train_variants", "alpha_curve_plot", "alpha_table", "ALPHAS",
           ]
