"""Read interaction logs and item metadata from files or DataFrames into *text frames*.

Every value is read as text first, so ids stay exactly as written (``"007"`` stays ``"007"``);
surrounding whitespace is stripped and an empty string means *missing*. List columns (Parquet,
JSON arrays) stay lists. Nothing here interprets a value: :mod:`relrec.data.validate` turns text
frames into typed, checked tables.

Row numbers are 1-based and count the header as row 1, so the first data row of a CSV is row 2
(the line number in the file). Parquet files and DataFrames follow the same convention (data
row ``k``, 0-based, is row ``k + 2``); JSON Lines files, which have no header, report the line
number of the record. A file that cannot be read (missing, empty, not UTF-8, malformed,
unknown type) raises :class:`~relrec.errors.InputError`.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from relrec.errors import InputError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "read_table",
    "read_table_with_rows",
    "read_source",
    "is_list_value",
    "scalar_as_text",
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

_CSV_FIELD_COUNT_PATTERN = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


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
    frame, _ = read_table_with_rows(Path(path))
    return frame


def read_table_with_rows(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
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


def read_source(source: str | Path | pd.DataFrame, name: str | None, what: str
                ) -> tuple[pd.DataFrame, np.ndarray, str, Path | None]:
    """A file (read like :func:`read_table`) or a DataFrame (converted to text) as
    ``(text frame, row numbers, file label, directory for relative paths)``; ``what`` names
    a DataFrame source in messages when ``name`` is None."""
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
    frame, row_numbers = read_table_with_rows(path)
    label = name if name is not None else str(source)
    return frame, row_numbers, label, path.resolve().parent


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


def is_list_value(value: Any) -> bool:
    """True for a list cell (a list, tuple or array, as Parquet and JSON give them)."""
    return isinstance(value, (list, tuple, np.ndarray))


def scalar_as_text(value: Any) -> str:
    """One cell as stripped text ("" for missing; whole floats without ``.0``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 2**63:
            return str(int(value))
        return repr(value)
    if isinstance(value, (np.floating,)):
        return scalar_as_text(float(value))
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
        return pd.Series([scalar_as_text(float(value)) for value in column],
                         index=column.index, dtype=str)
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return column.fillna("").astype(str).str.strip()
    values = column.to_numpy(dtype=object)
    if any(is_list_value(value) for value in values):
        return pd.Series(
            [list(value) if is_list_value(value) else value for value in values],
            index=column.index, dtype=object,
        )
    return pd.Series([scalar_as_text(value) for value in values], index=column.index,
                     dtype=str)


def _as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert every scalar column to stripped strings (missing = "") and keep list columns."""
    converted = {str(column).strip(): _column_as_text(frame[column]) for column in frame.columns}
    return pd.DataFrame(converted, index=pd.RangeIndex(len(frame)))
