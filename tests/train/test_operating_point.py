"""``--preset auto``: the rule (pure), and the search on planted data with known answers —
content that carries the topic must be used (a positive control: a search that always
returns ``cf`` fails), content that is pure noise must cost no engagement."""

import json

import numpy as np
import pytest

from relrec.config import RunConfig
from relrec.content.stage import write_content
from relrec.data.prepare import prepare_run, write_refit_run
from relrec.data.synthetic import generate
from relrec.evaluate.peers import EASE
from relrec.rerank.lists import BlendGrid, RankedLists
from relrec.rerank.neighbours import NEIGHBOURS_FILE
from relrec.related import RelatedItems
from relrec.run import RunData
from relrec.train.neighbour_table import NEIGHBOURS, fit_neighbour_table
from relrec.train.operating_point import EASE_WEIGHTS, candidate_family, choose_operating_point
from relrec.train.pipeline import train_preset


def _row(name, recall, topic=None):
    row = {"name": name, "recall@10": {"value": recall}}
    if topic is not None:
        row["topic_match_rate@10"] = {"value": topic}
    return row


def test_rule_takes_the_most_on_topic_candidate_within_the_recall_tolerance():
    rows = [_row("cf", 0.100, 0.60), _row("a", 0.099, 0.70), _row("b", 0.097, 0.90),
            _row("c", 0.120, 0.65)]
    choice = choose_operating_point(rows, tolerance=0.02)
    assert choice["name"] == "a"  # b loses 3% of cf's recall: not eligible at 2%
    assert choice["eligible"] == ["cf", "a", "c"]
    assert choose_operating_point(rows, tolerance=0.05)["name"] == "b"
    assert choose_operating_point(rows, tolerance=0.0)["name"] == "c"


def test_rule_falls_back_to_cf_and_prefers_engagement_when_asked():
    rows = [_row("cf", 0.100, 0.60), _row("worse", 0.050, 0.99)]
    assert choose_operating_point(rows)["name"] == "cf"
    rows = [_row("cf", 0.100, 0.60), _row("on topic", 0.101, 0.70),
            _row("engaging", 0.130, 0.595), _row("off topic", 0.200, 0.40)]
    choice = choose_operating_point(rows, prefer="engagement", tolerance=0.02)
    assert choice["name"] == "engaging"  # 0.595 ≥ 0.60·0.98; "off topic" is not eligible
    assert "topic match@10 ≥ cf's" in choice["rule"]


def test_rule_without_topics_uses_recall_and_refuses_bad_arguments():
    rows = [_row("cf", 0.10), _row("x", 0.12)]
    assert choose_operating_point(rows)["name"] == "x"
    with pytest.raises(ValueError, match="tolerance"):
        choose_operating_point(rows, tolerance=1.5)
    with pytest.raises(ValueError, match="prefer"):
        choose_operating_point([_row("cf", 0.1, 0.5)], prefer="speed")
    with pytest.raises(ValueError, match="'cf' row"):
        choose_operating_point([_row("x", 0.1, 0.5)])


def test_family_depends_on_the_content_the_run_has():
    assert [c.name for c in candidate_family(set())] == ["cf"]
    names = [c.name for c in candidate_family({"text", "visual"})]
    assert names[0] == "cf" and "cf + text + visual" in names and "full (paper)" in names
    assert all("visual" not in c.name for c in candidate_family({"text"}))


SEARCH = {"max_epochs": 12, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
          "hidden_dims": [64], "early_stopping_k": 20}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Thousands of users; sessions on topic except 25% autoplay jumps to popular items."""
    return generate(n_items=500, n_topics=10, n_users=2500, sessions_per_user=4,
                    session_length=8, autoplay_rate=0.25, popularity_exponent=0.6, seed=3,
                    text_noise=0.3)


def _search(tmp_path_factory, dataset, vectors, name):
    run_dir = tmp_path_factory.mktemp(name) / "run"
    prepare_run(run_dir, RunConfig(), interactions=dataset.interactions, items=dataset.items)
    write_content(RunData(run_dir), "text", vectors, source="synthetic")
    config = RunConfig()
    config.evaluate.n_bootstrap = 100
    # a generous budget: on a shared CI machine one slow cf epoch must not cut the family
    config.train.auto_budget = 12.0
    summary = train_preset(run_dir, config, preset="auto", overrides=SEARCH, progress=False)
    rows = {row["name"]: row for row in summary["operating_point"]["rows"]
            if "skipped" not in row}
    return run_dir, summary["operating_point"], rows


@pytest.fixture(scope="module")
def signal_search(tmp_path_factory, planted):
    """The search on item text that carries the topic (shared by the tests that read it)."""
    return _search(tmp_path_factory, planted, planted.content_vectors, "signal")


def test_auto_uses_content_that_carries_the_topic(signal_search):
    run_dir, record, rows = signal_search
    chosen, cf = rows[record["chosen"]], rows["cf"]
    assert record["candidate"] != "cf"
    topic = lambda row: row["topic_match_rate@10"]["value"]  # noqa: E731
    assert topic(chosen) >= topic(cf) + 0.05
    assert chosen["recall@10"]["value"] >= 0.98 * cf["recall@10"]["value"]
    # what was chosen is what is served: RUN/model, its blend in the run's [rank]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["operating_point"]["chosen"] == record["chosen"]
    assert manifest["config"]["rank"]["content_blend"] == chosen["content_blend"]
    model = RelatedItems.load(run_dir)
    assert model.rank.content_blend == chosen["content_blend"]
    assert model.tower_.content_modalities == (("text",) if record["candidate"] != "cf" else ())
    ids, _ = model.similar_items([model.run.item_ids[0]], 5)
    assert ids.shape == (1, 5)
    # served: the chosen configuration refit on train + valid for the epochs the search kept
    refit = record["refit"]
    assert refit["epochs"] == chosen["best_epoch"] + 1
    assert refit["train_pairs_distinct"] > manifest["pairs"]["train_pairs_distinct"]
    known = np.load(run_dir / "model" / "known_items.npy")
    assert known.sum() >= RunData(run_dir).in_train.sum()
    assert (run_dir / chosen["model"] / "weights.safetensors").read_bytes() != (
        run_dir / "model" / "weights.safetensors").read_bytes()


def _standardize(values, usable):
    count = max(usable.sum(), 1)
    mean = np.where(usable, values, 0).sum() / count
    spread = np.sqrt((np.where(usable, values - mean, 0) ** 2).sum() / count)
    return np.where(usable, (values - mean) / spread, 0.0) if spread > 1e-12 else \
        np.zeros_like(values)


def _ease_blend_reference(run, model, ease, weight, k=10, pool=200):
    """Lists of ``z(model) + weight · z(EASE)`` by brute force: every inner product, the
    pool cut by hand, each trigger's EASE top-``NEIGHBOURS`` from the dense weights."""
    vectors = model.embeddings[model.head].astype(np.float64)
    local = {int(item): position for position, item in enumerate(ease.items_)}
    keep = min(NEIGHBOURS, len(ease.items_) - 1)
    lists, scores = [], []
    for trigger in range(run.n_items):
        raw = vectors @ vectors[trigger]
        raw[~model.eligible] = -np.inf
        raw[trigger] = -np.inf
        candidates = np.argsort(-raw, kind="stable")[:pool]
        values = np.zeros(len(candidates))
        usable = np.array([trigger in local and int(c) in local for c in candidates])
        if trigger in local:
            row = ease.weights_[local[trigger]].astype(np.float64).copy()
            row[local[trigger]] = -np.inf
            top = set(ease.items_[np.argsort(-row, kind="stable")[:keep]].tolist())
            values = np.array([row[local[int(c)]] if int(c) in top else 0.0
                               for c in candidates])
        blended = _standardize(raw[candidates], np.ones(len(candidates), bool)) + \
            weight * _standardize(values, usable)
        order = np.argsort(-blended, kind="stable")[:k]
        lists.append(candidates[order])
        scores.append(blended[order])
    return np.array(lists), np.array(scores)


def test_model_plus_ease_rows_match_an_independent_reference(signal_search):
    """The search scores "model + EASE" rows with the validation-tuned λ; a candidate folder
    with its neighbour table ranks exactly as a brute-force NumPy reference of the blend."""
    run_dir, record, rows = signal_search
    ease = record["ease"]
    assert ease["family"] == "ease_users" and ease["params"]["l2"] > 0
    assert {f"cf, EASE {weight:g}" for weight in EASE_WEIGHTS} <= set(rows)
    assert (run_dir / rows["cf"]["model"] / NEIGHBOURS_FILE).is_file()
    run = RunData(run_dir)
    model = RankedLists.load(run_dir, model_name=rows["cf"]["model"], content_blend=0.0,
                             ease_blend=1.0)
    peer = EASE(rows="users", l2=ease["params"]["l2"]).fit(run)
    expected_items, expected_scores = _ease_blend_reference(run, model, peer, 1.0)
    scores, items = model._search(np.arange(run.n_items), 10)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    assert (items == expected_items).mean() > 0.99  # ties may swap neighbours
    # the search's scorer (one pool, many weights) ranks as the served object does
    grid = BlendGrid(RankedLists.load(run_dir, model_name=rows["cf"]["model"],
                                      content_blend=0.0, ease_blend=0.0))
    grid.lists.neighbours = model.neighbours
    blended = RankedLists.load(run_dir, model_name=rows["cf"]["model"], content_blend=0.5,
                               ease_blend=1.0)
    for weights in ({"content_blend": 0.5, "ease_blend": 1.0}, {"content_blend": 0.0,
                                                                "ease_blend": 1.0}):
        grid.weights = weights
        blended.rank = blended.rank.model_copy(update=weights)
        for got, expected in zip(grid._search(np.arange(run.n_items), 10),
                                 blended._search(np.arange(run.n_items), 10)):
            np.testing.assert_array_equal(got, expected)
    # the served model carries a table exactly when the chosen row blends EASE
    chosen = rows[record["chosen"]]
    served_table = run_dir / "model" / NEIGHBOURS_FILE
    assert served_table.is_file() == (chosen["ease_blend"] > 0)
    assert RelatedItems.load(run_dir).rank.ease_blend == chosen["ease_blend"]


def test_the_refit_table_learns_the_validation_period(tmp_path, planted):
    run_dir = tmp_path / "run"
    prepare_run(run_dir, RunConfig(), interactions=planted.interactions, items=planted.items)
    write_refit_run(run_dir, tmp_path / "refit", RunConfig())
    scored = fit_neighbour_table(RunData(run_dir), "ease_users", {"l2": 200.0})
    refit = fit_neighbour_table(RunData(tmp_path / "refit"), "ease_users", {"l2": 200.0})
    assert refit.settings["training_end"] > scored.settings["training_end"]
    assert refit.fitted.sum() >= scored.fitted.sum()
    assert not np.array_equal(refit.weights, scored.weights)


def test_refit_run_trains_on_train_and_valid_and_never_the_test_period(tmp_path, planted):
    run_dir = tmp_path / "run"
    prepare_run(run_dir, RunConfig(), interactions=planted.interactions, items=planted.items)
    run = RunData(run_dir)
    refit = write_refit_run(run_dir, tmp_path / "refit", RunConfig())
    refit_run = RunData(tmp_path / "refit")
    split = run.manifest["split"]
    assert split["valid_start"] < refit["refit_split"]["valid_start"] < split["test_start"]
    timestamps = run._parquet("data/interactions.parquet")["timestamp"]
    trained_on = int(refit_run.item_stats["train_interactions"].sum())
    assert trained_on == int((timestamps < refit["refit_split"]["valid_start"]).sum())
    assert trained_on > int(run.item_stats["train_interactions"].sum())
    assert len(refit_run.train_pairs) > len(run.train_pairs)
    assert refit["pairs"]["training_periods"] == "train + valid"
    assert len(refit_run.test_pairs) == 0  # the test period is not part of a refit run
    assert refit_run.in_train.sum() >= run.in_train.sum()


def test_auto_with_pure_noise_content_keeps_cf_recall(tmp_path_factory, planted):
    noise = np.random.default_rng(0).normal(size=planted.content_vectors.shape)
    _, record, rows = _search(tmp_path_factory, planted, noise.astype(np.float32), "noise")
    cf_recall = rows["cf"]["recall@10"]["value"]
    # the rule's guarantee: never below cf by more than the tolerance (2% of cf's recall)
    assert rows[record["chosen"]]["recall@10"]["value"] >= 0.98 * cf_recall
    # the content candidates themselves (their ranking alone) stay within ±0.5 points of cf
    for name, row in rows.items():
        # (the semantic task's noise labels are dropped: their co-engagement lift is ~1)
        if row["content_blend"] == 0 and row["ease_blend"] == 0 and "paper" not in name:
            assert abs(row["recall@10"]["value"] - cf_recall) <= 0.005, name
