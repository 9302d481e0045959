"""Adapters for the public MovieLens datasets (GroupLens, University of Minnesota).

:func:`load_movielens` reads an extracted MovieLens directory in any of the official layouts
and returns interactions, items and dated tag annotations in the schemas of
:func:`relrec.data.ingest.load_interactions`, :func:`relrec.data.ingest.load_items` and
:func:`relrec.data.ingest.load_annotations`:

============================  =====================================================  =========
layout                        files                                                  encoding
============================  =====================================================  =========
ml-latest-small, ml-latest,   ``ratings.csv``, ``movies.csv`` (+ ``tags.csv``)        UTF-8
ml-25m, ml-32m, ml-20m
ml-100k                       ``u.data`` (tab-separated), ``u.item`` (``|``, 19      Latin-1
                              genre flags, names from ``u.genre`` when present)
ml-1m, ml-10m                 ``ratings.dat``, ``movies.dat`` (+ ``tags.dat``),      Latin-1
                              ``::``-separated
============================  =====================================================  =========

Mapping: ``user_id = userId``, ``item_id = movieId`` (strings), ``timestamp`` (Unix seconds),
``weight = rating``. Items: ``title`` as given (with the year), ``description = None``,
``tags = []`` (see below), ``topics`` = the genres (``(no genres listed)``
and ml-100k's ``unknown`` give ``[]``), ``image = <images>/<movieId>.jpg`` when that file
exists, ``video = None``. Genres go only into ``topics``, which are evaluation labels; they
are never copied into the title, description or tags, so text features stay independent of
the relevance labels.

Tags are dated (``tags.csv`` / ``tags.dat``: ``userId, movieId, tag, timestamp``), so they are
*not* aggregated here: they come back as annotations (``item_id, user_id, tag, timestamp``)
and ``prepare`` adds to the items' ``tags`` only those written before its content cut (the
start of the validation period by default), as the distinct lower-cased tags of the movie,
most users first, ties alphabetical (:func:`relrec.data.ingest.aggregate_tags`). A tag
written later would otherwise leak future content into the features.

:func:`download_movielens` fetches an official zip into a local cache.
MovieLens terms: research use, no redistribution; cite F. M. Harper and J. A. Konstan (2015),
"The MovieLens Datasets: History and Context", ACM TiiS 5(4).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from relrec.data.ingest import aggregate_tags
from relrec.data.readers import read_table_with_rows
from relrec.data.validate import (
    RejectedRows,
    empty_annotations,
    filter_unknown_items,
    require_columns,
    validate_annotations,
    validate_interactions,
    validate_items,
)
from relrec.errors import InputError, RelrecError

__all__ = ["load_movielens", "download_movielens", "detect_layout", "MOVIELENS_URL",
           "ML_100K_GENRES"]

#: Where GroupLens publishes the datasets; ``{name}`` is e.g. ``ml-latest-small``.
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"

#: The 19 genre flags of ml-100k ``u.item``, in column order (used when ``u.genre`` is absent).
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)

#: Genre values that mean "no genre".
NO_GENRE_VALUES = frozenset({"(no genres listed)", "unknown"})

#: Layout name -> the files that identify it (all must exist).
LAYOUT_FILES = {
    "csv": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item"),
    "dat": ("ratings.dat", "movies.dat"),
}

_DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------
# Layout detection
# --------------------------------------------------------------------------------------------


def detect_layout(directory: str | Path) -> tuple[str, Path]:
    """Return ``(layout, data_directory)`` for a MovieLens directory.

    ``layout`` is ``"csv"`` (ml-latest-small, ml-latest, ml-25m...), ``"ml-100k"`` or ``"dat"``
    (ml-1m, ml-10m). A directory holding exactly one MovieLens subdirectory (the folder a zip
    extracts to) is accepted too. Raises :class:`InputError` naming the directory and the
    files it looked for.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise InputError("MovieLens directory not found", file=str(directory))
    for candidate in [directory] + sorted(p for p in directory.iterdir() if p.is_dir()):
        for layout, files in LAYOUT_FILES.items():
            if all((candidate / file).is_file() for file in files):
                if candidate != directory and _count_layout_subdirectories(directory) > 1:
                    continue
                return layout, candidate
    looked_for = "; ".join(
        f"{' + '.join(files)} ({label})" for files, label in (
            (LAYOUT_FILES["csv"], "ml-latest-small / ml-latest / ml-25m"),
            (LAYOUT_FILES["ml-100k"], "ml-100k"),
            (LAYOUT_FILES["dat"], "ml-1m / ml-10m"),
        )
    )
    raise InputError(f"not a MovieLens directory: looked for {looked_for}", file=str(directory))


def _count_layout_subdirectories(directory: Path) -> int:
    return sum(
        1 for sub in directory.iterdir() if sub.is_dir() and any(
            all((sub / file).is_file() for file in files) for files in LAYOUT_FILES.values())
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_movielens(directory: str | Path, *, images: str | Path | None = None,
                   rejected: RejectedRows
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Load a MovieLens directory as ``(interactions, items, annotations)`` (before
    ``finalize``).

    The layout is detected from the files present (see the module docstring). ``images`` is
    an optional folder of ``<movieId>.jpg`` posters; an item's ``image`` is the absolute path
    of its poster when the file exists, else None. ``annotations`` holds the dated tags
    (``item_id, user_id, tag, timestamp``; empty for ml-100k and when there is no tags file);
    the items' ``tags`` are empty until ``prepare`` adds the tags dated before its content
    cut (:func:`relrec.data.ingest.with_annotation_tags`). Dropped rows (null ids,
    duplicates, ratings or tags of movies missing from the movie list, tags with an empty or
    unparseable timestamp) are recorded in ``rejected``, labelled with the file they come
    from; the returned interactions and annotations only reference known items.
    """
    layout, data_directory = detect_layout(directory)
    image_directory = _image_directory(images)
    if layout == "csv":
        interactions, items, annotations = _load_csv_layout(data_directory, rejected)
        ratings_name = str(data_directory / "ratings.csv")
    elif layout == "ml-100k":
        interactions, items = _load_ml100k_layout(data_directory, rejected)
        annotations = empty_annotations()
        ratings_name = str(data_directory / "u.data")
    else:
        interactions, items, annotations = _load_dat_layout(data_directory, rejected)
        ratings_name = str(data_directory / "ratings.dat")
    items["image"] = _poster_paths(items["item_id"], image_directory)
    interactions = filter_unknown_items(interactions, items, rejected, name=ratings_name)
    return interactions, items, annotations


def _image_directory(images: str | Path | None) -> Path | None:
    if images is None:
        return None
    image_directory = Path(images).expanduser()
    if not image_directory.is_dir():
        raise InputError("images directory not found", file=str(image_directory))
    return image_directory.resolve()


def _poster_paths(item_ids: pd.Series, image_directory: Path | None) -> pd.Series:
    """``<image_directory>/<item_id>.jpg`` where that file exists, else None."""
    if image_directory is None:
        return pd.Series([None] * len(item_ids), index=item_ids.index, dtype=object)
    present = {entry.name for entry in os.scandir(image_directory) if entry.is_file()}
    return pd.Series(
        [str(image_directory / f"{item_id}.jpg") if f"{item_id}.jpg" in present else None
         for item_id in item_ids],
        index=item_ids.index, dtype=object,
    )


#: The tag ranking rule (distinct lower-cased, most users first, ties alphabetical); applied
#: by ``prepare`` to the annotations dated before the content cut.
_aggregate_tags = aggregate_tags


def _annotations_from_tags_table(tags: pd.DataFrame, row_numbers: np.ndarray, label: str,
                                 known_movie_ids: pd.Series, rejected: RejectedRows
                                 ) -> pd.DataFrame:
    """Validate a ``userId, movieId, tag, timestamp`` table as dated annotations (rejects
    name the MovieLens column: ``movieId``, ``tag``, ``timestamp``)."""
    return validate_annotations(tags, row_numbers, rejected, label, known_movie_ids,
                                item_column="movieId", user_column="userId")


def _with_tags(items: pd.DataFrame, tags_by_movie: dict[str, list[str]]) -> pd.DataFrame:
    items["tags"] = pd.Series([tags_by_movie.get(item_id, []) for item_id in items["item_id"]],
                              index=items.index, dtype=object)
    return items


def _genres_as_topics(genres: pd.Series) -> pd.Series:
    """'|'-separated genres with the "no genre" markers removed."""
    return pd.Series(
        ["|".join(genre for genre in str(value).split("|")
                  if genre.strip() and genre.strip() not in NO_GENRE_VALUES)
         for value in genres],
        index=genres.index, dtype=str,
    )


def _load_csv_layout(directory: Path, rejected: RejectedRows
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """ml-latest-small / ml-latest / ml-20m / ml-25m / ml-32m: CSV files with a header."""
    ratings_path, movies_path = directory / "ratings.csv", directory / "movies.csv"
    ratings, rating_rows = read_table_with_rows(ratings_path)
    require_columns(ratings, ("userId", "movieId", "rating", "timestamp"), str(ratings_path))
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id",
                                      "rating": "weight"})
    interactions = validate_interactions(
        ratings[["user_id", "item_id", "timestamp", "weight"]], rating_rows, rejected,
        str(ratings_path))

    movies, movie_rows = read_table_with_rows(movies_path)
    require_columns(movies, ("movieId", "title", "genres"), str(movies_path))
    movie_table = pd.DataFrame({"item_id": movies["movieId"], "title": movies["title"],
                                "topics": _genres_as_topics(movies["genres"])})
    items = validate_items(movie_table, movie_rows, rejected, str(movies_path), None)

    tags_path = directory / "tags.csv"
    annotations = empty_annotations()
    if tags_path.is_file() and tags_path.stat().st_size > 0:
        try:
            tags, tag_rows = read_table_with_rows(tags_path)
        except InputError as error:
            if not str(error.reason).startswith("empty file"):
                raise
        else:
            require_columns(tags, ("userId", "movieId", "tag", "timestamp"), str(tags_path))
            annotations = _annotations_from_tags_table(tags, tag_rows, str(tags_path),
                                                       items["item_id"], rejected)
    return interactions, _with_tags(items, {}), annotations


def _decode_legacy_text(path: Path) -> str:
    """Decode a MovieLens text file: UTF-8 when valid, else Latin-1 (the original encoding)."""
    data = path.read_bytes()
    if not data.strip():
        raise InputError("empty file", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_headerless(text: str, separator: str, names: list[str], label: str) -> pd.DataFrame:
    """Parse headerless delimited text with every field as a string."""
    try:
        return pd.read_csv(io.StringIO(text), sep=separator, header=None, names=names,
                           dtype=str, keep_default_na=False, na_filter=False,
                           quoting=csv.QUOTE_NONE, index_col=False)
    except pd.errors.ParserError as error:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        if match:
            expected, line, seen = match.groups()
            raise InputError(f"malformed row: expected {expected} fields, found {seen}",
                             file=label, row=int(line)) from error
        raise InputError(f"malformed file: {error}", file=label) from error


def _check_field_count(frame: pd.DataFrame, line_numbers: np.ndarray, last_column: str,
                       label: str) -> None:
    """Raise for the first row with too few fields (its last column is empty)."""
    short = (frame[last_column] == "").to_numpy()
    if short.any():
        raise InputError(f"malformed row: expected {len(frame.columns)} fields",
                         file=label, row=int(line_numbers[np.flatnonzero(short)[0]]),
                         column=last_column)


def _load_ml100k_layout(directory: Path, rejected: RejectedRows
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ml-100k: ``u.data`` (user, item, rating, timestamp; tabs) and ``u.item`` ('|')."""
    data_path, item_path = directory / "u.data", directory / "u.item"
    ratings_text = _decode_legacy_text(data_path)
    ratings = _read_headerless(ratings_text, "\t", ["user_id", "item_id", "weight", "timestamp"],
                               str(data_path))
    rating_lines = _non_blank_line_numbers(ratings_text)
    _check_field_count(ratings, rating_lines, "timestamp", str(data_path))
    interactions = validate_interactions(ratings, rating_lines, rejected, str(data_path))

    genre_names = _ml100k_genre_names(directory)
    fixed = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]
    flag_columns = [f"genre_{position}" for position in range(len(genre_names))]
    movies_text = _decode_legacy_text(item_path)
    movies = _read_headerless(movies_text, "|", fixed + flag_columns, str(item_path))
    movie_lines = _non_blank_line_numbers(movies_text)
    _check_field_count(movies, movie_lines, flag_columns[-1], str(item_path))
    flags = np.column_stack([(movies[column].str.strip() == "1").to_numpy()
                             for column in flag_columns])
    names = np.asarray(genre_names, dtype=object)
    genres = pd.Series(["|".join(names[row]) for row in flags], dtype=str)
    movie_table = pd.DataFrame({"item_id": movies["item_id"], "title": movies["title"],
                                "topics": _genres_as_topics(genres)})
    items = validate_items(movie_table, movie_lines, rejected, str(item_path), None)
    return interactions, _with_tags(items, {})


def _ml100k_genre_names(directory: Path) -> list[str]:
    """Genre names from ``u.genre`` (``name|index`` lines) or the standard 19."""
    genre_path = directory / "u.genre"
    if not genre_path.is_file():
        return list(ML_100K_GENRES)
    pairs = []
    for line in _decode_legacy_text(genre_path).splitlines():
        if "|" in line:
            name, _, index = line.rpartition("|")
            if index.strip().isdigit():
                pairs.append((int(index), name.strip()))
    return [name for _, name in sorted(pairs)] or list(ML_100K_GENRES)


def _split_dat_lines(text: str, n_fields: int, label: str) -> tuple[list[list[str]], np.ndarray]:
    """Split '::'-separated lines into ``n_fields`` fields.

    The free-text field (title, tag) is the second to last one; it may itself contain '::',
    so the line is split from the left for the fields before it and from the right for the
    last one.
    """
    rows, line_numbers = [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        leading = line.split("::", n_fields - 2)
        fields = leading[:-1] + leading[-1].rsplit("::", 1) if len(leading) == n_fields - 1 else []
        if len(fields) != n_fields:
            raise InputError(f"malformed row: expected {n_fields} '::'-separated fields",
                             file=label, row=line_number)
        rows.append(fields)
        line_numbers.append(line_number)
    return rows, np.asarray(line_numbers, dtype=np.int64)


def _load_dat_layout(directory: Path, rejected: RejectedRows
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """ml-1m / ml-10m: ``ratings.dat`` and ``movies.dat`` (+ ``tags.dat``), '::'-separated."""
    ratings_path, movies_path = directory / "ratings.dat", directory / "movies.dat"
    ratings_text = _decode_legacy_text(ratings_path)
    # Ratings hold only numbers, so '::' can become a tab and the fast C parser does the rest.
    ratings = _read_headerless(ratings_text.replace("::", "\t"), "\t",
                               ["user_id", "item_id", "weight", "timestamp"], str(ratings_path))
    # blank lines are skipped by the parser; count them so row numbers stay line numbers
    line_numbers = _non_blank_line_numbers(ratings_text)
    _check_field_count(ratings, line_numbers, "timestamp", str(ratings_path))
    interactions = validate_interactions(ratings, line_numbers, rejected, str(ratings_path))

    movie_rows, movie_lines = _split_dat_lines(_decode_legacy_text(movies_path), 3,
                                               str(movies_path))
    movies = pd.DataFrame(movie_rows, columns=["item_id", "title", "genres"], dtype=str)
    movie_table = pd.DataFrame({"item_id": movies["item_id"], "title": movies["title"],
                                "topics": _genres_as_topics(movies["genres"])})
    items = validate_items(movie_table, movie_lines, rejected, str(movies_path), None)

    tags_path = directory / "tags.dat"
    annotations = empty_annotations()
    if tags_path.is_file() and tags_path.read_bytes().strip():
        tag_rows, tag_lines = _split_dat_lines(_decode_legacy_text(tags_path), 4,
                                               str(tags_path))
        tags = pd.DataFrame(tag_rows, columns=["userId", "movieId", "tag", "timestamp"],
                            dtype=str)
        annotations = _annotations_from_tags_table(tags, tag_lines, str(tags_path),
                                                   items["item_id"], rejected)
    return interactions, _with_tags(items, {}), annotations


def _non_blank_line_numbers(text: str) -> np.ndarray:
    """1-based numbers of the non-empty lines (the rows the CSV parser returns)."""
    return np.asarray([number for number, line in enumerate(text.splitlines(), start=1)
                       if line], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$RELREC_CACHE/datasets`` when ``RELREC_CACHE`` is set, else
    ``~/.cache/relrec/datasets``."""
    root = os.environ.get("RELREC_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "relrec"
    return base / "datasets"


def download_movielens(name: str = "ml-latest-small", cache_dir: str | Path | None = None
                       ) -> Path:
    """Download and extract an official MovieLens zip; return the dataset directory.

    The zip comes from ``https://files.grouplens.org/datasets/movielens/{name}.zip`` and is
    extracted to ``<cache_dir>/<name>`` (default cache: :func:`default_cache_dir`). Extraction
    happens in a temporary directory that is renamed into place, so an interrupted download
    never leaves a half-written dataset. When the directory already exists and holds a
    MovieLens layout nothing is downloaded.
    """
    if not _DATASET_NAME_PATTERN.match(name):
        raise InputError(f"invalid MovieLens dataset name {name!r} (e.g. 'ml-latest-small')")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / name
    if _is_movielens_directory(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = MOVIELENS_URL.format(name=name)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        zip_path = work_dir / f"{name}.zip"
        _fetch(url, zip_path)
        extracted = work_dir / "extracted"
        _extract_zip(zip_path, extracted, url)
        dataset_dir = _single_dataset_directory(extracted, url)
        if target.exists() and not _is_movielens_directory(target):
            shutil.rmtree(target)  # a broken leftover, not a complete dataset
        try:
            os.rename(dataset_dir, target)
        except OSError:
            if not _is_movielens_directory(target):  # not a concurrent download that won
                raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return target


def _is_movielens_directory(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    try:
        detect_layout(directory)
    except InputError:
        return False
    return True


def _fetch(url: str, destination: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise RelrecError(
            f"could not download {url}: {error}; download and extract it yourself and pass "
            "the directory instead") from error


def _extract_zip(zip_path: Path, destination: Path, url: str) -> None:
    """Extract a zip, refusing members that would land outside ``destination``."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            root = destination.resolve()
            for member in archive.namelist():
                member_path = (root / member).resolve()
                if member_path != root and root not in member_path.parents:
                    raise RelrecError(f"unsafe path {member!r} in {url}")
            archive.extractall(destination)
    except zipfile.BadZipFile as error:
        raise RelrecError(f"{url} did not return a valid zip file: {error}") from error


def _single_dataset_directory(extracted: Path, url: str) -> Path:
    """The MovieLens directory inside an extracted zip (GroupLens zips hold one folder)."""
    try:
        _, data_directory = detect_layout(extracted)
    except InputError as error:
        raise RelrecError(f"{url} does not contain a MovieLens dataset") from error
    return data_directory
