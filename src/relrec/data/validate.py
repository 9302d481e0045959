"""Validate text frames (from :mod:`relrec.data.readers`) into typed tables, and report every
row that is dropped.

* Bad input that a user must fix (missing column, unparseable timestamp or weight) raises
  :class:`~relrec.errors.InputError` naming the file, the row (1-based, header = row 1) and
  the column.
* Rows that can be dropped safely (null ids, duplicates, unknown item ids, media outside the
  images folder) are dropped and recorded in a :class:`RejectedRows` report with a reason,
  never silently.

The rules are documented on the loaders that apply them:
:func:`relrec.data.ingest.load_interactions`, :func:`relrec.data.ingest.load_items` and
:func:`relrec.data.ingest.load_annotations`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from relrec.data.readers import is_list_value, scalar_as_text
from relrec.errors import InputError
from relrec.data.media import inside_folder, is_http_url, is_url, resolve_folder

__all__ = [
    "RejectedRows",
    "require_columns",
    "parse_timestamps",
    "validate_interactions",
    "validate_items",
    "validate_annotations",
    "restrict_media",
    "filter_unknown_items",
    "empty_annotations",
    "INTERACTION_REQUIRED_COLUMNS",
    "ITEM_REQUIRED_COLUMNS",
    "ANNOTATION_REQUIRED_COLUMNS",
    "ANNOTATION_COLUMNS",
    "REJECTED_COLUMNS",
]

INTERACTION_REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_REQUIRED_COLUMNS = ("item_id", "title")
ITEM_MEDIA_COLUMNS = ("image", "video")
ANNOTATION_REQUIRED_COLUMNS = ("item_id", "tag", "timestamp")
#: The columns of a dated-annotations table (what :func:`validate_annotations` and the MovieLens
#: loader return); ``user_id`` is "" when the input has no user column.
ANNOTATION_COLUMNS = ["item_id", "user_id", "tag", "timestamp"]

REJECTED_COLUMNS = ["file", "row", "column", "reason", "value"]

_URL_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://|^data:")
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
# Columns and values
# --------------------------------------------------------------------------------------------


def require_columns(frame: pd.DataFrame, required: Iterable[str], label: str) -> None:
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
            ["|".join(map(str, value)) if is_list_value(value) else scalar_as_text(value)
             for value in values],
            index=values.index, dtype=str,
        )
    return values.astype(str).str.strip()


def _optional_text_as_object(values: pd.Series) -> pd.Series:
    """Strings with "" replaced by None, as an object column."""
    array = values.to_numpy(dtype=object).copy()
    array[values.to_numpy() == ""] = None
    return pd.Series(array, index=values.index, dtype=object)


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
    if is_list_value(value):
        parts = [scalar_as_text(part) for part in value]
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


def _drop_rows(frame: pd.DataFrame, row_numbers: np.ndarray, drop: np.ndarray,
               rejected: RejectedRows, label: str, column: str | None, reason: str,
               values: Iterable[Any]) -> tuple[pd.DataFrame, np.ndarray]:
    """Record the rows where ``drop`` is True in ``rejected`` and return the rest."""
    if not drop.any():
        return frame, row_numbers
    rejected.add_rows(label, row_numbers[drop], column, reason, values)
    keep = ~drop
    return frame.loc[keep].reset_index(drop=True), row_numbers[keep]


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------


def validate_interactions(frame: pd.DataFrame, row_numbers: np.ndarray,
                          rejected: RejectedRows, label: str) -> pd.DataFrame:
    """Validate a text frame with known row numbers (the rules of
    :func:`relrec.data.ingest.load_interactions`)."""
    require_columns(frame, INTERACTION_REQUIRED_COLUMNS, label)
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


def validate_items(frame: pd.DataFrame, row_numbers: np.ndarray,
                   rejected: RejectedRows, label: str, base_dir: Path | None, *,
                   media_folder: str | Path | None = None,
                   restrict_media: bool = False) -> pd.DataFrame:
    """Validate a text frame with known row numbers (the rules of
    :func:`relrec.data.ingest.load_items`)."""
    require_columns(frame, ITEM_REQUIRED_COLUMNS, label)
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


def _media_decision(value: str | None, column: str, folder: Path | None
                    ) -> tuple[str | None, str | None]:
    """(value kept or None, reject reason or None) of one media value under the folder rule."""
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
    """Apply the media rule of :mod:`relrec.data.media` to loaded items (``image``, ``video``):
    refused values are recorded in ``rejected`` (with the items' ``source_row``) and set to
    None; kept local paths are returned resolved."""
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


# --------------------------------------------------------------------------------------------
# Dated item annotations (tags with a date)
# --------------------------------------------------------------------------------------------


def empty_annotations() -> pd.DataFrame:
    """An annotations table with no rows (columns :data:`ANNOTATION_COLUMNS`)."""
    return pd.DataFrame({"item_id": pd.Series([], dtype=str), "user_id": pd.Series([], dtype=str),
                         "tag": pd.Series([], dtype=str),
                         "timestamp": pd.Series([], dtype=np.int64)})


def validate_annotations(frame: pd.DataFrame, row_numbers: np.ndarray,
                         rejected: RejectedRows, label: str, known_item_ids: pd.Series,
                         *, item_column: str = "item_id", user_column: str = "user_id",
                         tag_column: str = "tag", timestamp_column: str = "timestamp"
                         ) -> pd.DataFrame:
    """Validate a text frame of annotations (the rules of
    :func:`relrec.data.ingest.load_annotations`); the column names are those of the input
    (MovieLens: ``movieId``, ``userId``), so rejects name them."""
    require_columns(frame, (item_column, tag_column, timestamp_column), label)
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


# --------------------------------------------------------------------------------------------
# Joining
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
