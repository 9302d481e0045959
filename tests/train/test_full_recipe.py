"""``--preset full``: the paper's recipe with ``w_sem`` and the pseudo-label threshold taken
from validation (issue 13, item 5): the choice is bounded by ``cf``'s validation recall, the
pseudo-labels' agreement with co-engagement is reported, the chosen model is what is served."""

import json
import shutil

from relrec.config import RunConfig
from relrec.related import RelatedItems
from relrec.train.operating_point import (FULL_TOLERANCE, FULL_W_SEM,
                                          choose_operating_point)
from relrec.train.pipeline import train_preset

SMALL = {"max_epochs": 4, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
         "hidden_dims": [64], "early_stopping_k": 20}


def _row(name, recall, topic):
    return {"name": name, "recall@10": {"value": recall},
            "topic_match_rate@10": {"value": topic}}


def test_rule_without_the_reference_as_candidate_says_when_nothing_reaches_the_floor():
    rows = [_row("cf", 0.10, 0.60), _row("w 1", 0.095, 0.65), _row("w 10", 0.091, 0.70),
            _row("w 100", 0.05, 0.90)]
    choice = choose_operating_point(rows, 0.10, reference_eligible=False)
    assert choice["name"] == "w 10" and choice["met"] and "cf" not in choice["eligible"]
    rows = [_row("cf", 0.10, 0.60), _row("w 1", 0.08, 0.65), _row("w 10", 0.06, 0.70)]
    choice = choose_operating_point(rows, 0.10, reference_eligible=False)
    assert choice["name"] == "w 1" and not choice["met"] and "none reached it" in choice["rule"]


def test_full_takes_w_sem_and_threshold_from_validation(synthetic_run, tmp_path):
    source, _ = synthetic_run(text=True, n_items=300, n_topics=10, n_users=700,
                              sessions_per_user=4, session_length=8, autoplay_rate=0.3,
                              popularity_exponent=0.5, seed=2)
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    config = RunConfig()
    config.evaluate.n_bootstrap = 50
    notes = []
    summary = train_preset(run_dir, config, preset="full", overrides=SMALL, progress=False,
                           say=notes.append)
    record = summary["full_recipe"]
    names = [row["name"] for row in record["rows"]]
    assert names[:len(FULL_W_SEM) + 1] == ["cf"] + [f"full, w_sem {w:g}" for w in FULL_W_SEM]
    assert names[-1].endswith("median threshold") and record["split"] == "valid"
    assert record["w_sem"] in FULL_W_SEM
    rows = {row["name"]: row for row in record["rows"]}
    cf = rows["cf"]["recall@10"]["value"]
    chosen = rows[record["chosen"]]
    # the bound of item 5 holds on data whose text carries the topic
    assert record["met"] and record["recall_loss_vs_cf"] <= FULL_TOLERANCE
    assert chosen["recall@10"]["value"] >= (1 - FULL_TOLERANCE) * cf
    # two threshold rules were tried; each full row reports its pseudo-labels' agreement
    rules = {row["semantic_labels"]["rule"].split(":")[0] for row in record["rows"][1:]}
    assert rules == {"random-baseline rule", "quantile rule"}
    agreement = record["pseudo_label_agreement"]
    assert agreement["co_engagement_lift"] > 1  # on-topic sessions: related more than random
    assert any("pseudo-labels call" in line for line in notes)
    # what was chosen is what is trained into RUN/model and recorded as the run's train
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["train"]["train_config"]["w_sem"] == record["w_sem"]
    assert manifest["train"]["train_config"]["opc"] and manifest["train"]["train_config"][
        "use_text"]
    served = json.loads((run_dir / "model" / "training.json").read_text())
    assert served["train_config"]["w_sem"] == record["w_sem"]
    model = RelatedItems.load(run_dir)
    ids, _ = model.similar_items([model.item_ids_[0]], k=5)
    assert ids.shape == (1, 5) and all(ids[0] != "")

    # an explicit w_sem is the user's: no search, the section is cleared
    summary = train_preset(run_dir, config, preset="full", overrides={**SMALL, "w_sem": 500.0},
                           progress=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "full_recipe" not in summary and not manifest.get("full_recipe")
    assert manifest["train"]["train_config"]["w_sem"] == 500.0
