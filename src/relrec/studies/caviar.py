"""CAViaR evaluation: NE of the contextual vs the point-wise model, calibration by
similarity bucket (CAViaR Fig. 2), and the re-rank's effect on intra-list diversity, recall,
topic match and session engagement.

All of it on the **test period**: slates from test-period sessions (same construction as the
training slates, :mod:`relrec.rerank.slates`) for NE and calibration; the test pairs' warm
triggers for recall / topic match / ILD; and, per test-session trigger occurrence,
``session_engagement@k`` = share of occurrences whose list holds an item the user engaged
later in that session. Systems: the main ranking, the CAViaR re-rank (contextual model, greedy,
page by page) and the same greedy pass with the point-wise model (a control: same window, no
context).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from relrec.config import EvaluateConfig, RunConfig
from relrec.evaluate.bootstrap import bootstrap_interval, paired_bootstrap_difference
from relrec.evaluate.evaluation import evaluate_system, segment_pairs, share_among_units
from relrec.evaluate.metrics import PerTrigger, intra_list_diversity_at_k
from relrec.studies.report import pyplot, split_notes, StudyResult, StudyRow, write_report
from relrec.evaluate.sealed import open_test_period
from relrec.manifest import atomic_write_json
from relrec.run import RunData
from relrec.content.store import load_content
from relrec.index.base import SimilarItemsModel
from relrec.related import RelatedItems
from relrec.rerank.model import ContextualReranker, reranker_dir
from relrec.rerank.rerank import rerank_pages
from relrec.rerank.slates import build_slates, period_sessions, slate_triggers
from relrec.train.reranker import train_reranker
from relrec.rerank.slates import normalized_entropy

MAIN, CONTEXTUAL, POINTWISE = "main ranking", "CAViaR re-rank", "point-wise re-rank (control)"


class _Reranked(SimilarItemsModel):
    """The main ranking re-ranked page by page; ``contextual=False`` is the point-wise
    control (CAViaR Table 1), which :class:`relrec.RelatedItems` does not offer."""

    def __init__(self, model, reranker, alpha, window, page_size, contextual):
        self.item_ids_ = model.item_ids_
        self.model, self.reranker, self.alpha = model, reranker, alpha
        self.window, self.page_size, self.contextual = window, page_size, contextual

    def _search(self, triggers, k):
        pages = -(-k // self.page_size)
        main_scores, main = self.model._main_search(np.asarray(triggers), pages * self.page_size
                                                    + self.window, self.alpha)
        scores, indices = rerank_pages(self.reranker, np.asarray(triggers), main, main_scores,
                                       pages, self.page_size, self.window, self.contextual)
        return scores[:, :k], indices[:, :k]


def _ne_interval(p: np.ndarray, y: np.ndarray, rows: np.ndarray, background: float,
                 n_boot: int, seed: int) -> dict:
    value = normalized_entropy(p, y, background)
    unique, inverse = np.unique(rows, return_inverse=True)
    rng = np.random.default_rng(seed)
    p_clip = np.clip(p, 1e-7, 1 - 1e-7)
    loss = -(y * np.log(p_clip) + (1 - y) * np.log(1 - p_clip))
    per_row_loss = np.bincount(inverse, loss)
    per_row_count = np.bincount(inverse)
    b = float(np.clip(background, 1e-7, 1 - 1e-7))
    entropy = -(b * np.log(b) + (1 - b) * np.log(1 - b))
    stats = []
    for _ in range(n_boot):
        weight = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
        stats.append((weight @ per_row_loss) / max(weight @ per_row_count, 1) / entropy)
    return {"value": value, "low": float(np.percentile(stats, 2.5)),
            "high": float(np.percentile(stats, 97.5)), "per_row": (per_row_loss, per_row_count)}


def calibration_plot(similarity, labels, predictions: dict[str, np.ndarray], path: Path,
                     buckets: int = 10) -> tuple[Path, dict]:
    """Calibration = Σ predicted / Σ observed per similarity bucket (CAViaR eq. 3, Fig. 2)."""
    plt = pyplot()

    edges = np.unique(np.quantile(similarity, np.linspace(0, 1, buckets + 1)))
    bucket = np.clip(np.searchsorted(edges, similarity, side="right") - 1, 0, len(edges) - 2)
    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1)]
    table = {"bucket_edges": edges.tolist(), "share": [], "observed_rate": []}
    fig, axes = plt.subplots(1, len(predictions), figsize=(6 * len(predictions), 4.5),
                             sharey=True)
    axes = np.atleast_1d(axes)
    for b in range(len(centres)):
        mask = bucket == b
        table["share"].append(float(mask.mean()))
        table["observed_rate"].append(float(labels[mask].mean()) if mask.any() else None)
    for axis, (name, p) in zip(axes, predictions.items()):
        calibration = []
        for b in range(len(centres)):
            mask = bucket == b
            observed = labels[mask].sum()
            calibration.append(float(p[mask].sum() / observed) if observed > 0 else np.nan)
        table[name] = calibration
        axis.plot(centres, calibration, marker="o")
        axis.axhline(1.0, color="grey", linestyle="--")
        axis.set_title(f"{name}")
        axis.set_xlabel("similarity: candidate · mean of previous 5 items (bucket centre)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("calibration = Σ predicted / Σ engaged")
    fig.suptitle("Calibration by similarity bucket (test-period slates), cf. CAViaR Fig. 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, table


def run_caviar_study(run_dir: str | Path, config: RunConfig | None = None, *,
                     model_name: str = "model", alpha: float | None = None,
                     train: bool = True, page_size: int = 10, window: int = 20,
                     slate_size: int = 20, max_triggers: int = 40000, epochs: int = 6,
                     n_topics: int | None = None, out_dir: str | Path | None = None,
                     seed: int = 0) -> tuple[StudyResult, dict]:
    run = RunData(run_dir)
    # the re-ranker trains on validation-period slates, so it is scored on the test period
    test_reads = open_test_period(run, "relrec study caviar")
    config = config or run.config
    if train or not reranker_dir(run_dir).exists():
        train_reranker(run_dir, model_name=model_name, slate_size=slate_size, epochs=epochs,
                       max_triggers=max_triggers, alpha=alpha, seed=seed, n_topics=n_topics)
    reranker = ContextualReranker.load(reranker_dir(run_dir))
    model = RelatedItems.load(run_dir, model_name=model_name, content_blend=0.0,
                              ease_blend=0.0)
    n_boot = config.evaluate.n_bootstrap
    directory = Path(out_dir) if out_dir else run.run_dir / "study" / "caviar"
    directory.mkdir(parents=True, exist_ok=True)

    # 1. NE and calibration on test-period slates
    sessions = period_sessions(run, "test")
    occurrences = slate_triggers(sessions, reranker.context_size, max_triggers, seed)
    slates = build_slates(reranker, model, occurrences, slate_size, alpha=alpha)
    background = float(reranker.meta.get("positive_rate", slates.labels.mean()))
    p_context = reranker.predict(slates.contextual, contextual=True)
    p_point = reranker.predict(slates.pointwise, contextual=False)
    ne_context = _ne_interval(p_context, slates.labels, slates.row, background, n_boot, seed)
    ne_point = _ne_interval(p_point, slates.labels, slates.row, background, n_boot, seed)
    difference = _ne_interval(p_context, slates.labels, slates.row, background, 1, seed)
    figure, calibration = calibration_plot(
        slates.similarity, slates.labels,
        {"point-wise model": p_point, "contextual model": p_context},
        directory / "caviar_calibration.png")
    # paired bootstrap of the NE difference over the same resampled slates
    loss_c, count = ne_context.pop("per_row")
    loss_p, _ = ne_point.pop("per_row")
    difference.pop("per_row")
    rng = np.random.default_rng(seed)
    b = float(np.clip(background, 1e-7, 1 - 1e-7))
    entropy = -(b * np.log(b) + (1 - b) * np.log(1 - b))
    stats = []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, len(count), len(count)), minlength=len(count))
        stats.append((w @ (loss_c - loss_p)) / max(w @ count, 1) / entropy)
    ne_difference = {"value": ne_context["value"] - ne_point["value"],
                     "low": float(np.percentile(stats, 2.5)),
                     "high": float(np.percentile(stats, 97.5))}

    # 2. the re-rank's effect on the lists
    evaluate_config = EvaluateConfig(ks=[page_size], n_bootstrap=n_boot, seed=seed,
                                     popular_top_fraction=config.evaluate.popular_top_fraction,
                                     unpopular_bottom_fraction=config.evaluate.unpopular_bottom_fraction)
    segments = segment_pairs(run, "test", evaluate_config)
    systems = {MAIN: (model, {"alpha": alpha}),
               CONTEXTUAL: (_Reranked(model, reranker, alpha, window, page_size, True), {}),
               POINTWISE: (_Reranked(model, reranker, alpha, window, page_size, False), {})}
    loaded = load_content(run, "text")
    diversity_vectors = loaded[0] if loaded is not None else reranker.space.vectors
    unique_occ, occ_rows = np.unique(occurrences.triggers, return_inverse=True)
    evaluations, extra = {}, {}
    for name, (system, query) in systems.items():
        evaluation = evaluate_system(run, system, name, evaluate_config, "test", segments,
                                     options=query)
        ranked = system.ranked_indices(run.item_ids[segments["all"].triggers], page_size, **query)
        ild = intra_list_diversity_at_k(ranked, diversity_vectors, page_size)
        occ_ranked = system.ranked_indices(run.item_ids[unique_occ], page_size, **query)
        hits = np.array([bool(set(occ_ranked[row].tolist()) & later) for row, later in
                         zip(occ_rows, occurrences.later)], dtype=np.float64)
        engagement = PerTrigger(hits, np.ones_like(hits))
        # diversity is a list property: shared among the (user, trigger) units, users resampled;
        # session engagement is per slate occurrence, which are resampled as they are
        extra[name] = {f"intra_list_diversity@{page_size}":
                       (share_among_units(ild, segments["all"]), segments["all"].unit_user),
                       f"session_engagement@{page_size}": (engagement, None)}
        for metric, (values, clusters) in extra[name].items():
            evaluation.summary["all"][metric] = bootstrap_interval(
                values, n_boot, seed, clusters=clusters).to_dict()
        evaluations[name] = evaluation
    rows = []
    for name, evaluation in evaluations.items():
        paired = None
        if name != MAIN:
            paired = {metric: paired_bootstrap_difference(
                evaluation.per_trigger["all"][metric], evaluations[MAIN].per_trigger["all"][metric],
                n_boot, seed, clusters=segments["all"].unit_user).to_dict()
                for metric in evaluation.per_trigger["all"]}
            paired.update({metric: paired_bootstrap_difference(
                values, extra[MAIN][metric][0], n_boot, seed, clusters=clusters).to_dict()
                for metric, (values, clusters) in extra[name].items()})
        rows.append(StudyRow(name, "CAViaR", evaluation.summary, paired,
                             {"window": window, "page_size": page_size, "alpha": alpha}))
    caviar = {"normalized_entropy": {"contextual": ne_context, "pointwise": ne_point,
                                     "contextual_minus_pointwise": ne_difference},
              "test_slates": {"triggers": int(len(np.unique(slates.row))),
                              "slots": int(len(slates.labels)),
                              "positive_rate": float(slates.labels.mean()),
                              "background_rate_from_training": background},
              "calibration": calibration, "reranker": reranker.meta}
    notes = [
        f"NE (lower is better) on test-period slates: contextual {ne_context['value']:.4f} "
        f"[{ne_context['low']:.4f}, {ne_context['high']:.4f}], point-wise "
        f"{ne_point['value']:.4f} [{ne_point['low']:.4f}, {ne_point['high']:.4f}]; "
        f"difference {ne_difference['value']:+.4f} [{ne_difference['low']:+.4f}, "
        f"{ne_difference['high']:+.4f}] (paired over slates).",
        f"Re-rank: greedy, page size {page_size}, window {window}, context k = "
        f"{reranker.context_size}; main ranking = model '{model_name}' at α={alpha}.",
        "Slates: validation-period sessions for training, test-period for evaluation; "
        "a slot is positive when its item was engaged later in the session.",
    ]
    relevance = f"topic_match_rate@{page_size}" if run.has_topics else \
        f"content_similarity@{page_size}"
    notes.extend(split_notes(segments, test_reads))
    result = StudyResult(name="caviar", split="test", reference=MAIN, rows=rows, notes=notes,
                         relevance_metric=relevance,
                         manifest=str(run.run_dir / "manifest.json"))
    atomic_write_json(directory / "caviar.json", caviar)
    write_report(result, directory, extra_figures=[figure])
    return result, caviar
