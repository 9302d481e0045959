"""Tests for relrec.data.movielens: layouts (real ml-latest-small, synthetic ml-100k / ml-1m)
and the cached download."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from relrec.data import movielens
from relrec.data.ingest import finalize, with_annotation_tags
from relrec.data.movielens import download_movielens, load_movielens
from relrec.data.validate import RejectedRows, filter_unknown_items
from relrec.errors import InputError, RelrecError

SHARED_DATA = Path(os.environ.get("RELREC_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
ML_LATEST_SMALL = SHARED_DATA / "ml-latest-small"
POSTERS = SHARED_DATA / "ml-latest-small-posters"

# in CI (CI=true) missing data must fail, not skip: the tests then run and fail on the paths
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
needs_real_data = pytest.mark.skipif(
    not IN_CI and not (ML_LATEST_SMALL / "ratings.csv").is_file(),
    reason=f"MovieLens ml-latest-small not found at {ML_LATEST_SMALL} "
           "(set RELREC_SHARED_DATA to the folder holding it)",
)


# ---------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def ml_latest_small():
    rejected = RejectedRows()
    images = POSTERS if POSTERS.is_dir() else None
    interactions, items, annotations = load_movielens(ML_LATEST_SMALL, images=images,
                                                      rejected=rejected)
    return interactions, items, rejected, annotations


@needs_real_data
def test_ml_latest_small_counts(ml_latest_small):
    interactions, items, rejected, _ = ml_latest_small
    assert len(interactions) == 100_836
    assert len(items) == 9_742
    assert interactions["user_id"].nunique() == 610
    # every rating must reference a known movie; anything else is reported, not silently lost
    assert interactions["item_id"].isin(items["item_id"]).all()
    # nothing lost silently: every data row of ratings.csv is either kept or reported
    with open(ML_LATEST_SMALL / "ratings.csv", encoding="utf-8") as handle:
        n_rating_rows = sum(1 for line in handle if line.strip()) - 1
    ratings_file = str(ML_LATEST_SMALL / "ratings.csv")
    n_reported = sum(1 for record in rejected.records if record["file"] == ratings_file)
    assert len(interactions) + n_reported == n_rating_rows
    assert set(rejected.counts()) <= {"unknown item_id", "duplicate", "null"}
    assert filter_unknown_items(interactions, items, RejectedRows(), name="x") is interactions
    final_interactions, final_items = finalize(interactions, items)
    assert final_items["item_index"].tolist() == list(range(9_742))


@needs_real_data
def test_ml_latest_small_genres_only_in_topics(ml_latest_small):
    _, items, _, _ = ml_latest_small
    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["topics"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy_story["description"] is None and toy_story["video"] is None
    genres = {genre for topics in items["topics"] for genre in topics}
    assert len(genres) == 19  # 20 labels minus "(no genres listed)", which becomes []
    assert "(no genres listed)" not in genres
    assert (items["topics"].map(len) == 0).sum() > 0
    assert items["description"].isna().all()
    for row in items.itertuples():
        assert "|" not in row.title
        assert not set(row.tags) & {"adventure|animation", "(no genres listed)"}
    # titles are exactly as given: genres never appended
    assert not items["title"].str.contains("Animation\\|", regex=True).any()


@needs_real_data
def test_ml_latest_small_tags(ml_latest_small):
    _, items, rejected, annotations = ml_latest_small
    # tags are dated: the loader returns them as annotations and leaves items' tags empty
    # (prepare adds those before its content cut); all of them aggregated, as here, is what
    # content_cut="data_end" gives on this dataset
    assert (items["tags"].map(len) == 0).all()
    assert list(annotations.columns) == ["item_id", "user_id", "tag", "timestamp"]
    assert annotations["timestamp"].dtype == "int64"
    tags_file = str(ML_LATEST_SMALL / "tags.csv")
    n_rejected_tags = sum(1 for record in rejected.records if record["file"] == tags_file)
    assert len(annotations) + n_rejected_tags == 3_683
    items = with_annotation_tags(items, annotations)
    step_brothers = items.set_index("item_id").loc["60756"]
    assert "funny" in step_brothers["tags"]
    assert step_brothers["tags"][0] == "funny"  # 3 users, the most frequent
    assert all(tag == tag.strip().lower() for tags in items["tags"] for tag in tags)
    assert all(len(tags) == len(set(tags)) for tags in items["tags"])
    assert (items["tags"].map(len) > 0).sum() > 1_000


@needs_real_data
@pytest.mark.skipif(not IN_CI and not POSTERS.is_dir(), reason=f"posters not found at {POSTERS}")
def test_ml_latest_small_posters(ml_latest_small):
    _, items, _, _ = ml_latest_small
    with_image = items.dropna(subset=["image"])
    assert len(with_image) == 2_947
    first = with_image.iloc[0]
    assert first["image"] == str(POSTERS.resolve() / f"{first['item_id']}.jpg")
    assert Path(first["image"]).is_file()


# ---------------------------------------------------------------------------- synthetic layouts


def write_ml100k(directory: Path, with_genre_file: bool = True) -> Path:
    directory.mkdir()
    (directory / "u.data").write_text("1\t10\t4\t881250949\n1\t20\t3\t881250950\n"
                                      "2\t10\t5\t881250951\n2\t99\t1\t881250952\n")
    flags_10 = ["0"] * 19
    flags_10[1] = flags_10[8] = "1"   # Action, Drama
    flags_20 = ["1"] + ["0"] * 18     # unknown only
    (directory / "u.item").write_bytes(
        ("10|Caf\xe9 Society (1995)|01-Jan-1995||http://x|" + "|".join(flags_10) + "\n"
         "20|Plain (1996)|01-Jan-1996||http://y|" + "|".join(flags_20) + "\n").encode("latin-1"))
    if with_genre_file:
        (directory / "u.genre").write_text(
            "\n".join(f"{name}|{i}" for i, name in enumerate(movielens.ML_100K_GENRES)) + "\n\n")
    return directory


def test_ml100k_layout(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")
    posters = tmp_path / "posters"
    posters.mkdir()
    (posters / "10.jpg").write_bytes(b"jpg")
    rejected = RejectedRows()
    interactions, items, annotations = load_movielens(directory, images=posters,
                                                      rejected=rejected)
    assert interactions[["user_id", "item_id", "timestamp", "weight"]].values.tolist() == [
        ["1", "10", 881250949, 4.0], ["1", "20", 881250950, 3.0], ["2", "10", 881250951, 5.0]]
    assert items["title"].tolist() == ["Café Society (1995)", "Plain (1996)"]
    assert items["topics"].tolist() == [["Action", "Drama"], []]
    assert items["tags"].tolist() == [[], []]
    assert annotations.empty
    assert items["image"].tolist() == [str(posters.resolve() / "10.jpg"), None]
    assert rejected.counts() == {"unknown item_id": 1}
    assert rejected.records[0]["row"] == 4 and rejected.records[0]["value"] == "99"
    assert rejected.records[0]["file"].endswith("u.data")


def test_ml100k_without_genre_file_and_parent_directory(tmp_path):
    write_ml100k(tmp_path / "ml-100k", with_genre_file=False)
    # the folder a zip was extracted into, holding one dataset folder, is accepted too
    interactions, items, _ = load_movielens(tmp_path, rejected=RejectedRows())
    assert items["topics"].tolist() == [["Action", "Drama"], []]
    assert len(interactions) == 3


def test_ml1m_layout(tmp_path):
    directory = tmp_path / "ml-1m"
    directory.mkdir()
    (directory / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                           "1::661::3::978302109\n")
    (directory / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3::Cr\xe8me: A Story (2000)::(no genres listed)\n".encode("latin-1"))
    (directory / "users.dat").write_text("1::F::1::10::48067\n")
    (directory / "tags.dat").write_text("1::661::Roald Dahl::978302110\n2::661::roald dahl::1\n"
                                        "1::661::Stop-motion::978302111\n")
    rejected = RejectedRows()
    interactions, items, annotations = load_movielens(directory, rejected=rejected)
    assert interactions[["user_id", "item_id", "weight"]].values.tolist() == [
        ["1", "1193", 5.0], ["1", "661", 3.0]]
    assert rejected.counts() == {"duplicate": 1}
    assert rejected.records[0]["row"] == 3
    assert items["item_id"].tolist() == ["1193", "661", "3"]
    assert items["title"].tolist()[2] == "Crème: A Story (2000)"
    assert items["topics"].tolist() == [["Drama"], ["Animation", "Children's", "Musical"], []]
    assert items["tags"].tolist() == [[], [], []]  # dated: prepare adds them before its cut
    assert annotations.values.tolist() == [["661", "1", "Roald Dahl", 978302110],
                                           ["661", "2", "roald dahl", 1],
                                           ["661", "1", "Stop-motion", 978302111]]
    items = with_annotation_tags(items, annotations)
    assert items["tags"].tolist() == [[], ["roald dahl", "stop-motion"], []]


def test_csv_layout_tags_and_unknown_tag_movies(tmp_path):
    directory = tmp_path / "ml-latest-small"
    directory.mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n"
                                           "1,2,3.5,11\n")
    (directory / "movies.csv").write_text('movieId,title,genres\n1,"Heat, The (1995)",Action\n'
                                          "2,Blank (2000),(no genres listed)\n")
    (directory / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,Slow,1\n2,1, b ,1\n"
                                        "3,1,B,1\n3,1,b,2\n4,1,a,1\n5,7,ghost,1\n6,2,,1\n")
    rejected = RejectedRows()
    interactions, items, annotations = load_movielens(directory, rejected=rejected)
    assert items["title"].tolist() == ["Heat, The (1995)", "Blank (2000)"]
    assert items["tags"].tolist() == [[], []]
    # b: 2 users; a and slow: 1 user each, alphabetical
    assert with_annotation_tags(items, annotations)["tags"].tolist() == [["b", "a", "slow"], []]
    assert items["topics"].tolist() == [["Action"], []]
    assert rejected.counts() == {"null": 1, "unknown item_id": 1}
    assert {(r["row"], r["column"]) for r in rejected.records} == {(7, "movieId"), (8, "tag")}


def test_csv_layout_tag_timestamps_are_validated(tmp_path):
    directory = tmp_path / "ml"
    directory.mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n")
    (directory / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    (directory / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,ok,5\n2,1,undated,\n"
                                        "3,1,bad,soon\n4,1,iso,1970-01-01T00:00:07Z\n")
    rejected = RejectedRows()
    _, _, annotations = load_movielens(directory, rejected=rejected)
    assert annotations[["tag", "timestamp"]].values.tolist() == [["ok", 5], ["iso", 7]]
    assert {(r["row"], r["column"], r["reason"]) for r in rejected.records} == {
        (3, "timestamp", "null"), (4, "timestamp", "unparseable timestamp")}
    (directory / "tags.csv").write_text("userId,movieId,tag\n1,1,undated\n")
    with pytest.raises(InputError, match="tags.csv, row 1, column 'timestamp'"):
        load_movielens(directory, rejected=RejectedRows())


def test_csv_layout_bad_timestamp_names_ratings_file(tmp_path):
    directory = tmp_path / "ml"
    directory.mkdir()
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,x\n")
    (directory / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with pytest.raises(InputError, match="ratings.csv, row 2, column 'timestamp'"):
        load_movielens(directory, rejected=RejectedRows())


def test_unknown_layout_names_directory_and_files(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputError) as caught:
        load_movielens(tmp_path, rejected=RejectedRows())
    message = str(caught.value)
    assert str(tmp_path) in message
    for name in ("ratings.csv", "movies.csv", "u.data", "u.item", "ratings.dat", "movies.dat"):
        assert name in message


# ---------------------------------------------------------------------------- download


def small_movielens_zip(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,10\n")
        archive.writestr(f"{name}/movies.csv", "movieId,title,genres\n1,A (2000),Drama\n")
        archive.writestr(f"{name}/README.txt", "test")
    return buffer.getvalue()


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_movielens_extracts_once(tmp_path, monkeypatch):
    requested = []
    payload = small_movielens_zip("ml-latest-small")

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    directory = download_movielens("ml-latest-small", cache_dir=tmp_path / "cache")
    assert directory == tmp_path / "cache" / "ml-latest-small"
    assert requested == ["https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"]
    assert (directory / "ratings.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ml-latest-small"]
    interactions, items, _ = load_movielens(directory, rejected=RejectedRows())
    assert len(interactions) == 1 and items["topics"].tolist() == [["Drama"]]

    def no_network(url, timeout=None):
        raise AssertionError("network used although the dataset is cached")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert download_movielens("ml-latest-small", cache_dir=tmp_path / "cache") == directory


def test_download_movielens_default_cache_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREC_CACHE", str(tmp_path / "relrec-cache"))
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(small_movielens_zip("ml-1x")))
    directory = download_movielens("ml-1x")
    assert directory == tmp_path / "relrec-cache" / "datasets" / "ml-1x"
    assert directory.is_dir()


def test_download_movielens_failures_leave_no_partial_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(b"not a zip"))
    with pytest.raises(RelrecError, match="valid zip"):
        download_movielens("ml-latest-small", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []

    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RelrecError, match="could not download"):
        download_movielens("ml-latest-small", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="invalid MovieLens dataset name"):
        download_movielens("../evil", cache_dir=tmp_path)


def test_cli_download_fetches_into_the_cache(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from relrec.cli import app

    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(small_movielens_zip("ml-latest-small")))
    result = CliRunner().invoke(app, ["download", "ml-latest-small", "--cache-dir",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "ml-latest-small" / "ratings.csv").is_file()
    result = CliRunner().invoke(app, ["download", "../evil", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "invalid MovieLens dataset name" in result.output
