"""Read interaction logs and item metadata from files or DataFrames, validate them, and report
every row that is dropped.

Conventions (see ``docs/ARCHITECTURE.md``):

* Every value is read as text first, so ids stay exactly as written (``"007"`` stays
  ``"007"``); surrounding whitespace is stripped, and an empty string means *missing*.
* Row numbers in messages are 1-based and count the header as row 1, so the first data row of
  a CSV is row 2 (the line number in the file). Parquet files and DataFrames follow the same
  convention (data row ``k``, 0-based, is row ``k + 2``); JSON Lines files, which have no
  header, report the line number of the record.
* Bad input that a user must fix (missing column, unparseable timestamp or weight, empty or
  non-UTF-8 file, unknown file type) raises :class:`~relrec.errors.InputError`. Rows that can
  be dropped safely (null ids, duplicates, unknown item ids) are dropped and recorded in a
  :class:`RejectedRows` report with a reason, never silently.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from relrec.errors import InputError

__all__ = [
    "RejectedRows",
    "read_table",
    "load_interactions",
    "load_items",
    "restrict_media",
    "filter_unknown_items",
    "finalize",
    "parse_timestamps",
    "load_annotations",
    "empty_annotations",
    "aggregate_tags",
    "with_annotation_tags",
    "SUPPORTED_EXTENSIONS",
]

#: File name endings :func:`read_table` understands, mapped to the format it reads them as.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

INTERACTION_REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_REQUIRED_COLUMNS = ("item_id", "title")
ITEM_LIST_COLUMNS = ("tags", "topics")
ITEM_MEDIA_COLUMNS = ("image", "video")
ANNOTATION_REQUIRED_COLUMNS = ("item_id", "tag", "timestamp")
#: The columns of a dated-annotations table (what :func:`load_annotations` and the MovieLens
#: loader return); ``user_id`` is "" when the input has no user column.
ANNOTATION_COLUMNS = ["item_id", "user_id", "tag", "timestamp"]

REJECTED_COLUMNS = ["file", "row", "column", "reason", "value"]

_URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^data:")
_CSV_FIELD_COUNT_PATTERN = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_UNIX_EPOCH = pd.Timestamp(0, tz="UTC")


# --------------------------------------------------------------------------------------------
# Rejected-rows report
# --------------------------------------------------------------------------------------------


@dataclass
class RejectedRows:
    """Every row dropped during ingest, with the reason; written to ``rejected_rows.csv``.

    Each record is ``{"file", "row", "column", "reason", "value"}``: the file label, the
    1-based row number (header = row 1), the column that caused the drop, a short reason such
    as ``"null"``, ``"duplicate"`` or ``"unknown item_id"``, and the offending value as text.
    """

    records: list[dict] = field(default_factory=list)

    def add(self, file: Any, row: int | None, column: str | None, reason: str, value: Any) -> None:
        """Record one dropped row."""
        self.records.append({
            "file": str(file),
            "row": None if row is None else int(row),
            "column": column,
            "reason": reason,
            "value": _value_as_text(value),
        })

    def add_rows(self, file: Any, rows: Iterable[int], column: str | None, reason: str,
                 values: Iterable[Any]) -> None:
        """Record many dropped rows that share a file, column and reason."""
        file_label = str(file)
        self.records.extend(
            {"file": file_label, "row": int(row), "column": column, "reason": reason,
             "value": _value_as_text(value)}
            for row, value in zip(rows, values)
        )

    def counts(self) -> dict[str, int]:
        """Number of dropped rows per reason (sorted by reason)."""
        return dict(sorted(Counter(record["reason"] for record in self.records).items()))

    def to_frame(self) -> pd.DataFrame:
        """The report as a DataFrame with columns ``file,row,column,reason,value``."""
        frame = pd.DataFrame(self.records, columns=REJECTED_COLUMNS)
        frame["row"] = frame["row"].astype("Int64")
        return frame

    def extend(self, other: "RejectedRows") -> None:
        """Append the records of another report."""
        self.records.extend(other.records)

    def __len__(self) -> int:
        return len(self.records)


def _value_as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _file_format(path: Path) -> str:
    name = path.name.lower()
    for ending in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ending):
            return SUPPORTED_EXTENSIONS[ending]
    raise InputError(
        f"unknown file type {path.suffix or '(no extension)'!r}; expected one of "
        + ", ".join(SUPPORTED_EXTENSIONS),
        file=str(path),
    )


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, Parquet or JSON Lines file with every column as text.

    * ``.csv``/``.tsv`` (optionally ``.gz``): UTF-8 (a BOM is allowed); every value is a string
      and an empty field is ``""`` (never NaN), so ids keep leading zeros.
    * ``.parquet``/``.pq``: scalar columns are converted to strings (nulls become ``""``);
      list columns stay lists of strings.
    * ``.jsonl``/``.ndjson``/``.json``: one JSON object per line (a ``.json`` file holding a
      JSON array of objects works too); scalars become strings, arrays stay lists.

    Raises :class:`InputError` for a missing file, an unknown extension, an empty file (0 bytes,
    or a header without rows), a file that is not UTF-8 (naming the row where decoding fails)
    and malformed content.
    """
    frame, _ = _read_table_with_rows(Path(path))
    return frame


def _read_table_with_rows(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read ``path`` like :func:`read_table`; also return each row's 1-based row number."""
    file_format = _file_format(path)
    if not path.exists():
        raise InputError("file not found", file=str(path))
    if path.is_dir():
        raise InputError("expected a file, found a directory", file=str(path))
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", file=str(path))
    if file_format in ("csv", "tsv"):
        frame = _read_csv(path, separator="," if file_format == "csv" else "\t")
        row_numbers = np.arange(2, len(frame) + 2, dtype=np.int64)
    elif file_format == "parquet":
        frame = _read_parquet(path)
        row_numbers = np.arange(2, len(frame) + 2, dtype=np.int64)
    else:
        frame, row_numbers = _read_json_lines(path)
    if len(frame) == 0:
        raise InputError("empty file: no data rows" + (
            f" (header only: {', '.join(map(str, frame.columns))})" if len(frame.columns) else ""
        ), file=str(path))
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame, row_numbers


def _read_csv(path: Path, separator: str) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path, sep=separator, dtype=str, keep_default_na=False, na_filter=False,
            encoding="utf-8-sig", compression="infer",
        )
    except UnicodeDecodeError as error:
        raise _utf8_error(path, _read_bytes(path)) from error
    except pd.errors.EmptyDataError as error:
        raise InputError("empty file (no header and no rows)", file=str(path)) from error
    except pd.errors.ParserError as error:
        match = _CSV_FIELD_COUNT_PATTERN.search(str(error))
        if match:
            expected, line, seen = match.groups()
            raise InputError(f"malformed row: expected {expected} fields, found {seen}",
                             file=str(path), row=int(line)) from error
        raise InputError(f"malformed CSV: {error}", file=str(path)) from error
    except (OSError, EOFError) as error:
        raise InputError(f"cannot read file: {error}", file=str(path)) from error


def _read_bytes(path: Path) -> bytes:
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def _utf8_error(path: Path, data: bytes) -> InputError:
    """An InputError naming the line of the first byte that is not valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start]
        return InputError(
            f"not valid UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8",
            file=str(path), row=line,
        )
    return InputError("not valid UTF-8 text; save the file as UTF-8", file=str(path))


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(f"cannot read Parquet file: {error}", file=str(path)) from error
    return _as_text_frame(frame)


def _read_json_lines(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _utf8_error(path, data) from error
    records: list[dict] = []
    line_numbers: list[int] = []
    if path.name.lower().endswith(".json") and text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON: {error.msg}", file=str(path),
                             row=error.lineno) from error
        for position, record in enumerate(parsed):
            if not isinstance(record, dict):
                raise InputError(f"record {position + 1} is not a JSON object", file=str(path))
            records.append(record)
            line_numbers.append(position + 1)
    else:
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"not valid JSON: {error.msg}", file=str(path),
                                 row=line_number) from error
            if not isinstance(record, dict):
                raise InputError("expected one JSON object per line", file=str(path),
                                 row=line_number)
            records.append(record)
            line_numbers.append(line_number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return _as_text_frame(frame), np.asarray(line_numbers, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Normalising in-memory frames to text
# --------------------------------------------------------------------------------------------


def _is_list_value(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _scalar_as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 2**63:
            return str(int(value))
        return repr(value)
    if isinstance(value, (np.floating,)):
        return _scalar_as_text(float(value))
    if isinstance(value, pd.Timestamp):
        return _timestamp_as_iso(value)
    if value is pd.NaT or value is pd.NA:
        return ""
    return str(value).strip()


def _timestamp_as_iso(value: pd.Timestamp) -> str:
    if value.tzinfo is not None:
        value = value.tz_convert("UTC").tz_localize(None)
        return value.isoformat() + "Z"
    return value.isoformat()


def _column_as_text(column: pd.Series) -> pd.Series:
    """A column converted to stripped strings ("" for missing), or to lists for list columns."""
    dtype = column.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        values = [_timestamp_as_iso(value) if not pd.isna(value) else "" for value in column]
        return pd.Series(values, index=column.index, dtype=object)
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        text = column.astype("string").fillna("")
        return text.astype(str)
    if pd.api.types.is_float_dtype(dtype):
        return pd.Series([_scalar_as_text(float(value)) for value in column],
                         index=column.index, dtype=str)
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return column.fillna("").astype(str).str.strip()
    values = column.to_numpy(dtype=object)
    if any(_is_list_value(value) for value in values):
        return pd.Series(
            [list(value) if _is_list_value(value) else value for value in values],
            index=column.index, dtype=object,
        )
    return pd.Series([_scalar_as_text(value) for value in values], index=column.index,
                     dtype=str)


def _as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert every scalar column to stripped strings (missing = "") and keep list columns."""
    converted = {str(column).strip(): _column_as_text(frame[column]) for column in frame.columns}
    return pd.DataFrame(converted, index=pd.RangeIndex(len(frame)))


def _resolve_source(source: str | Path | pd.DataFrame, name: str | None, what: str
                    ) -> tuple[pd.DataFrame, np.ndarray, str, Path | None]:
    """Return (text frame, row numbers, file label, directory for relative paths)."""
    if isinstance(source, pd.DataFrame):
        frame = _as_text_frame(source.reset_index(drop=True))
        row_numbers = np.arange(2, len(frame) + 2, dtype=np.int64)
        label = name if name is not None else f"<{what} DataFrame>"
        if len(frame) == 0:
            raise InputError("empty table: no data rows", file=label)
        return frame, row_numbers, label, None
    if not isinstance(source, (str, Path)):
        raise TypeError(f"expected a path or a pandas DataFrame, got {type(source).__name__}")
    path = Path(source).expanduser()
    frame, row_numbers = _read_table_with_rows(path)
    label = name if name is not None else str(source)
    return frame, row_numbers, label, path.resolve().parent


def _require_columns(frame: pd.DataFrame, required: Iterable[str], label: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "(none)"
        names = ", ".join(f"'{column}'" for column in missing)
        raise InputError(
            f"missing column{'s' if len(missing) > 1 else ''} {names}; found: {found}",
            file=label, row=1, column=missing[0],
        )


def _text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as stripped strings; list values (not expected here) are joined with '|'."""
    values = frame[column]
    if values.dtype == object:
        values = pd.Series(
            ["|".join(map(str, value)) if _is_list_value(value) else _scalar_as_text(value)
             for value in values],
            index=values.index, dtype=str,
        )
    return values.astype(str).str.strip()


def _optional_text_as_object(values: pd.Series) -> pd.Series:
    """Strings with "" replaced by None, as an object column."""
    array = values.to_numpy(dtype=object).copy()
    array[values.to_numpy() == ""] = None
    return pd.Series(array, index=values.index, dtype=object)


# --------------------------------------------------------------------------------------------
# Value parsing
# --------------------------------------------------------------------------------------------


def parse_timestamps(text: pd.Series, row_numbers: np.ndarray, label: str,
                     column: str = "timestamp") -> np.ndarray:
    """Parse non-empty timestamp strings to int64 Unix seconds.

    Accepts Unix seconds (integer or decimal; fractions are floored) and ISO-8601 date or
    date-time strings, with or without a UTC offset (a naive time is taken as UTC). The first
    value that is neither raises :class:`InputError` naming ``label``, its row and ``column``.
    """
    text = text.astype(str).str.strip()
    seconds, bad = _timestamp_seconds(text)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"cannot parse timestamp {text.iloc[first]!r}: expected Unix seconds "
            "(e.g. 1700000000) or ISO-8601 (e.g. 2023-11-14T22:13:20Z)",
            file=label, row=int(row_numbers[first]), column=column,
        )
    return seconds


def _timestamp_seconds(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(int64 Unix seconds, unparseable mask)`` of stripped timestamp strings (the formats of
    :func:`parse_timestamps`); unparseable values are 0 in the first array."""
    seconds = np.array(pd.to_numeric(text, errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan), copy=True)
    not_numeric = np.isnan(seconds)
    if not_numeric.any():
        parsed = pd.to_datetime(text[not_numeric], format="ISO8601", utc=True, errors="coerce")
        seconds[not_numeric] = ((parsed - _UNIX_EPOCH) // pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(seconds) | (np.abs(seconds) >= 2**62)
    return np.floor(np.where(bad, 0.0, seconds)).astype(np.int64), bad


def _parse_weights(text: pd.Series, row_numbers: np.ndarray, label: str, column: str
                   ) -> np.ndarray:
    """Parse weights as float64; empty means 1.0; anything else unparseable raises."""
    empty = (text == "").to_numpy()
    weights = pd.to_numeric(text.where(~empty, "1"), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(weights)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(f"cannot parse {column} {text.iloc[first]!r}: expected a number",
                         file=label, row=int(row_numbers[first]), column=column)
    return weights


def _split_list(value: Any) -> list[str]:
    """A '|'-separated string or a list, as a list of stripped non-empty strings."""
    if _is_list_value(value):
        parts = [_scalar_as_text(part) for part in value]
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    else:
        parts = str(value).split("|")
    return [part.strip() for part in parts if part is not None and str(part).strip()]


def _resolve_media_path(value: str, base_dir: Path | None) -> str | None:
    if value == "":
        return None
    if base_dir is None or _URL_PATTERN.match(value):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    return str(base_dir / path)


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------


def _drop_rows(frame: pd.DataFrame, row_numbers: np.ndarray, drop: np.ndarray,
               rejected: RejectedRows, label: str, column: str | None, reason: str,
               values: Iterable[Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """Record the rows where ``drop`` is True in ``rejected`` and return the rest."""
    if not drop.any():
        return frame, row_numbers
    rejected.add_rows(label, row_numbers[drop], column, reason, values)
    keep = ~drop
    return frame.loc[keep].reset_index(drop=True), row_numbers[keep]


def load_interactions(source: str | Path | pd.DataFrame, rejected: RejectedRows, *,
                      name: str | None = None) -> pd.DataFrame:
    """Load and validate an interaction log.

    ``source`` is a file (see :func:`read_table`) or a DataFrame with columns ``user_id``,
    ``item_id``, ``timestamp`` and optionally ``session_id`` and ``weight`` (``rating`` is
    accepted as an alias when ``weight`` is absent); other columns are ignored.

    * A missing required column raises :class:`InputError` (row 1, the header).
    * A row with an empty ``user_id``, ``item_id`` or ``timestamp`` is dropped, reason
      ``"null"``.
    * Timestamps (Unix seconds or ISO-8601) become int64 seconds; an unparseable one raises
      :class:`InputError` naming the row, the column and the value. Weights default to 1.0
      (also for an empty cell); an unparseable weight raises.
    * Exact duplicates of ``(user_id, item_id, timestamp)`` keep the first row; the others are
      dropped with reason ``"duplicate"``.

    Returns columns ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64),
    ``session_id`` (object: str or None), ``weight`` (float64) and ``source_row`` (int64, the
    row number in the input). ``name`` labels the input in messages and in ``rejected``.
    """
    frame, row_numbers, label, _ = _resolve_source(source, name, "interactions")
    return _interactions_from_text_frame(frame, row_numbers, rejected, label)


def _interactions_from_text_frame(frame: pd.DataFrame, row_numbers: np.ndarray,
                                  rejected: RejectedRows, label: str) -> pd.DataFrame:
    """Validate a text frame (see :func:`load_interactions`) with known row numbers."""
    _require_columns(frame, INTERACTION_REQUIRED_COLUMNS, label)
    weight_column = "weight" if "weight" in frame.columns else (
        "rating" if "rating" in frame.columns else None)
    columns = {column: _text_column(frame, column) for column in INTERACTION_REQUIRED_COLUMNS}
    if "session_id" in frame.columns:
        columns["session_id"] = _text_column(frame, "session_id")
    if weight_column is not None:
        columns["weight"] = _text_column(frame, weight_column)
    table = pd.DataFrame(columns)

    for column in INTERACTION_REQUIRED_COLUMNS:
        empty = (table[column] == "").to_numpy()
        table, row_numbers = _drop_rows(table, row_numbers, empty, rejected, label, column,
                                        "null", [""] * int(empty.sum()))

    timestamps = parse_timestamps(table["timestamp"], row_numbers, label)
    if "weight" in table.columns:
        weights = _parse_weights(table["weight"], row_numbers, label, weight_column)
    else:
        weights = np.ones(len(table), dtype=np.float64)
    session_ids = (_optional_text_as_object(table["session_id"]) if "session_id" in table
                   else pd.Series([None] * len(table), dtype=object))

    result = pd.DataFrame({
        "user_id": table["user_id"].astype(str),
        "item_id": table["item_id"].astype(str),
        "timestamp": timestamps,
        "session_id": pd.Series(session_ids.to_numpy(dtype=object), dtype=object),
        "weight": weights,
        "source_row": row_numbers.astype(np.int64),
    })

    duplicate = result.duplicated(["user_id", "item_id", "timestamp"], keep="first").to_numpy()
    if duplicate.any():
        duplicates = result.loc[duplicate]
        values = (duplicates["user_id"] + "," + duplicates["item_id"] + ","
                  + duplicates["timestamp"].astype(str))
        rejected.add_rows(label, duplicates["source_row"], "user_id,item_id,timestamp",
                          "duplicate", values)
        result = result.loc[~duplicate].reset_index(drop=True)
    return result


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def load_items(source: str | Path | pd.DataFrame, rejected: RejectedRows, *,
               name: str | None = None, media_folder: str | Path | None = None,
               restrict_media: bool = False) -> pd.DataFrame:
    """Load and validate item metadata.

    Required columns ``item_id`` and ``title``; optional ``description``, ``tags``, ``topics``,
    ``image``, ``video``; other columns are ignored.

    * ``tags``/``topics``: ``|``-separated strings or real list columns become lists of
      stripped, non-empty strings (``[]`` when missing).
    * ``description``, ``image``, ``video``: ``""`` becomes None. A relative image or video
      path is resolved against the directory of the items file (URLs and absolute paths are
      kept; for a DataFrame source paths are kept as given).
    * An empty title is allowed (``""``). A row with an empty ``item_id`` is dropped
      (``"null"``); a repeated ``item_id`` keeps its first row (``"duplicate"``).
    * ``media_folder`` / ``restrict_media`` (what ``prepare`` uses; see :mod:`relrec.media`):
      media may only be http(s) URLs or files inside ``media_folder`` (relative paths are
      taken under it, symlinks are resolved before the check). Any other value — a path
      outside the folder, a local path with no folder, another URL scheme — is recorded in
      ``rejected`` (file, row, column ``image``/``video``) and the item is kept without it.

    Returns columns ``item_id, title, description, tags, topics, image, video, source_row``.
    """
    frame, row_numbers, label, base_dir = _resolve_source(source, name, "items")
    return _items_from_text_frame(frame, row_numbers, rejected, label, base_dir,
                                  media_folder=media_folder,
                                  restrict_media=restrict_media or media_folder is not None)


def _media_decision(value: str | None, column: str, folder: Path | None
                    ) -> tuple[str | None, str | None]:
    """(value kept or None, reject reason or None) of one media value under the folder rule."""
    from relrec.media import inside_folder, is_http_url, is_url

    if value is None or value == "":
        return None, None
    if is_http_url(value):
        return value, None
    if is_url(value):
        return None, f"{column} URL not http(s)"
    if folder is None:
        return None, f"local {column} path without an images folder (--images)"
    inside = inside_folder(value, folder)
    if inside is None:
        return None, f"{column} outside the images folder"
    return str(inside), None


def restrict_media(items: pd.DataFrame, folder: str | Path | None, rejected: RejectedRows,
                   label: str) -> pd.DataFrame:
    """Apply the media rule of :mod:`relrec.media` to loaded items (``image``, ``video``):
    refused values are recorded in ``rejected`` (with the items' ``source_row``) and set to
    None; kept local paths are returned resolved."""
    from relrec.media import resolve_folder

    folder = resolve_folder(folder)
    items = items.copy()
    rows = items["source_row"].to_numpy() if "source_row" in items else \
        np.arange(2, len(items) + 2)
    for column in ITEM_MEDIA_COLUMNS:
        if column not in items.columns:
            continue
        kept = []
        for value, row in zip(items[column].to_numpy(dtype=object), rows):
            result, reason = _media_decision(value if isinstance(value, str) else None,
                                             column, folder)
            if reason is not None:
                rejected.add(label, int(row), column, reason, value)
            kept.append(result)
        items[column] = pd.Series(kept, index=items.index, dtype=object)
    return items


def _items_from_text_frame(frame: pd.DataFrame, row_numbers: np.ndarray,
                           rejected: RejectedRows, label: str, base_dir: Path | None, *,
                           media_folder: str | Path | None = None,
                           restrict_media: bool = False) -> pd.DataFrame:
    """Validate a text frame (see :func:`load_items`) with known row numbers."""
    _require_columns(frame, ITEM_REQUIRED_COLUMNS, label)
    item_ids = _text_column(frame, "item_id")
    null_id = (item_ids == "").to_numpy()
    frame, row_numbers = _drop_rows(frame, row_numbers, null_id, rejected, label, "item_id",
                                    "null", [""] * int(null_id.sum()))
    item_ids = item_ids[~null_id].reset_index(drop=True)

    duplicate = item_ids.duplicated(keep="first").to_numpy()
    frame, row_numbers = _drop_rows(frame, row_numbers, duplicate, rejected, label, "item_id",
                                    "duplicate", item_ids[duplicate])
    item_ids = item_ids[~duplicate].reset_index(drop=True)
    n_items = len(frame)

    def optional_text(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series([None] * n_items, dtype=object)
        return _optional_text_as_object(_text_column(frame, column))

    def list_column(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series([[] for _ in range(n_items)], dtype=object)
        return pd.Series([_split_list(value) for value in frame[column].to_numpy(dtype=object)],
                         dtype=object)

    def media_column(column: str) -> pd.Series:
        if column not in frame.columns:
            return pd.Series([None] * n_items, dtype=object)
        values = _text_column(frame, column).to_numpy(dtype=object)
        if not restrict_media:
            return pd.Series([_resolve_media_path(value, base_dir) for value in values],
                             dtype=object)
        from relrec.media import resolve_folder

        folder = resolve_folder(media_folder)
        kept = []
        for value, row in zip(values, row_numbers):
            result, reason = _media_decision(value, column, folder)
            if reason is not None:
                rejected.add(label, int(row), column, reason, value)
            kept.append(result)
        return pd.Series(kept, dtype=object)

    return pd.DataFrame({
        "item_id": item_ids.astype(str),
        "title": _text_column(frame, "title").astype(str).reset_index(drop=True),
        "description": optional_text("description"),
        "tags": list_column("tags"),
        "topics": list_column("topics"),
        "image": media_column("image"),
        "video": media_column("video"),
        "source_row": row_numbers.astype(np.int64),
    })


# --------------------------------------------------------------------------------------------
# Dated item annotations (tags with a date)
# --------------------------------------------------------------------------------------------


def empty_annotations() -> pd.DataFrame:
    """An annotations table with no rows (columns :data:`ANNOTATION_COLUMNS`)."""
    return pd.DataFrame({"item_id": pd.Series([], dtype=str), "user_id": pd.Series([], dtype=str),
                         "tag": pd.Series([], dtype=str),
                         "timestamp": pd.Series([], dtype=np.int64)})


def load_annotations(source: str | Path | pd.DataFrame, items: pd.DataFrame,
                     rejected: RejectedRows, *, name: str | None = None) -> pd.DataFrame:
    """Load dated item annotations: one tag on one item at one time.

    ``source`` is a file (see :func:`read_table`: CSV, TSV, Parquet, JSON Lines) or a DataFrame
    with columns ``item_id``, ``tag``, ``timestamp`` and optionally ``user_id`` (who wrote the
    tag; without it every row counts as its own annotator when tags are ranked); other columns
    are ignored. These tags are *dated*: ``prepare`` adds to an item's ``tags`` only the ones
    written before its content cut (see :func:`relrec.data.prepare.content_cut`), whereas the
    ``tags`` column of the items file has no date and is always used as given.

    Rows that can be dropped are dropped and recorded in ``rejected`` with the file, row and
    column: an empty ``item_id``, ``tag`` or ``timestamp`` (``"null"``), a timestamp that is
    neither Unix seconds nor ISO-8601 (``"unparseable timestamp"``: an annotation without a
    usable date cannot be placed before or after the cut) and an ``item_id`` not in ``items``
    (``"unknown item_id"``). A missing required column raises :class:`InputError`.

    Returns columns ``item_id``, ``user_id`` ("" when not given), ``tag`` (stripped, case
    kept) and ``timestamp`` (int64 Unix seconds).
    """
    frame, row_numbers, label, _ = _resolve_source(source, name, "annotations")
    return _annotations_from_text_frame(frame, row_numbers, rejected, label, items["item_id"])


def _annotations_from_text_frame(frame: pd.DataFrame, row_numbers: np.ndarray,
                                 rejected: RejectedRows, label: str, known_item_ids: pd.Series,
                                 *, item_column: str = "item_id", user_column: str = "user_id",
                                 tag_column: str = "tag", timestamp_column: str = "timestamp"
                                 ) -> pd.DataFrame:
    """Validate a text frame of annotations (see :func:`load_annotations`); the column names
    are those of the input (MovieLens: ``movieId``, ``userId``), so rejects name them."""
    _require_columns(frame, (item_column, tag_column, timestamp_column), label)
    item_ids = _text_column(frame, item_column)
    tags = _text_column(frame, tag_column)
    stamps = _text_column(frame, timestamp_column)
    users = (_text_column(frame, user_column) if user_column in frame.columns
             else pd.Series([""] * len(frame), index=frame.index, dtype=str))
    dropped = np.zeros(len(frame), dtype=bool)

    def reject(mask: np.ndarray, column: str, reason: str, values: pd.Series) -> None:
        mask = mask & ~dropped
        rejected.add_rows(label, row_numbers[mask], column, reason, values[mask])
        dropped[mask] = True

    reject((item_ids == "").to_numpy(), item_column, "null", item_ids)
    reject((tags == "").to_numpy(), tag_column, "null", tags)
    reject((stamps == "").to_numpy(), timestamp_column, "null", stamps)
    seconds, unparseable = _timestamp_seconds(stamps.where(~dropped, "0"))
    reject(unparseable, timestamp_column, "unparseable timestamp", stamps)
    reject(~item_ids.isin(known_item_ids).to_numpy(), item_column, "unknown item_id", item_ids)
    keep = ~dropped
    return pd.DataFrame({
        "item_id": item_ids[keep].astype(str).to_numpy(),
        "user_id": users[keep].astype(str).to_numpy(),
        "tag": tags[keep].astype(str).to_numpy(),
        "timestamp": seconds[keep].astype(np.int64),
    })


def aggregate_tags(item_ids: pd.Series, user_ids: pd.Series, tags: pd.Series
                   ) -> dict[str, list[str]]:
    """item id -> distinct lower-cased tags, most users first, ties alphabetical.

    A user who wrote the same tag twice counts once; an empty user id counts as its own
    annotator on every row (an annotations file without a ``user_id`` column).
    """
    users = user_ids.astype(str).to_numpy(dtype=object).copy()
    anonymous = users == ""
    users[anonymous] = [f"\0row{position}" for position in np.flatnonzero(anonymous)]
    table = pd.DataFrame({"item": item_ids.astype(str).to_numpy(), "user": users,
                          "tag": tags.astype(str).str.strip().str.lower().to_numpy()})
    table = table[table["tag"] != ""].drop_duplicates()
    counts = table.groupby(["item", "tag"], sort=False).size().reset_index(name="users")
    counts = counts.sort_values(["item", "users", "tag"], ascending=[True, False, True],
                                kind="stable")
    return {item: list(group) for item, group in counts.groupby("item", sort=False)["tag"]}


def with_annotation_tags(items: pd.DataFrame, annotations: pd.DataFrame) -> pd.DataFrame:
    """``items`` with the tags of ``annotations`` (already cut to the allowed dates) added.

    An item's own ``tags`` (undated, from the items file) come first as given; then its
    annotation tags in :func:`aggregate_tags` order, leaving out those it already has
    (compared lower-cased). Without annotations the items are returned unchanged.
    """
    if annotations is None or not len(annotations):
        return items
    by_item = aggregate_tags(annotations["item_id"], annotations["user_id"],
                             annotations["tag"])
    merged = []
    for item_id, own in zip(items["item_id"], items["tags"]):
        own = list(own) if own is not None else []
        extra = by_item.get(item_id, [])
        if extra:
            present = {str(tag).strip().lower() for tag in own}
            own += [tag for tag in extra if tag not in present]
        merged.append(own)
    items = items.copy()
    items["tags"] = pd.Series(merged, index=items.index, dtype=object)
    return items


# --------------------------------------------------------------------------------------------
# Joining and finishing
# --------------------------------------------------------------------------------------------


def filter_unknown_items(interactions: pd.DataFrame, items: pd.DataFrame,
                         rejected: RejectedRows, *, name: str) -> pd.DataFrame:
    """Drop interactions whose ``item_id`` is not in ``items`` (reason ``"unknown item_id"``).

    ``name`` labels the interactions input in ``rejected``; the row numbers come from the
    interactions' ``source_row`` column when present.
    """
    unknown = ~interactions["item_id"].isin(items["item_id"]).to_numpy()
    if not unknown.any():
        return interactions
    dropped = interactions.loc[unknown]
    rows = (dropped["source_row"] if "source_row" in dropped.columns
            else pd.Series(np.flatnonzero(unknown) + 2))
    rejected.add_rows(name, rows, "item_id", "unknown item_id", dropped["item_id"])
    return interactions.loc[~unknown].reset_index(drop=True)


def finalize(interactions: pd.DataFrame, items: pd.DataFrame
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign dense item indices and put both tables in their run-directory form.

    Items get ``item_index`` 0..n-1 in the order they appear in the items table; interactions
    get the ``item_index`` of their item and are sorted by ``(user_id, timestamp,
    item_index)``. ``source_row`` columns are dropped. Interactions must only reference known
    items (run :func:`filter_unknown_items` first); otherwise ``ValueError``.
    """
    items = items.drop(columns=["source_row"], errors="ignore").reset_index(drop=True)
    if items["item_id"].duplicated().any():
        raise ValueError("items have duplicate item_id values; load them with load_items")
    items.insert(0, "item_index", np.arange(len(items), dtype=np.int64))

    index_by_item_id = pd.Series(items["item_index"].to_numpy(), index=items["item_id"])
    item_index = interactions["item_id"].map(index_by_item_id)
    if item_index.isna().any():
        missing = interactions.loc[item_index.isna(), "item_id"].iloc[0]
        raise ValueError(f"interaction item_id {missing!r} is not in items; "
                         "call filter_unknown_items first")
    interactions = interactions.drop(columns=["source_row"], errors="ignore").copy()
    interactions["item_index"] = item_index.to_numpy(dtype=np.int64)
    interactions = interactions.sort_values(
        ["user_id", "timestamp", "item_index"], kind="stable").reset_index(drop=True)
    leading = ["user_id", "item_id", "item_index", "timestamp", "session_id", "weight"]
    ordered = [column for column in leading if column in interactions.columns]
    ordered += [column for column in interactions.columns if column not in ordered]
    return interactions[ordered], items
