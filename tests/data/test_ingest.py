"""Tests for relrec.data.readers, relrec.data.validate and the loaders of relrec.data.ingest:
reading files, validation errors, rejected-rows counts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relrec.data.ingest import finalize, load_interactions, load_items
from relrec.data.readers import read_table
from relrec.data.validate import RejectedRows, filter_unknown_items
from relrec.errors import InputError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


INTERACTIONS_CSV = (
    "user_id,item_id,timestamp,weight\n"
    "u1,007,1700000000,2.5\n"
    "u1,008,1700000060,\n"
    "u2,007,1700000120,1\n"
)


# ---------------------------------------------------------------------------- read_table


def test_read_table_keeps_ids_as_strings_and_empty_as_empty_string(tmp_path):
    path = write(tmp_path / "x.csv", "item_id,title\n007,\n0042,Answer\n")
    frame = read_table(path)
    assert list(frame["item_id"]) == ["007", "0042"]
    assert list(frame["title"]) == ["", "Answer"]


@pytest.mark.parametrize("content", ["", "user_id,item_id,timestamp\n"],
                         ids=["zero-bytes", "header-only"])
def test_read_table_empty_file_is_an_input_error(tmp_path, content):
    path = write(tmp_path / "empty.csv", content)
    with pytest.raises(InputError, match="empty file") as caught:
        read_table(path)
    assert str(path) in str(caught.value)
    assert caught.value.file == str(path)


def test_load_interactions_empty_file_names_the_file(tmp_path):
    path = write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(InputError, match="empty file") as caught:
        load_interactions(path, RejectedRows())
    assert str(path) in str(caught.value)


def test_read_table_non_utf8_names_file_and_row(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("item_id,title\n1,Alpha\n2,Beta\n3,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8") as caught:
        read_table(path)
    message = str(caught.value)
    assert str(path) in message and "row 4" in message
    assert caught.value.row == 4


def test_read_table_non_utf8_jsonl_names_the_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"item_id": "1", "title": "ok"}\n{"item_id": "2", "title": "Caf\xe9"}\n')
    with pytest.raises(InputError, match="UTF-8") as caught:
        read_table(path)
    assert caught.value.row == 2


def test_read_table_unknown_extension(tmp_path):
    path = write(tmp_path / "data.xlsx", "whatever")
    with pytest.raises(InputError, match="unknown file type") as caught:
        read_table(path)
    assert str(path) in str(caught.value) and ".csv" in str(caught.value)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "nope.csv")


def test_read_table_gzip_and_tsv(tmp_path):
    gz_path = tmp_path / "x.csv.gz"
    with gzip.open(gz_path, "wt", encoding="utf-8") as handle:
        handle.write("a,b\n01,x\n")
    assert read_table(gz_path).to_dict("records") == [{"a": "01", "b": "x"}]
    tsv_path = write(tmp_path / "x.tsv", "a\tb\n01\tx y\n")
    assert read_table(tsv_path).to_dict("records") == [{"a": "01", "b": "x y"}]


def test_read_table_malformed_row_names_the_line(tmp_path):
    path = write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError, match="expected 2 fields") as caught:
        read_table(path)
    assert caught.value.row == 3


# ---------------------------------------------------------------------------- interactions


def test_load_interactions_schema_and_values(tmp_path):
    rejected = RejectedRows()
    frame = load_interactions(write(tmp_path / "i.csv", INTERACTIONS_CSV), rejected)
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "session_id", "weight",
                                   "source_row"]
    assert list(frame["item_id"]) == ["007", "008", "007"]
    assert frame["timestamp"].dtype == np.int64
    assert frame["weight"].dtype == np.float64
    assert frame["source_row"].dtype == np.int64
    assert list(frame["weight"]) == [2.5, 1.0, 1.0]  # empty weight -> 1.0
    assert list(frame["source_row"]) == [2, 3, 4]
    assert frame["session_id"].dtype == object
    assert frame["session_id"].isna().all() and frame["session_id"].iloc[0] is None
    assert len(rejected) == 0


def test_missing_required_column_names_file_row_and_column(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,when\nu,i,1\n")
    with pytest.raises(InputError) as caught:
        load_interactions(path, RejectedRows())
    message = str(caught.value)
    assert str(path) in message and "row 1" in message and "column 'timestamp'" in message
    assert "missing column 'timestamp'; found: user_id, item_id, when" in message


def test_bad_timestamp_names_file_row_column_and_value(tmp_path):
    path = write(tmp_path / "i.csv",
                 "user_id,item_id,timestamp\nu,a,1700000000\nu,b,1700000001\nu,c,yesterday\n")
    with pytest.raises(InputError) as caught:
        load_interactions(path, RejectedRows())
    message = str(caught.value)
    assert str(path) in message
    assert "row 4" in message and "column 'timestamp'" in message and "'yesterday'" in message
    assert (caught.value.row, caught.value.column) == (4, "timestamp")


def test_bad_weight_is_an_input_error(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp,rating\nu,a,1,five\n")
    with pytest.raises(InputError, match="'five'") as caught:
        load_interactions(path, RejectedRows())
    assert (caught.value.row, caught.value.column) == (2, "rating")


def test_iso_and_unix_timestamps(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n"
                 "u,a,1700000000\n"
                 "u,b,1700000000.9\n"
                 "u,c,2023-11-14T22:13:20Z\n"
                 "u,d,2023-11-14T23:13:20+01:00\n"
                 "u,e,2023-11-14 22:13:20\n"
                 "u,f,2023-11-14\n")
    frame = load_interactions(path, RejectedRows())
    assert list(frame["timestamp"]) == [1700000000] * 5 + [1699920000]


def test_rating_alias_session_id_and_extra_columns(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp,rating,session_id,device\n"
                 "u,a,1,4.5,s1,phone\nu,b,2,3,,tv\n")
    frame = load_interactions(path, RejectedRows())
    assert list(frame["weight"]) == [4.5, 3.0]
    assert list(frame["session_id"]) == ["s1", None]
    assert "device" not in frame.columns and "rating" not in frame.columns


def test_nulls_and_duplicates_are_dropped_and_counted(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n"
                 "u,a,1\n"
                 ",a,2\n"          # null user
                 "u,,3\n"          # null item
                 "u,a,1\n"         # duplicate of row 2
                 "u,a,2\n"         # same pair, other time: kept
                 "u,a,1\n"         # duplicate again
                 "v,b,\n")         # null timestamp
    rejected = RejectedRows()
    frame = load_interactions(path, rejected)
    assert list(frame["source_row"]) == [2, 6]
    assert rejected.counts() == {"duplicate": 2, "null": 3}
    report = rejected.to_frame()
    assert list(report.columns) == ["file", "row", "column", "reason", "value"]
    nulls = report[report["reason"] == "null"].sort_values("row")
    assert list(nulls["row"]) == [3, 4, 8]
    assert list(nulls["column"]) == ["user_id", "item_id", "timestamp"]
    duplicates = report[report["reason"] == "duplicate"]
    assert list(duplicates["row"]) == [5, 7] and set(report["file"]) == {str(path)}


def test_interactions_from_dataframe(tmp_path):
    source = pd.DataFrame({"user_id": [1, 2], "item_id": ["007", "008"],
                           "timestamp": pd.to_datetime(["2023-11-14T22:13:20Z",
                                                        "2023-11-14T22:13:21Z"]),
                           "weight": [1.5, np.nan]})
    rejected = RejectedRows()
    frame = load_interactions(source, rejected)
    assert list(frame["user_id"]) == ["1", "2"]
    assert list(frame["item_id"]) == ["007", "008"]
    assert list(frame["timestamp"]) == [1700000000, 1700000001]
    assert list(frame["weight"]) == [1.5, 1.0]

    bad = source.assign(timestamp=["1", "never"])
    with pytest.raises(InputError, match="<interactions DataFrame>, row 3, column 'timestamp'"):
        load_interactions(bad, RejectedRows())
    with pytest.raises(InputError, match="my-log, row 3"):
        load_interactions(bad, RejectedRows(), name="my-log")


def test_interactions_from_jsonl_and_parquet(tmp_path):
    jsonl = tmp_path / "i.jsonl"
    jsonl.write_text('{"user_id": "007", "item_id": 7, "timestamp": 1700000000}\n\n'
                     '{"user_id": "008", "item_id": "x", "timestamp": "2023-11-14T22:13:20Z",'
                     ' "extra": {"a": 1}}\n'
                     '{"user_id": "009", "item_id": "y", "timestamp": "soon"}\n')
    with pytest.raises(InputError) as caught:
        load_interactions(jsonl, RejectedRows())
    assert (caught.value.row, caught.value.column) == (4, "timestamp")  # line number in JSONL

    jsonl.write_text("\n".join(jsonl.read_text().splitlines()[:3]) + "\n")
    frame = load_interactions(jsonl, RejectedRows())
    assert list(frame["user_id"]) == ["007", "008"] and list(frame["item_id"]) == ["7", "x"]
    assert list(frame["timestamp"]) == [1700000000, 1700000000]
    assert list(frame["source_row"]) == [1, 3]

    parquet = tmp_path / "i.parquet"
    pq.write_table(pa.table({"user_id": ["007", None], "item_id": [7, 8],
                             "timestamp": [1700000000, 1700000005]}), parquet)
    rejected = RejectedRows()
    frame = load_interactions(parquet, rejected)
    assert list(frame["user_id"]) == ["007"] and list(frame["item_id"]) == ["7"]
    assert rejected.counts() == {"null": 1} and rejected.records[0]["row"] == 3


def test_json_array_file(tmp_path):
    path = tmp_path / "i.json"
    path.write_text(json.dumps([{"user_id": "a", "item_id": "b", "timestamp": 5}]))
    assert load_interactions(path, RejectedRows())["timestamp"].tolist() == [5]


# ---------------------------------------------------------------------------- items


def test_load_items_lists_media_and_empties(tmp_path):
    (tmp_path / "img").mkdir()
    path = write(tmp_path / "items.csv",
                 "item_id,title,description,tags,topics,image,video,price\n"
                 "007,Bond, ,spy| action ||,Action,img/007.jpg,/abs/v.mp4,9\n"
                 "008,,,,,https://example.org/8.jpg,,1\n")
    rejected = RejectedRows()
    items = load_items(path, rejected)
    assert list(items.columns) == ["item_id", "title", "description", "tags", "topics", "image",
                                   "video", "source_row"]
    first, second = items.to_dict("records")
    assert first["item_id"] == "007" and first["title"] == "Bond"
    assert first["description"] is None
    assert first["tags"] == ["spy", "action"] and first["topics"] == ["Action"]
    assert first["image"] == str(tmp_path.resolve() / "img" / "007.jpg")
    assert first["video"] == "/abs/v.mp4"
    assert second["title"] == "" and second["tags"] == [] and second["topics"] == []
    assert second["image"] == "https://example.org/8.jpg" and second["video"] is None
    assert "price" not in items.columns and len(rejected) == 0


def test_items_missing_title_column(tmp_path):
    path = write(tmp_path / "items.csv", "item_id,name\n1,x\n")
    with pytest.raises(InputError, match="missing column 'title'") as caught:
        load_items(path, RejectedRows())
    assert (caught.value.row, caught.value.column) == (1, "title")


def test_items_list_columns_from_parquet(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({
        "item_id": ["1", "2", "3"], "title": ["a", "b", "c"],
        "tags": pa.array([["x", " y ", ""], [], None], type=pa.list_(pa.string())),
        "topics": ["News|Sport", "", None],
    }), path)
    items = load_items(path, RejectedRows())
    assert items["tags"].tolist() == [["x", "y"], [], []]
    assert items["topics"].tolist() == [["News", "Sport"], [], []]
    assert all(isinstance(value, list) for value in items["tags"])


def test_items_from_jsonl_and_dataframe_lists(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "1", "title": "a", "tags": ["x", "y"], "topics": "t1|t2"}\n'
                    '{"item_id": "2", "title": "b"}\n')
    items = load_items(path, RejectedRows())
    assert items["tags"].tolist() == [["x", "y"], []]
    assert items["topics"].tolist() == [["t1", "t2"], []]

    frame = pd.DataFrame({"item_id": ["1"], "title": ["a"], "tags": [np.array(["p", "q"])],
                          "image": ["rel/1.jpg"]})
    items = load_items(frame, RejectedRows())
    assert items["tags"].tolist() == [["p", "q"]]
    assert items["image"].tolist() == ["rel/1.jpg"]  # no file directory for a DataFrame


def test_items_null_and_duplicate_ids_dropped_and_counted(tmp_path):
    path = write(tmp_path / "items.csv", "item_id,title\n1,first\n,none\n1,again\n2,two\n")
    rejected = RejectedRows()
    items = load_items(path, rejected)
    assert items[["item_id", "title"]].values.tolist() == [["1", "first"], ["2", "two"]]
    assert list(items["source_row"]) == [2, 5]
    assert rejected.counts() == {"duplicate": 1, "null": 1}
    assert sorted((r["row"], r["reason"]) for r in rejected.records) == [
        (3, "null"), (4, "duplicate")]


# ---------------------------------------------------------------------------- join, finalize


def test_filter_unknown_items_and_finalize(tmp_path):
    rejected = RejectedRows()
    interactions = load_interactions(write(tmp_path / "i.csv", "user_id,item_id,timestamp\n"
                                           "u2,b,5\nu1,a,9\nu1,zz,3\nu1,b,9\nu1,c,1\n"), rejected)
    items = load_items(write(tmp_path / "items.csv", "item_id,title\nc,C\nb,B\na,A\n"), rejected)
    kept = filter_unknown_items(interactions, items, rejected, name="i.csv")
    assert len(kept) == 4
    assert rejected.counts() == {"unknown item_id": 1}
    assert rejected.records[0] == {"file": "i.csv", "row": 4, "column": "item_id",
                                   "reason": "unknown item_id", "value": "zz"}

    final_interactions, final_items = finalize(kept, items)
    assert final_items["item_index"].tolist() == [0, 1, 2]
    assert final_items["item_id"].tolist() == ["c", "b", "a"]
    assert "source_row" not in final_items.columns
    assert "source_row" not in final_interactions.columns
    assert final_interactions[["user_id", "item_id", "item_index", "timestamp"]].values.tolist() \
        == [["u1", "c", 0, 1], ["u1", "b", 1, 9], ["u1", "a", 2, 9], ["u2", "b", 1, 5]]
    assert final_interactions["item_index"].dtype == np.int64


def test_finalize_rejects_unfiltered_interactions(tmp_path):
    interactions = load_interactions(pd.DataFrame({"user_id": ["u"], "item_id": ["x"],
                                                   "timestamp": [1]}), RejectedRows())
    items = load_items(pd.DataFrame({"item_id": ["y"], "title": ["Y"]}), RejectedRows())
    with pytest.raises(ValueError, match="filter_unknown_items"):
        finalize(interactions, items)


def test_rejected_rows_extend_and_empty_frame():
    first, second = RejectedRows(), RejectedRows()
    assert first.to_frame().columns.tolist() == ["file", "row", "column", "reason", "value"]
    first.add("a.csv", 2, "item_id", "null", None)
    second.add("b.csv", 3, "item_id", "duplicate", "x")
    first.extend(second)
    assert first.counts() == {"duplicate": 1, "null": 1}
    assert first.to_frame()["row"].tolist() == [2, 3]
