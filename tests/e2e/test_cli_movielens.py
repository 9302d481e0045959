"""End to end through the public CLI on a small subset of the real ml-latest-small."""

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from relrec.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def subset_files(movielens_small_dir, tmp_path_factory):
    """The 40 most active users' ratings plus all movies (titles only; genres as topics)."""
    directory = tmp_path_factory.mktemp("ml-subset")
    ratings = pd.read_csv(movielens_small_dir / "ratings.csv", dtype=str)
    ratings = ratings[ratings["movieId"] != "999999"]  # the one planted unknown id
    users = ratings["userId"].value_counts().index[:40]
    subset = ratings[ratings["userId"].isin(users)].rename(
        columns={"userId": "user_id", "movieId": "item_id", "rating": "weight"})
    subset.to_csv(directory / "interactions.csv", index=False)
    movies = pd.read_csv(movielens_small_dir / "movies.csv", dtype=str)
    items = pd.DataFrame({"item_id": movies["movieId"], "title": movies["title"],
                          "topics": movies["genres"].replace("(no genres listed)", "")})
    items.to_csv(directory / "items.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def trained_run(subset_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "ml"
    result = runner.invoke(app, ["prepare", "--interactions", str(subset_files / "interactions.csv"),
                                 "--items", str(subset_files / "items.csv"), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(run_dir), "--preset", "cf", "--epochs", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    return run_dir


def test_prepare_writes_manifest_and_tables(trained_run):
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["rows"]["items"] == 9742
    assert manifest["pairs"]["train_pairs_total"] > 10_000
    # the counts in the manifest are the rows of the tables written beside it
    test_pairs = pq.read_table(trained_run / "pairs" / "test_pairs.parquet").num_rows
    assert manifest["pairs"]["test_pairs"] == test_pairs > 1_000
    assert set(manifest["inputs"]) == {"interactions", "items"}
    assert len(manifest["inputs"]["interactions"]["sha256"]) == 64
    # early stopping keeps the first epoch with the best validation recall (2 epochs run)
    history = json.loads((trained_run / "model" / "training.json").read_text())["history"]
    recalls = [record[f"valid_recall@{manifest['train']['early_stopping_k']}"]
               for record in history]
    assert manifest["train"]["epochs_run"] == len(history) == 2
    assert manifest["train"]["best_epoch"] == recalls.index(max(recalls))
    assert manifest["train"]["best_valid_recall"] == pytest.approx(max(recalls))
    assert (trained_run / "model" / "weights.safetensors").exists()


def test_evaluate_json_has_intervals_for_model_and_peers(trained_run):
    result = runner.invoke(app, ["evaluate", str(trained_run), "--json", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    for system in ("model", "popularity", "covisitation"):
        recall = metrics["systems"][system]["all"]["recall@10"]
        # a real interval: it holds the point estimate and has width (users are resampled)
        assert recall["low"] <= recall["value"] <= recall["high"], (system, recall)
        assert recall["high"] - recall["low"] > 0, (system, recall)
        for key in ("topic_match_rate@10", "popular_share@10", "novelty@10", "coverage@10",
                    "ndcg@100"):
            assert key in metrics["systems"][system]["all"]
        assert "popular_triggers" in metrics["systems"][system]
    # the trained model beats a constant popularity list on engagement
    model = metrics["systems"]["model"]["all"]["recall@50"]["value"]
    assert model > metrics["systems"]["popularity"]["all"]["recall@50"]["value"]
    paired = metrics["paired_differences"]["model - covisitation"]["all"]["recall@10"]
    model_10 = metrics["systems"]["model"]["all"]["recall@10"]["value"]
    covisitation_10 = metrics["systems"]["covisitation"]["all"]["recall@10"]["value"]
    assert paired["value"] == pytest.approx(model_10 - covisitation_10)
    assert paired["low"] <= paired["value"] <= paired["high"] and paired["high"] > paired["low"]
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert metrics["split"] == "valid" and metrics["test_reads"] is None  # sealed by default
    assert "evaluation_test" not in manifest and "test_reads" not in manifest
    assert manifest["evaluation_valid"]["systems"]["model"]["all"]["recall@10"] == \
        metrics["systems"]["model"]["all"]["recall@10"]
    assert metrics["users"] == metrics["systems"]["model"]["all"]["counts"]["users"] > 0


def test_test_period_reads_are_counted_in_the_manifest_and_a_ledger(trained_run, tmp_path,
                                                                  monkeypatch):
    import shutil

    ledger = tmp_path / "ledger.json"
    monkeypatch.setenv("RELREC_TEST_LEDGER", str(ledger))
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    for expected in (1, 2):
        result = runner.invoke(app, ["evaluate", str(copy), "--test", "--no-peers",
                                     "--bootstrap", "20"])
        assert result.exit_code == 0, result.output
        assert f"test period read {expected} time(s)" in " ".join(result.output.split())
        assert "users" in result.output
        manifest = json.loads((copy / "manifest.json").read_text())
        assert manifest["test_reads"]["count"] == expected
        assert manifest["test_reads"]["data_reads"] == expected
    # another run folder of the same data and split (a fresh manifest) shares the ledger count
    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved)
    result = runner.invoke(app, ["evaluate", str(moved), "--test", "--json", "--no-peers",
                                 "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["test_reads"] == {"run": 1, "data": 3,
                                                       "ledger": str(ledger)}
    # the library refuses the test period unless it was opened (and counted)
    from relrec.config import EvaluateConfig
    from relrec.evaluate.evaluation import segment_pairs
    from relrec.evaluate.sealed import SealedTestPeriod
    from relrec.run import RunData

    with pytest.raises(SealedTestPeriod, match="sealed"):
        segment_pairs(RunData(trained_run), "test", EvaluateConfig())


def test_export_and_recommend(trained_run, tmp_path):
    out = tmp_path / "related.parquet"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(out), "--k", "5",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pandas()
    assert list(table.columns) == ["trigger", "item", "rank", "score"]
    assert (table["trigger"] != table["item"]).all()
    assert table.groupby("trigger")["rank"].max().max() == 5
    assert table["trigger"].map(type).eq(str).all()
    result = runner.invoke(app, ["recommend", str(trained_run), "1", "--k", "5"])
    assert result.exit_code == 0, result.output
    assert "Toy Story" in result.output
    result = runner.invoke(app, ["recommend", str(trained_run), "no-such-item"])
    assert result.exit_code == 2 and "unknown item id" in result.output


def test_similar_items_library_call_matches_export(trained_run, tmp_path):
    from relrec.related import RelatedItems

    model = RelatedItems.load(trained_run)
    ids, scores = model.similar_items(["1", "260"], k=5)
    assert ids.shape == (2, 5) and scores.shape == (2, 5)
    assert "1" not in ids[0] and (scores[:, :-1] >= scores[:, 1:]).all()


def test_console_entry_point_runs_without_traceback(trained_run):
    completed = subprocess.run([sys.executable, "-m", "relrec.cli", "recommend", str(trained_run),
                                "260", "--k", "3"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "120"})
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr


def test_evaluate_against_another_run_is_paired_and_refuses_other_data(trained_run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    result = runner.invoke(app, ["train", str(other), "--preset", "cf", "--epochs", "1",
                                 "--seed", "7", "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(trained_run), "--json", "--bootstrap", "50",
                                 "--no-peers", "--against", str(other)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    mine = metrics["systems"]["model"]["all"]["recall@50"]["value"]
    theirs = metrics["systems"]["run:other"]["all"]["recall@50"]["value"]
    difference = metrics["paired_differences"]["model - run:other"]["all"]["recall@50"]
    assert difference["value"] == pytest.approx(mine - theirs)
    assert difference["low"] <= difference["value"] <= difference["high"]
    assert difference["high"] - difference["low"] > 0  # two seeds' lists differ per user

    result = runner.invoke(app, ["evaluate", str(trained_run), "--no-peers", "--bootstrap", "20",
                                 "--against", str(other), "--against", str(other)])
    assert result.exit_code == 2 and "given twice" in result.output

    # a run whose held-out pairs differ is refused with a one-line error, not scored unpaired
    valid_pairs = other / "pairs" / "valid_pairs.parquet"
    pd.read_parquet(valid_pairs).iloc[1:].to_parquet(valid_pairs, index=False)
    # on the test period the other run is checked before it is unsealed, and never counted
    test_pairs = other / "pairs" / "test_pairs.parquet"
    pd.read_parquet(test_pairs).iloc[1:].to_parquet(test_pairs, index=False)
    result = runner.invoke(app, ["evaluate", str(trained_run), "--test", "--bootstrap", "20",
                                 "--no-peers", "--against", str(other)])
    assert result.exit_code == 2 and "test pairs differ" in result.output
    assert "test_reads" not in json.loads((other / "manifest.json").read_text())
    result = runner.invoke(app, ["evaluate", str(trained_run), "--bootstrap", "20",
                                 "--no-peers", "--against", str(other)])
    assert result.exit_code == 2
    assert "not the same prepared data" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", str(trained_run), "--against", str(tmp_path)])
    assert result.exit_code == 2 and "no trained model" in result.output
