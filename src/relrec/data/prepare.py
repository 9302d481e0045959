"""The ``prepare`` stage: validated tables → sessions → pairs → split, written to a run dir.

DuckDB runs the SQL of :mod:`relrec.data.sessions` and :mod:`relrec.data.pairs` over an
Arrow table or a Parquet file, so data larger than memory spills to disk under
``duckdb_memory_limit``.

Content is time-true: dated annotations (MovieLens tags, ``--annotations``) enter the items'
``tags`` only when written before the content cut, which :func:`content_cut` derives from the
time split of the interactions (:attr:`PrepareConfig.content_cut`).
"""

from __future__ import annotations

import contextlib
import json
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from relrec.config import PrepareConfig, RunConfig
from relrec.data.ingest import (finalize, load_annotations, load_interactions, load_items,
                                with_annotation_tags)
from relrec.data.pairs import item_frequency_sql, next_item_pairs_sql, training_pairs_sql
from relrec.data.sessions import sessionize_sql
from relrec.data.split import TEST, VALID, TimeSplit, assign_period, time_split
from relrec.data.validate import (RejectedRows, empty_annotations, filter_unknown_items,
                                  restrict_media)
from relrec.errors import InputError
from relrec.manifest import atomic_write_json, file_sha256, library_versions
from relrec.data.movielens import load_movielens


@dataclass
class PairTables:
    split: TimeSplit
    train_pairs: pd.DataFrame  # trigger_index, candidate_index, pair_count
    valid_pairs: pd.DataFrame  # trigger_index, target_index, cold
    test_pairs: pd.DataFrame  # trigger_index, target_index, cold
    item_stats: pd.DataFrame  # item_index, trigger_frequency, candidate_frequency, train_interactions, in_train
    counts: dict
    train_sessions: pd.DataFrame | None = None  # user_id, session_key, group_position, item_index


def connect(config: PrepareConfig) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    if config.duckdb_memory_limit:
        connection.execute(f"SET memory_limit = '{config.duckdb_memory_limit}'")
    if config.duckdb_threads:
        connection.execute(f"SET threads = {int(config.duckdb_threads)}")
    connection.execute("SET preserve_insertion_order = false")
    return connection


def extract_pairs(interactions: pd.DataFrame, n_items: int, config: PrepareConfig,
                  connection: duckdb.DuckDBPyConnection | None = None,
                  split: TimeSplit | None = None) -> PairTables:
    """Sessionize, split by time and extract training / validation / test pairs (``split``:
    given boundaries instead of the configured fractions)."""
    if interactions.empty:
        raise InputError("no interactions left after validation")
    if split is None:
        split = time_split(interactions["timestamp"].to_numpy(), config.valid_fraction,
                           config.test_fraction)
    period = assign_period(interactions["timestamp"].to_numpy(), split)
    period_counts = np.bincount(period, minlength=3)
    if period_counts[0] == 0 or period_counts[VALID] == 0 or (
            split.test_start is not None and period_counts[TEST] == 0):
        raise InputError(
            f"time split {config.valid_fraction}/{config.test_fraction} leaves an empty period "
            f"(train/valid/test interactions: {period_counts.tolist()}); "
            "too few distinct timestamps")
    session_ids = interactions.get("session_id")
    use_given_sessions = session_ids is not None and session_ids.notna().any()
    events = pd.DataFrame({
        "user_id": interactions["user_id"].astype(str),
        "item_index": interactions["item_index"].astype("int64"),
        "timestamp": interactions["timestamp"].astype("int64"),
        "session_id": (session_ids.fillna("").astype(str) if use_given_sessions
                       else pd.Series([""] * len(interactions), index=interactions.index)),
        "period": period.astype("int32"),
    })
    connection = connection or connect(config)
    connection.register("events", events)
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE sessionized AS "
        + sessionize_sql("events", config.session_gap_seconds, use_given_sessions))
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE training_pairs AS "
        + training_pairs_sql("sessionized", config.window))
    train_pairs = connection.execute(
        "SELECT * FROM training_pairs ORDER BY trigger_index, candidate_index").df()
    frequencies = connection.execute(
        item_frequency_sql("training_pairs") + " ORDER BY item_index").df()
    # training sessions as ordered item sequences (item2vec and other sequence peers)
    train_sessions = connection.execute(
        "SELECT user_id, session_key, group_position, item_index FROM sessionized "
        "WHERE period = 0 ORDER BY user_id, session_key, group_position, item_index").df()
    session_count = connection.execute(
        "SELECT period, COUNT(DISTINCT user_id || '#' || session_key) AS sessions "
        "FROM sessionized GROUP BY period ORDER BY period").fetchall()

    train_interactions = np.bincount(
        events.loc[events["period"] == 0, "item_index"].to_numpy(), minlength=n_items)
    in_train = train_interactions > 0
    evaluation = {}
    bulk_counts = {"valid": 0, "test": 0}
    for name, period_code in (("valid", VALID), ("test", TEST)):
        if period_code == TEST and split.test_start is None:
            evaluation[name] = pd.DataFrame(
                {"trigger_index": pd.Series([], dtype="int64"),
                 "target_index": pd.Series([], dtype="int64"),
                 "cold": pd.Series([], dtype=bool),
                 "user_id": pd.Series([], dtype=str)})
            continue
        frame = connection.execute(
            next_item_pairs_sql("sessionized", period_code, config.eval_lookahead)
            + " ORDER BY user_id, session_key, trigger_position, trigger_index, target_index"
        ).df()
        group_size = frame.groupby(["user_id", "session_key", "trigger_position",
                                    "trigger_index"])["target_index"].transform("size")
        bulk = group_size.to_numpy() > config.max_target_group
        bulk_counts[name] = int(bulk.sum())
        frame = frame[~bulk]
        users = frame["user_id"].astype(str).to_numpy()
        frame = frame[["trigger_index", "target_index"]].astype("int64").reset_index(drop=True)
        frame["cold"] = ~(in_train[frame["trigger_index"].to_numpy()]
                          & in_train[frame["target_index"].to_numpy()])
        # the user of each held-out pair: intervals resample users, not triggers
        frame["user_id"] = users
        evaluation[name] = frame

    item_stats = pd.DataFrame({"item_index": np.arange(n_items, dtype=np.int64)})
    item_stats = item_stats.merge(frequencies, on="item_index", how="left").fillna(0)
    item_stats["trigger_frequency"] = item_stats["trigger_frequency"].astype("int64")
    item_stats["candidate_frequency"] = item_stats["candidate_frequency"].astype("int64")
    item_stats["train_interactions"] = train_interactions.astype("int64")
    item_stats["in_train"] = in_train
    counts = {
        "interactions_by_period": {"train": int(period_counts[0]), "valid": int(period_counts[1]),
                                   "test": int(period_counts[2])},
        "sessions_by_period": {["train", "valid", "test"][int(p)]: int(n)
                               for p, n in session_count},
        "train_pairs_distinct": int(len(train_pairs)),
        "train_pairs_total": int(train_pairs["pair_count"].sum()) if len(train_pairs) else 0,
        "valid_pairs": int(len(evaluation["valid"])),
        "valid_pairs_cold": int(evaluation["valid"]["cold"].sum()),
        "test_pairs": int(len(evaluation["test"])),
        "test_pairs_cold": int(evaluation["test"]["cold"].sum()),
        "valid_pairs_left_out_bulk_groups": bulk_counts["valid"],
        "test_pairs_left_out_bulk_groups": bulk_counts["test"],
        "items_in_train": int(in_train.sum()),
        "sessions_from": "session_id column" if use_given_sessions else
        f"gap > {config.session_gap_seconds}s",
    }
    train_pairs = train_pairs.astype("int64")
    return PairTables(split, train_pairs, evaluation["valid"], evaluation["test"], item_stats,
                      counts, train_sessions)


def write_refit_run(run_dir: str | Path, out_dir: str | Path, config: RunConfig) -> dict:
    """A run for the final refit of a chosen model: the same items, content and evaluation
    pairs, but training pairs from the training **and** validation periods (every session
    before the test period; with no test period, all the data). The test period is not read.

    The validation period's pairs stay as the (now seen) early-stopping input, so a refit must
    train a fixed number of epochs (``keep_epoch = "last"``). Interactions at the very last
    timestamp before the test period form a token "validation" period here (the split needs
    one), so they give no training pairs. Dated content keeps the original run's cut.
    Returns the refit run's manifest."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    test_start = manifest["split"]["test_start"]
    interactions = pd.read_parquet(run_dir / "data" / "interactions.parquet")
    if test_start is not None:
        interactions = interactions[interactions["timestamp"] < test_start]
    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    split = TimeSplit(valid_start=int(interactions["timestamp"].max()), test_start=None)
    pairs = extract_pairs(interactions.reset_index(drop=True), len(items), config.prepare,
                          split=split)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "pairs").mkdir(parents=True)
    shutil.copytree(run_dir / "data", out_dir / "data")
    if (run_dir / "content").exists():
        shutil.copytree(run_dir / "content", out_dir / "content")
    pairs.train_pairs.to_parquet(out_dir / "pairs" / "train_pairs.parquet", index=False)
    pairs.item_stats.to_parquet(out_dir / "pairs" / "item_stats.parquet", index=False)
    if pairs.train_sessions is not None:
        pairs.train_sessions.to_parquet(out_dir / "pairs" / "train_sessions.parquet",
                                        index=False)
    shutil.copyfile(run_dir / "pairs" / "valid_pairs.parquet",
                    out_dir / "pairs" / "valid_pairs.parquet")
    pairs.test_pairs.to_parquet(out_dir / "pairs" / "test_pairs.parquet", index=False)
    refit = {key: manifest[key] for key in ("relrec_run", "config", "inputs", "rows",
                                            "rejected", "content_cut", "content", "versions")
             if key in manifest}
    refit.update({"split": manifest["split"], "refit_of": str(run_dir),
                  "refit_split": split.to_dict(),
                  "pairs": {**pairs.counts, "training_periods": "train + valid"}})
    atomic_write_json(out_dir / "manifest.json", refit)
    return refit


CONTENT_CUT_RULES = ("train_end", "data_end")


def content_cut(annotation_timestamps: np.ndarray, interaction_timestamps: np.ndarray,
                split: TimeSplit, rule: str = "train_end") -> tuple[np.ndarray, dict]:
    """Which dated annotations may enter the features: ``(used mask, manifest record)``.

    * ``"train_end"`` (default): only annotations dated before the validation period,
      ``timestamp < split.valid_start`` — the end of the training period, whatever
      ``test_fraction`` is (with ``test_fraction = 0`` too, so choices made on validation
      never see validation-period content).
    * ``"data_end"``: a final refit for serving — everything up to the last interaction,
      ``timestamp <= max(interaction timestamps)``. Validation and test numbers of such a
      run are not time-true.

    The record is ``{"rule", "cut_timestamp", "condition", "annotations_total",
    "annotations_used", "annotations_held_back"}``.
    """
    timestamps = np.asarray(annotation_timestamps, dtype=np.int64)
    if rule == "train_end":
        cut = int(split.valid_start)
        used = timestamps < cut
        condition = f"timestamp < {cut}"
    elif rule == "data_end":
        cut = int(np.max(interaction_timestamps))
        used = timestamps <= cut
        condition = f"timestamp <= {cut}"
    else:
        raise ValueError(f"unknown content_cut {rule!r} (expected one of {CONTENT_CUT_RULES})")
    record = {"rule": rule, "cut_timestamp": cut, "condition": condition,
              "annotations_total": int(len(timestamps)), "annotations_used": int(used.sum()),
              "annotations_held_back": int(len(timestamps) - used.sum())}
    return used, record


def write_prepared_run(run_dir: str | Path, interactions: pd.DataFrame, items: pd.DataFrame,
                       pairs: PairTables, config: RunConfig, rejected_frame: pd.DataFrame,
                       rejected_counts: dict, inputs: dict[str, str | Path | None], *,
                       content_cut_record: dict | None = None) -> dict:
    """Write tables and a fresh manifest; returns the manifest.

    ``content_cut_record`` is :func:`content_cut`'s record of the dated annotations (when not
    given: the configured rule with no annotations)."""
    if content_cut_record is None:
        _, content_cut_record = content_cut(np.zeros(0, np.int64),
                                            interactions["timestamp"].to_numpy(), pairs.split,
                                            config.prepare.content_cut)
    run_dir = Path(run_dir)
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    (run_dir / "pairs").mkdir(parents=True, exist_ok=True)
    items.to_parquet(run_dir / "data" / "items.parquet", index=False)
    interactions.to_parquet(run_dir / "data" / "interactions.parquet", index=False)
    rejected_frame.to_csv(run_dir / "data" / "rejected_rows.csv", index=False)
    pairs.train_pairs.to_parquet(run_dir / "pairs" / "train_pairs.parquet", index=False)
    pairs.valid_pairs.to_parquet(run_dir / "pairs" / "valid_pairs.parquet", index=False)
    pairs.test_pairs.to_parquet(run_dir / "pairs" / "test_pairs.parquet", index=False)
    pairs.item_stats.to_parquet(run_dir / "pairs" / "item_stats.parquet", index=False)
    if pairs.train_sessions is not None:
        pairs.train_sessions.to_parquet(run_dir / "pairs" / "train_sessions.parquet", index=False)
    input_hashes = {}
    for name, path in inputs.items():
        if path is None:
            continue
        path = Path(path)
        if path.is_file():
            input_hashes[name] = {"path": str(path), "sha256": file_sha256(path)}
        elif path.is_dir():
            input_hashes[name] = {"path": str(path), "sha256": {
                child.name: file_sha256(child) for child in sorted(path.iterdir())
                if child.is_file() and child.suffix in {".csv", ".dat", ".data", ".item", ".txt"}}}
        else:
            input_hashes[name] = {"path": str(path), "sha256": None}
    manifest = {
        "relrec_run": 1,
        "config": config.model_dump(mode="json"),
        "inputs": input_hashes,
        "rows": {"items": int(len(items)), "interactions": int(len(interactions))},
        "rejected": rejected_counts,
        "split": pairs.split.to_dict(),
        "content_cut": content_cut_record,
        "pairs": pairs.counts,
        "versions": library_versions(),
    }
    atomic_write_json(run_dir / "manifest.json", manifest)
    return manifest


def prepare_run(out_dir: str | Path, config: RunConfig | None = None, *,
                interactions=None, items=None, movielens: str | Path | None = None,
                images: str | Path | None = None, annotations=None,
                overwrite: bool = False) -> dict:
    """Ingest + validate + pairs → RUN_DIR. Sources are paths or in-memory DataFrames.

    ``out_dir`` must be new or empty; an existing relrec run (it has ``manifest.json``) is
    replaced only with ``overwrite``, and then as a whole (its model, exports, evaluations
    would not match the new data) — see :func:`check_out_dir`.

    Give either ``interactions`` and ``items`` (generic layout) or ``movielens`` (a MovieLens
    directory, optionally with a posters folder ``images``). ``annotations`` is an optional
    table of dated tags (``item_id, tag, timestamp`` [, ``user_id``]; see
    :func:`relrec.data.ingest.load_annotations`), for either layout. Dated annotations —
    these and MovieLens' tags — are added to the items' ``tags`` only when dated before the
    content cut (:func:`content_cut`, ``config.prepare.content_cut``); the items file's own
    ``tags`` column has no date and is kept as given.

    ``images`` is the one folder item media (``image``, ``video``) may come from, for either
    layout, recorded in the manifest (``inputs.images.path``) for ``embed`` and the service:
    relative paths are taken under it, and a path outside it (symlinks resolved), a local path
    when no folder is given or a URL other than http(s) is a counted reject — the item is kept
    without it (see :mod:`relrec.data.media`). http(s) URLs are kept as given. Returns the manifest.
    """
    if movielens is not None and (interactions is not None or items is not None):
        given = "--interactions" if interactions is not None else "--items"
        raise InputError(f"--movielens and {given} were both given: a run is prepared from "
                         "one source; give --movielens alone, or --interactions and --items")
    replace = check_out_dir(out_dir, overwrite, (interactions, items, movielens, images,
                                                 annotations))
    config = config or RunConfig()
    rejected = RejectedRows(records=[])
    annotation_frame = empty_annotations()
    images_folder = None
    if images is not None:  # the one folder item media may come from (relrec.data.media)
        images_folder = Path(images).expanduser()
        if not images_folder.is_dir():
            raise InputError("images directory not found", file=str(images_folder))
        images_folder = images_folder.resolve()
    if movielens is not None:
        interaction_frame, item_frame, annotation_frame = load_movielens(
            movielens, images=images, rejected=rejected)
        # posters come from the folder's listing; a symlink out of it is refused here
        item_frame = restrict_media(item_frame, images_folder, rejected,
                                    str(images_folder) if images_folder else str(movielens))
        interactions_name = str(Path(movielens))
        inputs = {"movielens": movielens, "images": None}
    else:
        if interactions is None or items is None:
            raise InputError("give --interactions and --items, or --movielens")
        interaction_frame = load_interactions(interactions, rejected)
        # media: http(s) URLs, or files inside --images (relative paths under it); the rest
        # is a counted reject and the item is kept without it
        item_frame = load_items(items, rejected, media_folder=images_folder,
                                restrict_media=True)
        interactions_name = (str(interactions) if not isinstance(interactions, pd.DataFrame)
                             else "<interactions DataFrame>")
        inputs = {name: (None if isinstance(source, pd.DataFrame) else source)
                  for name, source in (("interactions", interactions), ("items", items))}
    if images_folder is not None:  # what `embed` and the service read images from
        inputs["images"] = images_folder
    if annotations is not None:
        extra = load_annotations(annotations, item_frame, rejected)
        annotation_frame = (pd.concat([annotation_frame, extra], ignore_index=True)
                            if len(annotation_frame) else extra)
        inputs["annotations"] = None if isinstance(annotations, pd.DataFrame) else annotations
    if config.prepare.min_rating is not None:
        low = interaction_frame["weight"] < config.prepare.min_rating
        for row in interaction_frame.loc[low, "source_row"] if "source_row" in interaction_frame \
                else []:
            rejected.add(interactions_name, int(row), "weight",
                         f"below min_rating {config.prepare.min_rating}", None)
        interaction_frame = interaction_frame[~low]
    interaction_frame = filter_unknown_items(interaction_frame, item_frame, rejected,
                                             name=interactions_name)
    interaction_frame, item_frame = finalize(interaction_frame, item_frame)
    pairs = extract_pairs(interaction_frame, len(item_frame), config.prepare)
    # content cut: the split is known only now, so dated tags join the items here
    used, cut_record = content_cut(annotation_frame["timestamp"].to_numpy(),
                                   interaction_frame["timestamp"].to_numpy(), pairs.split,
                                   config.prepare.content_cut)
    item_frame = with_annotation_tags(item_frame, annotation_frame[used])
    if replace:  # the inputs are valid: only now is the old run deleted, as a whole
        clear_run_dir(out_dir)
    return write_prepared_run(out_dir, interaction_frame, item_frame, pairs, config,
                              rejected.to_frame(), rejected.counts(), inputs,
                              content_cut_record=cut_record)


def check_out_dir(out_dir: str | Path, overwrite: bool, sources=()) -> bool:
    """Refuse an ``--out`` that prepare would silently mix with other data; returns True when
    ``out_dir`` is an existing relrec run to be deleted (``overwrite``) before writing.

    New or empty folder: fine. A file: refused. A relrec run (``manifest.json``): refused
    unless ``overwrite`` — new data beside an old model, exports and evaluations would be
    served and reported as if they matched — and even then when one of ``sources`` (input
    paths) lies inside it. Any other non-empty folder: refused, ``overwrite`` or not (it is
    not a run, so nothing says deleting it is safe)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory; choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not (out / "manifest.json").is_file():
        raise InputError(f"--out {out}: a folder that is not empty and not a relrec run "
                         "(no manifest.json); prepare writes only into a new or empty folder, "
                         "and never deletes one that is not a run: choose another --out")
    what = "a relrec run with a trained model" if (out / "model").exists() else "a relrec run"
    if not overwrite:
        raise InputError(f"--out {out}: already {what}; "
                         "preparing into it would leave its model, exports and evaluations "
                         "out of step with the new data: pass --overwrite to delete the whole "
                         "run folder first, or choose another --out")
    with _no_server_on(out):  # refused now, before the inputs are read, and again at clearing
        pass
    resolved = out.resolve()
    for source in sources:
        if isinstance(source, (str, Path)) and Path(source).resolve().is_relative_to(resolved):
            raise InputError(f"--overwrite would delete {source}: the input lies inside the run "
                             f"folder {out}; move it out first")
    return True


SERVE_LOCK = Path("serve_state") / "serve.lock"  # relrec.serve.state_dir: a server's flock


@contextlib.contextmanager
def _no_server_on(run_dir: Path):
    """Hold the run's server lock (``RUN/serve_state/serve.lock``, when there is one) for the
    block; :class:`InputError` when a running server holds it. flock locks belong to an open
    file description, so a server in this very process conflicts too."""
    lock = Path(run_dir) / SERVE_LOCK
    try:
        descriptor = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield
        return
    except OSError as error:
        raise InputError(f"--out {run_dir}: cannot check whether a relrec server uses it "
                         f"({lock}: {error.strerror or error}); stop any server on it first") \
            from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"--out {run_dir}: a relrec server is running on {run_dir} (its "
                             f"state folder {lock.parent} is locked); stop it first") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def clear_run_dir(run_dir: str | Path) -> None:
    """Delete everything inside a run folder (the folder itself, or the link to it, stays);
    refused (:class:`InputError`) while a relrec server holds the lock in its state folder."""
    with _no_server_on(Path(run_dir)):
        for child in Path(run_dir).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
