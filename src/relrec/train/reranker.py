"""``relrec train-reranker``: fit the CAViaR contextual model and its point-wise baseline.

Slates come from **validation-period** sessions (:mod:`relrec.rerank.slates`); 10% of those
sessions are held out for early stopping on normalized entropy. Test-period sessions are never
read here. Both models: Adam (lr 0.005, CAViaR §4), binary cross-entropy. The settings are
the run configuration's ``[rerank]`` section (:class:`relrec.config.RerankConfig`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relrec.config import RerankConfig
from relrec.content.store import load_content
from relrec.manifest import read_manifest, update_manifest
from relrec.rerank.lists import RankedLists
from relrec.rerank.features import build_item_space
from relrec.rerank.model import ContextualReranker, EngagementMLP, reranker_dir
from relrec.rerank.rerank import rerank_pages
from relrec.rerank.slates import (Slates, build_slates, normalized_entropy, period_sessions,
                                  slate_triggers)
from relrec.run import RunData


def _fit(model: EngagementMLP, features: np.ndarray, labels: np.ndarray,
         holdout_features: np.ndarray, holdout_labels: np.ndarray, *, epochs: int,
         batch_size: int, learning_rate: float, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    x = torch.as_tensor(features)
    y = torch.as_tensor(labels)
    mean, std = x.mean(dim=0), x.std(dim=0)
    model.mean.copy_(mean)
    model.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    with torch.no_grad():  # start at the background rate
        bias = float(np.log(max(labels.mean(), 1e-6) / max(1 - labels.mean(), 1e-6)))
        model.net[-1].bias.fill_(bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    background = float(labels.mean())
    best, best_state, history = float("inf"), None, []
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.as_tensor(rng.permutation(len(x)))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            p = torch.sigmoid(model(torch.as_tensor(holdout_features))).numpy()
        ne = normalized_entropy(p, holdout_labels, background)
        history.append({"epoch": epoch, "holdout_ne": ne})
        if ne < best:
            best = ne
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _subset(slates: Slates, mask: np.ndarray) -> Slates:
    return Slates(slates.pointwise[mask], slates.contextual[mask], slates.labels[mask],
                  slates.row[mask], slates.session[mask], slates.similarity[mask])


def train_reranker(run_dir: str | Path, config: RerankConfig | None = None, *,
                   model_name: str = "model", out_dir: str | Path | None = None,
                   **overrides) -> dict:
    """Train both models on validation-period slates; save to ``RUN_DIR/rerank``.

    ``config``: the ``[rerank]`` settings (default: the run's configuration, else the
    defaults); ``overrides`` replace single fields of it (``epochs=1``); an unknown name is
    refused. The settings used are recorded in the manifest (``config.rerank``) and in the
    ``rerank`` summary.
    """
    started = time.perf_counter()
    base = config if config is not None else RunData(run_dir).config.rerank
    settings = RerankConfig.model_validate({**base.model_dump(), **overrides})
    run = RunData(run_dir)
    slate_size, context_size, seed = settings.slate_size, settings.context_size, settings.seed
    alpha = settings.alpha
    # the re-ranker learns on the model's own scores (what caviar_eval scores it with)
    system = RankedLists.load(run_dir, model_name=model_name, content_blend=0.0,
                              ease_blend=0.0)
    loaded = load_content(run, "text")
    if loaded is not None:
        content, ok = loaded
        source = "text content embeddings"
    else:
        content = system.embeddings[system.head]
        ok = np.ones(len(content), dtype=bool)
        source = f"main model head {system.head} (no text content)"
    space = build_item_space(content, ok, run.candidate_frequency, dim=settings.dim,
                             n_topics=settings.n_topics, seed=seed)
    reranker = ContextualReranker(space, context_size)

    triggers = slate_triggers(period_sessions(run, "valid"), context_size,
                              settings.max_triggers, seed)
    if len(triggers.triggers) == 0:
        raise ValueError("no validation-period session has two timestamp groups: no slates")
    slates = build_slates(reranker, system, triggers, slate_size, alpha=alpha)
    sessions = np.unique(slates.session)
    held = np.random.default_rng(seed).choice(sessions, max(1, len(sessions) // 10),
                                              replace=False)
    holdout_mask = np.isin(slates.session, held)
    train, holdout = _subset(slates, ~holdout_mask), _subset(slates, holdout_mask)
    common = dict(epochs=settings.epochs, batch_size=settings.batch_size,
                  learning_rate=settings.learning_rate, seed=seed)
    history_contextual = _fit(reranker.contextual, train.contextual, train.labels,
                              holdout.contextual, holdout.labels, **common)
    history_pointwise = _fit(reranker.pointwise, train.pointwise, train.labels,
                             holdout.pointwise, holdout.labels, **common)
    summary = {
        "model_name": model_name, "config": settings.model_dump(mode="json"), "alpha": alpha,
        "slate_size": slate_size,
        "context_size": context_size, "dim": space.dim,
        "derived_topics": int(space.topics.max() + 1), "item_vectors": source,
        "training_period": "valid (test-period sessions never read)",
        "slates": int(len(np.unique(slates.row))), "slots": int(len(slates.labels)),
        "positive_rate": float(slates.labels.mean()),
        "holdout_sessions": int(len(held)),
        "history": {"contextual": history_contextual, "pointwise": history_pointwise}}
    summary["default"] = diversify_by_default_verdict(
        reranker, system, np.asarray(triggers.triggers)[np.unique(holdout.row)], alpha,
        history_contextual, history_pointwise)
    summary["seconds"] = time.perf_counter() - started
    reranker.meta = summary
    reranker.save(out_dir or reranker_dir(run_dir))
    if out_dir is None:
        recorded = dict(read_manifest(run.run_dir)["config"])
        recorded["rerank"] = settings.model_dump(mode="json")
        update_manifest(run.run_dir, "config", recorded)
        update_manifest(run.run_dir, "rerank", summary)
    return summary


def diversify_by_default_verdict(reranker: ContextualReranker, system: RankedLists,
                                 triggers: np.ndarray, alpha: float | None,
                                 history_contextual: list[dict], history_pointwise: list[dict],
                                 page_size: int = 10, window: int = 20) -> dict:
    """Whether the re-ranker earns being on by default, on the held-out validation sessions:
    its contextual model's normalized entropy must beat the point-wise baseline's (CAViaR's
    claim) **and** the diversified first page must hold more distinct derived topics (k-means
    clusters of content; the evaluation topics are never read) than the main ranking's. relrec
    keeps ``diversify`` a request option either way (off unless asked); this is the
    recommendation, with its numbers."""
    contextual_ne = min(entry["holdout_ne"] for entry in history_contextual)
    pointwise_ne = min(entry["holdout_ne"] for entry in history_pointwise)
    if len(triggers):
        scores, main = system._main_search(triggers, page_size + window, alpha)
        _, placed = rerank_pages(reranker, triggers, main, scores, pages=1,
                                 page_size=page_size, window=window)
        main_topics = _distinct_topics(main[:, :page_size], reranker.space.topics)
        placed_topics = _distinct_topics(placed, reranker.space.topics)
    else:
        main_topics = placed_topics = float("nan")
    better_ne = contextual_ne < pointwise_ne
    more_diverse = bool(placed_topics > main_topics)
    return {"recommended": bool(better_ne and more_diverse),
            "rule": "holdout NE of the contextual model < the point-wise baseline's and more "
                    f"distinct derived topics in the first {page_size} (validation sessions)",
            "holdout_ne": {"contextual": contextual_ne, "pointwise": pointwise_ne},
            "distinct_derived_topics": {"main": main_topics, "diversified": placed_topics},
            "triggers": int(len(triggers))}


def _distinct_topics(lists: np.ndarray, topics: np.ndarray) -> float:
    """Mean number of distinct derived topics per list (−1 pads ignored)."""
    counts = [len(set(topics[row[row >= 0]].tolist())) for row in lists]
    return float(np.mean(counts)) if counts else float("nan")
