"""Load the inputs of ``prepare`` and assemble the run tables.

Each loader reads its source with :mod:`relrec.data.readers` (CSV, TSV, Parquet, JSON Lines or a
DataFrame, every value as text) and checks it with :mod:`relrec.data.validate` (errors that
name file, row and column; counted rejects). Then :func:`with_annotation_tags` adds dated tags
to the items and :func:`finalize` gives both tables their run-directory form. Conventions:
``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from relrec.data.readers import read_source
from relrec.data.validate import (
    RejectedRows,
    validate_annotations,
    validate_interactions,
    validate_items,
)

__all__ = [
    "load_interactions",
    "load_items",
    "load_annotations",
    "aggregate_tags",
    "with_annotation_tags",
    "finalize",
]

# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_interactions(source: str | Path | pd.DataFrame, rejected: RejectedRows, *,
                      name: str | None = None) -> pd.DataFrame:
    """Load and validate an interaction log.

    ``source`` is a file (see :func:`relrec.data.readers.read_table`) or a DataFrame with
    columns ``user_id``, ``item_id``, ``timestamp`` and optionally ``session_id`` and
    ``weight`` (``rating`` is accepted as an alias when ``weight`` is absent); other columns
    are ignored.

    * A missing required column raises :class:`~relrec.errors.InputError` (row 1, the
      header).
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
    frame, row_numbers, label, _ = read_source(source, name, "interactions")
    return validate_interactions(frame, row_numbers, rejected, label)


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
    * ``media_folder`` / ``restrict_media`` (what ``prepare`` uses; see :mod:`relrec.data.media`):
      media may only be http(s) URLs or files inside ``media_folder`` (relative paths are
      taken under it, symlinks are resolved before the check). Any other value — a path
      outside the folder, a local path with no folder, another URL scheme — is recorded in
      ``rejected`` (file, row, column ``image``/``video``) and the item is kept without it.

    Returns columns ``item_id, title, description, tags, topics, image, video, source_row``.
    """
    frame, row_numbers, label, base_dir = read_source(source, name, "items")
    return validate_items(frame, row_numbers, rejected, label, base_dir,
                          media_folder=media_folder,
                          restrict_media=restrict_media or media_folder is not None)


def load_annotations(source: str | Path | pd.DataFrame, items: pd.DataFrame,
                     rejected: RejectedRows, *, name: str | None = None) -> pd.DataFrame:
    """Load dated item annotations: one tag on one item at one time.

    ``source`` is a file (see :func:`relrec.data.readers.read_table`: CSV, TSV, Parquet, JSON
    Lines) or a DataFrame with columns ``item_id``, ``tag``, ``timestamp`` and optionally
    ``user_id`` (who wrote the tag; without it every row counts as its own annotator when tags
    are ranked); other columns are ignored. These tags are *dated*: ``prepare`` adds to an
    item's ``tags`` only the ones written before its content cut (see
    :func:`relrec.data.prepare.content_cut`), whereas the ``tags`` column of the items file has
    no date and is always used as given.

    Rows that can be dropped are dropped and recorded in ``rejected`` with the file, row and
    column: an empty ``item_id``, ``tag`` or ``timestamp`` (``"null"``), a timestamp that is
    neither Unix seconds nor ISO-8601 (``"unparseable timestamp"``: an annotation without a
    usable date cannot be placed before or after the cut) and an ``item_id`` not in ``items``
    (``"unknown item_id"``). A missing required column raises
    :class:`~relrec.errors.InputError`.

    Returns columns ``item_id``, ``user_id`` ("" when not given), ``tag`` (stripped, case
    kept) and ``timestamp`` (int64 Unix seconds).
    """
    frame, row_numbers, label, _ = read_source(source, name, "annotations")
    return validate_annotations(frame, row_numbers, rejected, label, items["item_id"])


# --------------------------------------------------------------------------------------------
# Dated tags and finishing
# --------------------------------------------------------------------------------------------


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


def finalize(interactions: pd.DataFrame, items: pd.DataFrame
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign dense item indices and put both tables in their run-directory form.

    Items get ``item_index`` 0..n-1 in the order they appear in the items table; interactions
    get the ``item_index`` of their item and are sorted by ``(user_id, timestamp,
    item_index)``. ``source_row`` columns are dropped. Interactions must only reference known
    items (run :func:`relrec.data.validate.filter_unknown_items` first); otherwise ``ValueError``.
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
