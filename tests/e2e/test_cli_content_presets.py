"""The content presets on real data through the CLI: `train` computes the missing text and
poster embeddings itself (offline MiniLM and EfficientNet-Lite0), labels pairs by eq. 3 with
a recorded threshold rule, fuses the modalities and reweights by OPC."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from relrec.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def content_run(movielens_small_dir, posters_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ml-content")
    ratings = pd.read_csv(movielens_small_dir / "ratings.csv", dtype=str)
    counts = ratings["userId"].value_counts()
    users = counts[(counts > 100) & (counts < 400)].index[:15]
    subset = ratings[ratings["userId"].isin(users)]
    movies = pd.read_csv(movielens_small_dir / "movies.csv", dtype=str)
    tags = pd.read_csv(movielens_small_dir / "tags.csv", dtype=str)
    movies = movies[movies["movieId"].isin(subset["movieId"])]
    # dated tags go in as annotations, so that the content cut keeps later ones out
    tags = tags[tags["movieId"].isin(movies["movieId"])]
    tags.rename(columns={"movieId": "item_id", "userId": "user_id"})[
        ["item_id", "tag", "timestamp", "user_id"]].to_csv(directory / "annotations.csv",
                                                          index=False)
    items = pd.DataFrame({
        "item_id": movies["movieId"], "title": movies["title"],
        "topics": movies["genres"].replace("(no genres listed)", ""),
        "image": [str(posters_dir / f"{m}.jpg") if (posters_dir / f"{m}.jpg").exists() else ""
                  for m in movies["movieId"]],
    })
    subset.rename(columns={"userId": "user_id", "movieId": "item_id"}).to_csv(
        directory / "interactions.csv", index=False)
    items.to_csv(directory / "items.csv", index=False)
    run_dir = directory / "run"
    result = runner.invoke(app, ["prepare", "--interactions", str(directory / "interactions.csv"),
                                 "--items", str(directory / "items.csv"),
                                 "--annotations", str(directory / "annotations.csv"),
                                 "--images", str(posters_dir), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "manifest.json").read_text())["content_cut"][
        "annotations_held_back"] > 0
    return run_dir


def test_full_preset_trains_with_text_visual_mtl_and_opc(content_run):
    result = runner.invoke(app, ["train", str(content_run), "--preset", "full", "--epochs", "1",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((content_run / "manifest.json").read_text())
    train = manifest["train"]
    assert train["train_config"]["use_text"] and train["train_config"]["use_visual"]
    assert train["train_config"]["opc"] and train["train_config"]["w_sem"] in (1, 10, 100, 1000)
    # w_sem and the threshold were chosen on validation against cf; the choice is printed
    recipe = manifest["full_recipe"]
    assert recipe["w_sem"] == train["train_config"]["w_sem"] and recipe["split"] == "valid"
    assert "full: w_sem" in result.output and "pseudo-labels call" in result.output
    assert train["tower"]["text_dim"] == 384 and train["tower"]["visual_dim"] == 1280
    labels = train["notes"]["semantic_labels"]
    assert 0 < labels["positive_share_of_pairs"] < 1 and labels["threshold"] > 0
    content = manifest["content"]
    # every item with a poster file got a vector; every item without one is flagged
    items = pd.read_parquet(content_run / "data" / "items.parquet")
    with_poster = int((items["image"].notna() & (items["image"].astype(str) != "")).sum())
    assert 0 < with_poster < len(items)
    assert content["visual"]["items_with_content"] == with_poster
    assert content["visual"]["items_without_content"] == len(items) - with_poster
    result = runner.invoke(app, ["evaluate", str(content_run), "--json", "--bootstrap", "20",
                                 "--no-peers"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    # content inputs give cold items an embedding: cold pairs are scored, not dropped
    cold_pairs = manifest["pairs"]["valid_pairs_cold"]
    assert metrics["systems"]["model"]["cold"]["counts"]["pairs"] == cold_pairs > 0
    assert "recall@10" in metrics["systems"]["model"]["cold"]


def test_auto_preset_chooses_on_validation_and_balanced_is_its_alias(content_run):
    # the default preset: no --preset given
    result = runner.invoke(app, ["train", str(content_run), "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps lines at the terminal's width
    assert "auto:" in said and "one cf training" in said
    manifest = json.loads((content_run / "manifest.json").read_text())
    record = manifest["operating_point"]
    scored = [row for row in record["rows"] if "skipped" not in row]
    assert scored[0]["name"] == "cf" and record["split"] == "valid"
    assert record["chosen"] in [row["name"] for row in scored]
    assert manifest["config"]["rank"]["content_blend"] == record["content_blend"]
    assert record["modalities"] == ["text", "visual"]
    # every candidate's validation row is printed by `relrec evaluate`
    result = runner.invoke(app, ["evaluate", str(content_run), "--no-peers", "--bootstrap",
                                 "20"])
    assert result.exit_code == 0, result.output
    assert "operating point" in result.output
    result = runner.invoke(app, ["evaluate", str(content_run), "--no-peers", "--bootstrap",
                                 "20", "--json"])
    assert json.loads(result.output)["operating_point"]["chosen"] == record["chosen"]
    result = runner.invoke(app, ["train", str(content_run), "--preset", "balanced",
                                 "--epochs", "1", "--tolerance", "0.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "alias of 'auto'" in result.output
    assert json.loads((content_run / "manifest.json").read_text())[
        "operating_point"]["tolerance"] == 0.5
    result = runner.invoke(app, ["train", str(content_run), "--prefer", "speed",
                                 "--no-progress"])
    assert result.exit_code == 2 and "auto_prefer" in result.output


def test_tune_blend_and_recommend_on_a_content_model(content_run):
    result = runner.invoke(app, ["train", str(content_run), "--preset", "full", "--epochs", "1",
                                 "--w-sem", "500", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "full: w_sem" not in result.output  # an explicit w_sem is not searched
    result = runner.invoke(app, ["tune-blend", str(content_run), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((content_run / "manifest.json").read_text())
    chosen = manifest["rank_tuning"]["chosen"]
    assert manifest["config"]["rank"]["content_blend"] == chosen
    assert [row["content_blend"] for row in manifest["rank_tuning"]["rows"]][0] == 0.0

    result = runner.invoke(app, ["tune-blend", str(content_run), "--weight", "0.5",
                                 "--modality", "text", "--modality", "visual", "--no-apply",
                                 "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert "not applied" in result.output
    manifest = json.loads((content_run / "manifest.json").read_text())
    assert manifest["config"]["rank"]["content_blend"] == chosen  # --no-apply kept it
    assert manifest["rank_tuning"]["modalities"] == ["text", "visual"]

    item = pd.read_parquet(content_run / "data" / "items.parquet")["item_id"].iloc[0]
    result = runner.invoke(app, ["recommend", str(content_run), str(item), "--k", "5",
                                 "--content-blend", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["tune-blend", str(content_run), "--modality", "audio"])
    assert result.exit_code == 2 and "unknown modality" in result.output
