"""The paper's mechanisms on planted data (known answers) and the study runner.

MTL: sessions stay on topic except for 30% "autoplay" jumps to popular items of any topic; the
text vectors carry the topic noisily (the teacher never sees the labels).

OPC: with a *uniform* autoplay rate, popular and niche triggers' pairs are equally noisy and
OPC's reweighting has no systematic effect (it flipped sign with the initial weights). OPC
exists for the case where the behaviour behind popular triggers differs — "trending chains":
after a trending item the next engagement is another trending item of any topic 80% of the
time, while niche triggers stay on topic. Then down-weighting popular triggers (eq. 6-7) must
make the lists of the bottom-10% triggers more on-topic, for every initialisation tried."""

import json

import numpy as np
import pytest

from relrec.config import EvaluateConfig, RunConfig
from relrec.evaluate.bootstrap import paired_bootstrap_difference
from relrec.evaluate.sealed import open_test_period
from relrec.evaluate.evaluation import evaluate_system, paired_differences, segment_pairs
from relrec.evaluate.metrics import PerTrigger, popularity_masks, topic_match_rate_at_k
from relrec.studies.paper import run_paper_study
from relrec.related import RelatedItems
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config

BASE = {"max_epochs": 8, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20, "patience": 3}


@pytest.fixture(scope="module")
def planted_run(synthetic_run):
    run_dir, _ = synthetic_run(text=True, n_items=300, n_topics=10, n_users=700,
                               sessions_per_user=4, session_length=8, autoplay_rate=0.3,
                               popularity_exponent=0.5, seed=2)
    return run_dir


@pytest.fixture(scope="module")
def trained(planted_run):
    config = RunConfig()
    evaluate = EvaluateConfig(n_bootstrap=300)
    run = RunData(planted_run)
    open_test_period(run, "pytest")
    segments = segment_pairs(run, "test", evaluate)
    out = {}
    for name, overrides in {"cf": {}, "mtl": {"w_sem": 100.0}}.items():
        config.train = resolve_train_config(RunConfig().train, "cf", {**BASE, **overrides})
        train_run(planted_run, config, progress=False, model_name=name)
        model = RelatedItems.load(planted_run, model_name=name)
        out[name] = evaluate_system(run, model, name, evaluate, "test", segments)
    return out, evaluate


def test_mtl_raises_topic_match_over_cf(trained):
    evaluations, config = trained
    difference = paired_differences(evaluations["mtl"], evaluations["cf"], config)["all"]
    assert difference["topic_match_rate@10"]["low"] > 0.03


@pytest.fixture(scope="module")
def trending_run(synthetic_run):
    run_dir, _ = synthetic_run(n_items=1000, n_topics=10, n_users=1500, sessions_per_user=4,
                               session_length=8, autoplay_rate=0.1, trending_autoplay_rate=0.8,
                               popularity_exponent=1.0, seed=2)
    return run_dir


def test_opc_raises_topic_match_of_bottom_decile_triggers(trending_run):
    """Topic match@10 of the lists of *every* bottom-10% trigger (by training frequency; a
    list property, so no held-out target is needed), OPC − no OPC, paired over triggers.

    Both models train the same 20 epochs and keep the last: bottom-decile topic match rises
    with training length while validation recall is flat within noise, so under early
    stopping the comparison measures which epoch each model happened to stop at (it swung
    from −13 to +17 points between inits). Three inits, none negative, pooled above 0."""
    run = RunData(trending_run)
    _, bottom = popularity_masks(run.trigger_frequency, 0.01, 0.10, eligible=run.in_train)
    triggers = np.flatnonzero(bottom)
    assert len(triggers) >= 90
    pooled = {"cf": [], "cf_opc": []}
    for seed in (0, 1, 2):
        topic_match = {}
        for name, overrides in {"cf": {}, "cf_opc": {"opc": True}}.items():
            config = RunConfig()
            config.train = resolve_train_config(config.train, "cf", {
                **BASE, **overrides, "seed": seed, "max_epochs": 20, "keep_epoch": "last",
                # 20 full epochs at a constant rate: the effect grows with training length
                # (the default cosine schedule stops after 3 epochs: +1.4 [-0.6, +3.3] points)
                "learning_rate_schedule": "constant", "learning_rate": 3e-3})
            train_run(trending_run, config, progress=False, model_name=f"{name}_{seed}")
            model = RelatedItems.load(trending_run, model_name=f"{name}_{seed}")
            ranked = model.ranked_indices(run.item_ids[triggers], 10)
            topic_match[name] = topic_match_rate_at_k(ranked, triggers, run.topic_matrix, 10)
            pooled[name].append(topic_match[name])
        # never below CF at any init; seed 2 sits at +2.5 or 0.0 depending on the CPU kernel
        # level (measured on two machines), so the pooled interval carries the claim
        assert topic_match["cf_opc"].value() >= topic_match["cf"].value(), seed
    stacked = {name: PerTrigger(np.concatenate([m.numerator for m in parts]),
                                np.concatenate([m.denominator for m in parts]))
               for name, parts in pooled.items()}
    clusters = np.tile(triggers, 3)  # the same trigger under three inits moves together
    difference = paired_bootstrap_difference(stacked["cf_opc"], stacked["cf"], 500, 0,
                                             clusters=clusters)
    assert difference.low > 0, difference


def test_semantic_threshold_rule_is_recorded(planted_run, trained):
    manifest = json.loads((planted_run / "manifest.json").read_text())
    labels = manifest["train:mtl"]["notes"]["semantic_labels"]
    assert 0 < labels["positive_share_of_pairs"] < 1
    assert "95th percentile" in labels["rule"]


def test_paper_study_writes_report_with_intervals(planted_run):
    config = RunConfig()
    config.train = config.train.model_copy(update={**BASE, "max_epochs": 2})
    config.evaluate.n_bootstrap = 50
    result = run_paper_study(planted_run, config, systems=["cf", "mtl 1:10", "content kNN"],
                             progress=False)
    names = [row.system for row in result.rows]
    assert names[:3] == ["cf", "content kNN", "mtl 1:10"]
    assert {"popularity", "covisitation", "als", "item2vec"} <= set(names)
    directory = planted_run / "study" / "paper"
    for name in ("results.json", "report.md", "report.html", "tradeoff.png", "buckets.png"):
        assert (directory / name).stat().st_size > 0
    row = result.row("mtl 1:10")
    # the paired interval is of (row - cf) on the same users: it holds the difference of the
    # two rows' point estimates and has width
    difference = row.paired_vs_reference["recall@10"]
    expected = (row.summary["all"]["recall@10"]["value"]
                - result.row("cf").summary["all"]["recall@10"]["value"])
    assert difference["value"] == pytest.approx(expected, abs=1e-9)
    assert difference["low"] <= difference["value"] <= difference["high"], difference
    assert difference["high"] - difference["low"] > 0, difference
    assert result.row("cf").paired_vs_reference is None  # the reference is not paired with itself
    report = (directory / "report.md").read_text()
    assert "| mtl 1:10 |" in report and "[" in report
