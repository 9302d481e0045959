"""Time-true content: a tag written after the content cut never reaches the features.

Dated annotations (MovieLens ``tags.csv`` / ``tags.dat``, the generic ``--annotations`` file)
enter items.parquet's ``tags`` only when ``timestamp < split.valid_start`` (``content_cut =
"train_end"``, the default, also with ``test_fraction = 0``), or up to the last interaction
with ``"data_end"``. Everything downstream reads tags from items.parquet:

* the text encoder's input is :func:`relrec.content.text.item_text` over ``run.items``
  (``relrec embed`` → :func:`relrec.content.embed.embed_text`) — checked below by recording
  what a stand-in encoder is given;
* the pseudo-labels (``train.setup.semantic_pair_labels``), the MTMH content teacher and
  the content blend read the text vectors that stage writes (``content/text.npy``) — checked
  on the labels;
* the served reasons (``serve.engine.ServedModel.reasons``) are shared *topics* (display
  only, never tags), the text similarity of ``content/text.npy`` vectors (or, without them,
  ``serve.runtime_items`` uses ``item_text(run.items)`` — the same ``item_text``) and co-engagement counts
  from the training pairs. None of them reads tags any other way, so items.parquet +
  ``item_text`` being free of the late tag is enough for the reasons too.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from relrec.config import ContentConfig, PrepareConfig, RunConfig, TrainConfig
from relrec.content.text import item_text
from relrec.data.ingest import load_annotations, load_items
from relrec.data.prepare import prepare_run
from relrec.data.validate import RejectedRows
from relrec.run import RunData

LATE = "latecomer"  # the tag written after the training period
RATINGS = [(user, movie, 100 * step) for user in (1, 2)
           for step, movie in enumerate([1, 2, 3, 4, 5, 1, 2, 3, 4, 5], start=1)]
# 80/10/10 over timestamps 100..1000 (each twice): valid_start 900, test_start 1000
VALID_START, LAST = 900, 1000
TAGS = [  # userId, movieId, tag, timestamp
    (1, 1, "Early", 50),          # before any interaction: used
    (2, 1, "early", 60),          # a second user: 'early' ranks first on movie 1
    (1, 1, "Zesty", 70),
    (1, 2, "trainish", 899),      # just before the cut: used
    (1, 2, "atcut", VALID_START),  # at the cut (first validation second): held back
    (2, 1, LATE, 950),            # validation period: held back unless data_end
    (1, 3, "afterdata", 5000),    # after the last interaction: held back by both rules
]


def write_movielens_csv(directory, tags=TAGS):
    directory.mkdir(parents=True)
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{m},4.0,{t}\n" for u, m, t in RATINGS))
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(1, 6)))
    (directory / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f"{u},{m},{g},{t}\n" for u, m, g, t in tags))
    return directory


def write_movielens_dat(directory, tags=TAGS):
    directory.mkdir(parents=True)
    (directory / "ratings.dat").write_text("".join(f"{u}::{m}::4::{t}\n" for u, m, t in RATINGS))
    (directory / "movies.dat").write_text(
        "".join(f"{m}::Movie {m} (2000)::Drama\n" for m in range(1, 6)))
    (directory / "tags.dat").write_text("".join(f"{u}::{m}::{g}::{t}\n" for u, m, g, t in tags))
    return directory


def tags_by_item(run_dir) -> dict[str, list[str]]:
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    return {item_id: list(tags) for item_id, tags in zip(items["item_id"], items["tags"])}


def config(**prepare) -> RunConfig:
    return RunConfig(prepare=PrepareConfig(**prepare))


# ---------------------------------------------------------------------------- items.parquet


@pytest.mark.parametrize("writer", [write_movielens_csv, write_movielens_dat],
                         ids=["csv", "dat"])
def test_late_tag_never_reaches_items_parquet(tmp_path, writer):
    manifest = prepare_run(tmp_path / "run", config(), movielens=writer(tmp_path / "ml"))
    assert manifest["split"]["valid_start"] == VALID_START
    tags = tags_by_item(tmp_path / "run")
    assert tags == {"1": ["early", "zesty"], "2": ["trainish"], "3": [], "4": [], "5": []}
    assert manifest["content_cut"] == {
        "rule": "train_end", "cut_timestamp": VALID_START,
        "condition": f"timestamp < {VALID_START}", "annotations_total": 7,
        "annotations_used": 4, "annotations_held_back": 3}
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk["content_cut"] == manifest["content_cut"]
    assert on_disk["config"]["prepare"]["content_cut"] == "train_end"


def test_cut_is_valid_start_also_without_a_test_period(tmp_path):
    manifest = prepare_run(tmp_path / "run", config(valid_fraction=0.2, test_fraction=0.0),
                           movielens=write_movielens_csv(tmp_path / "ml"))
    assert manifest["split"] == {"valid_start": VALID_START, "test_start": None}
    assert manifest["content_cut"]["cut_timestamp"] == VALID_START
    assert LATE not in sum(tags_by_item(tmp_path / "run").values(), [])
    assert manifest["content_cut"]["annotations_held_back"] == 3


def test_data_end_includes_the_late_tag(tmp_path):
    manifest = prepare_run(tmp_path / "run", config(content_cut="data_end"),
                           movielens=write_movielens_csv(tmp_path / "ml"))
    tags = tags_by_item(tmp_path / "run")
    # 'early' has 2 users; the rest 1 each, alphabetical
    assert tags["1"] == ["early", LATE, "zesty"]
    assert tags["2"] == ["atcut", "trainish"]
    assert tags["3"] == []  # 'afterdata' postdates every interaction
    assert manifest["content_cut"] == {
        "rule": "data_end", "cut_timestamp": LAST, "condition": f"timestamp <= {LAST}",
        "annotations_total": 7, "annotations_used": 6, "annotations_held_back": 1}
    assert LATE in item_text(RunData(tmp_path / "run").items)[0]


def test_manifest_records_the_cut_without_annotations(tmp_path):
    directory = write_movielens_csv(tmp_path / "ml")
    (directory / "tags.csv").unlink()
    manifest = prepare_run(tmp_path / "run", config(), movielens=directory)
    assert manifest["content_cut"] == {
        "rule": "train_end", "cut_timestamp": VALID_START,
        "condition": f"timestamp < {VALID_START}", "annotations_total": 0,
        "annotations_used": 0, "annotations_held_back": 0}


# ---------------------------------------------------------------------------- downstream


class RecordingEncoder:
    """Stands in for TextEncoder: a bag-of-words hash (so tags change vectors) that records
    every text it is asked to encode."""

    seen: list[str] = []
    model_id = "test-bag-of-words"
    dim = 32

    def __init__(self, *args, **kwargs):
        pass

    def encode(self, texts, progress=False):
        RecordingEncoder.seen.extend(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                digest = hashlib.sha256(word.encode()).digest()
                vectors[row, digest[0] % self.dim] += 1.0
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def embedded_run(tmp_path, name, tags, monkeypatch):
    """prepare + embed (text, stand-in encoder); returns (run, texts the encoder saw)."""
    from relrec.content import embed
    from relrec.content.stage import ensure_content

    monkeypatch.setattr(embed, "TextEncoder", RecordingEncoder)
    RecordingEncoder.seen = []
    run_dir = tmp_path / name
    prepare_run(run_dir, config(), movielens=write_movielens_csv(tmp_path / f"{name}-ml", tags))
    run = RunData(run_dir)
    ensure_content(run, ["text"], ContentConfig(cache_dir=str(tmp_path / f"{name}-cache")),
                   progress=False)
    return RunData(run_dir), list(RecordingEncoder.seen)


def test_late_tag_never_reaches_encoder_labels_or_reasons(tmp_path, monkeypatch):
    """The same data with and without the late tags gives identical items, encoder inputs,
    text vectors and pseudo-labels: the late tags have no effect at all."""
    from relrec.serve.runtime_items import item_text as served_item_text
    from relrec.train.setup import semantic_pair_labels
    from relrec.content.store import load_content

    with_late, seen_with = embedded_run(tmp_path, "with", TAGS, monkeypatch)
    early_only = [row for row in TAGS if row[3] < VALID_START]
    without_late, seen_without = embedded_run(tmp_path, "without", early_only, monkeypatch)

    # the encoder's input (what `relrec embed` hands to the text model)
    assert seen_with and not any(LATE in text or "atcut" in text for text in seen_with)
    assert "Tags: early, zesty" in seen_with[0]
    assert seen_with == seen_without
    # items.parquet and the text built from it (content stage and serve-side fallback)
    assert with_late.items["tags"].map(list).tolist() == \
        without_late.items["tags"].map(list).tolist()
    assert item_text(with_late.items) == item_text(without_late.items) == \
        served_item_text(with_late.items)
    # the text vectors: input of pseudo-labels, MTMH teacher, blend and served text_similarity
    vectors_with, ok_with = load_content(with_late, "text")
    vectors_without, ok_without = load_content(without_late, "text")
    np.testing.assert_array_equal(vectors_with, vectors_without)
    np.testing.assert_array_equal(ok_with, ok_without)
    # the pseudo-labels themselves
    train_config = TrainConfig(w_sem=1.0)
    labels_with = semantic_pair_labels(with_late, train_config, {})
    labels_without = semantic_pair_labels(without_late, train_config, {})
    np.testing.assert_array_equal(labels_with, labels_without)


# ---------------------------------------------------------------------------- generic layout


def write_generic(tmp_path):
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n" + "".join(f"{u},{m},{t}\n" for u, m, t in RATINGS))
    (tmp_path / "items.csv").write_text(
        "item_id,title,tags\n1,One,Own Tag|zesty\n2,Two,\n3,Three,\n4,Four,\n5,Five,\n")
    return tmp_path / "interactions.csv", tmp_path / "items.csv"


def test_generic_annotations_file_is_cut(tmp_path):
    interactions, items = write_generic(tmp_path)
    annotations = tmp_path / "annotations.csv"
    annotations.write_text(
        "item_id,tag,timestamp\n"
        "1,early,50\n1,Early,60\n1,ZESTY,70\n2,trainish,899\n"   # rows 2-5: used
        f"1,{LATE},950\n3,afterdata,5000\n"                       # rows 6-7: held back
        "9,ghost,10\n2,,10\n2,undated,\n2,when,tomorrow\n")      # rows 8-11: rejected
    manifest = prepare_run(tmp_path / "run", config(), interactions=interactions, items=items,
                           annotations=annotations)
    # the items file's own tags (undated) stay first, as given; then the annotations'
    # (no user column: each row counts as one annotator), without repeating 'zesty'
    assert tags_by_item(tmp_path / "run") == {
        "1": ["Own Tag", "zesty", "early"], "2": ["trainish"], "3": [], "4": [], "5": []}
    assert manifest["content_cut"]["annotations_total"] == 6
    assert manifest["content_cut"]["annotations_used"] == 4
    assert manifest["content_cut"]["annotations_held_back"] == 2
    rejected = pd.read_csv(tmp_path / "run" / "data" / "rejected_rows.csv",
                           keep_default_na=False)
    assert sorted(zip(rejected["row"], rejected["column"], rejected["reason"])) == [
        (8, "item_id", "unknown item_id"), (9, "tag", "null"), (10, "timestamp", "null"),
        (11, "timestamp", "unparseable timestamp")]
    assert set(rejected["file"]) == {str(annotations)}
    assert manifest["rejected"] == {"null": 2, "unknown item_id": 1,
                                    "unparseable timestamp": 1}
    assert manifest["inputs"]["annotations"]["path"] == str(annotations)

    data_end = prepare_run(tmp_path / "run2", config(content_cut="data_end"),
                           interactions=interactions, items=items, annotations=annotations)
    assert tags_by_item(tmp_path / "run2")["1"] == ["Own Tag", "zesty", "early", LATE]
    assert data_end["content_cut"]["annotations_held_back"] == 1


def test_annotations_parquet_jsonl_and_user_column(tmp_path):
    rejected = RejectedRows()
    items = load_items(pd.DataFrame({"item_id": ["1", "2"], "title": ["One", "Two"]}), rejected)
    frame = pd.DataFrame({"item_id": ["1", "1", "2"], "user_id": ["u", "u", "v"],
                          "tag": ["a", "a", "b"],
                          "timestamp": ["5", "2020-01-01T00:00:00Z", "7"]})
    frame.to_parquet(tmp_path / "notes.parquet", index=False)
    with open(tmp_path / "notes.jsonl", "w") as handle:
        for record in frame.to_dict("records"):
            handle.write(json.dumps(record) + "\n")
    for name in ("notes.parquet", "notes.jsonl"):
        loaded = load_annotations(tmp_path / name, items, rejected)
        assert loaded.values.tolist() == [["1", "u", "a", 5], ["1", "u", "a", 1577836800],
                                          ["2", "v", "b", 7]]
    assert len(rejected) == 0
    # a user who wrote a tag twice counts once
    from relrec.data.ingest import with_annotation_tags
    more = pd.DataFrame({"item_id": ["1", "1", "1"], "user_id": ["u", "u", "w"],
                         "tag": ["x", "x", "y"], "timestamp": [1, 2, 3]})
    assert with_annotation_tags(items, more)["tags"].tolist() == [["x", "y"], []]


def test_cli_prepare_prints_held_back(tmp_path):
    from relrec.cli import app

    interactions, items = write_generic(tmp_path)
    annotations = tmp_path / "annotations.csv"
    annotations.write_text(f"item_id,tag,timestamp\n1,early,50\n1,{LATE},950\n")
    result = CliRunner().invoke(app, ["prepare", "--out", str(tmp_path / "run"),
                                      "--interactions", str(interactions),
                                      "--items", str(items), "--annotations", str(annotations)])
    assert result.exit_code == 0, result.output
    assert "1 of 2 dated annotations used, 1 held back" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["prepare", "--out", str(tmp_path / "run2"),
                                      "--interactions", str(interactions),
                                      "--items", str(items), "--annotations", str(annotations),
                                      "--content-cut", "data_end"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 dated annotations used, 0 held back" in " ".join(result.output.split())
    assert LATE in tags_by_item(tmp_path / "run2")["1"]
    result = CliRunner().invoke(app, ["prepare", "--out", str(tmp_path / "run3"),
                                      "--interactions", str(interactions),
                                      "--items", str(items), "--content-cut", "tomorrow"])
    assert result.exit_code == 2


# ---------------------------------------------------------------------------- real data


def test_ml_latest_small_holds_back_late_tags(tmp_path, movielens_small_dir):
    assert PrepareConfig().valid_fraction == 0.1 and PrepareConfig().test_fraction == 0.1
    manifest = prepare_run(tmp_path / "run", RunConfig(), movielens=movielens_small_dir)
    cut = manifest["content_cut"]
    assert cut["rule"] == "train_end"
    assert cut["cut_timestamp"] == manifest["split"]["valid_start"]
    tags = pd.read_csv(movielens_small_dir / "tags.csv")
    assert len(tags) == 3_683
    # every row of tags.csv is either counted in the cut or reported as rejected
    rejected = pd.read_csv(tmp_path / "run" / "data" / "rejected_rows.csv",
                           keep_default_na=False)
    tag_rejects = int((rejected["file"] == str(movielens_small_dir / "tags.csv")).sum())
    assert cut["annotations_total"] + tag_rejects == 3_683
    assert cut["annotations_used"] + cut["annotations_held_back"] == cut["annotations_total"]
    assert cut["annotations_held_back"] > 1000
    assert cut["annotations_held_back"] == int((tags["timestamp"] >= cut["cut_timestamp"]).sum())
    # no item tag that only late annotations carry survives into items.parquet
    early = {tag.strip().lower() for tag in tags.loc[tags["timestamp"] < cut["cut_timestamp"],
                                                     "tag"].astype(str)}
    written = {tag for item_tags in tags_by_item(tmp_path / "run").values() for tag in item_tags}
    assert written and written <= early
    print(f"ml-latest-small content cut: {cut}")
