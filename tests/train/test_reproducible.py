"""Reproducible runs: the same command on the same data, machine kind, thread count and
settings gives bit-identical weights and identical lists — across separate processes (fresh
interpreters, fresh DuckDB connections, fresh torch RNG state), through the installed CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from relrec.data.outofcore import extract_pairs_out_of_core
from relrec.data.synthetic import generate

TRAIN_TOML = """[train]
num_threads = 1
max_epochs = 2
batch_size = 128
embedding_dim = 16
id_dim = 16
hidden_dims = [32]
seed = 3
"""

# one interpreter per run: prepare, train and export through the CLI entry point
SCRIPT = """
import sys
from relrec.cli import app
data, run, toml = sys.argv[1:4]
for args in (["prepare", "--interactions", f"{data}/interactions.csv",
              "--items", f"{data}/items.csv", "--out", run],
             ["train", run, "--preset", "cf", "--config", toml, "--no-progress"],
             ["export", run, "--out", f"{run}/lists.parquet", "--k", "10"]):
    app(args, standalone_mode=False)
"""


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("reproducible-data")
    dataset = generate(n_items=200, n_topics=5, n_users=250, sessions_per_user=3,
                       session_length=6, seed=1)
    dataset.interactions.to_csv(directory / "interactions.csv", index=False)
    items = dataset.items[["item_id", "title", "description"]].copy()
    items["topics"] = ["|".join(topics) for topics in dataset.items["topics"]]
    items.to_csv(directory / "items.csv", index=False)
    (directory / "train.toml").write_text(TRAIN_TOML)
    return directory


def _run_in_fresh_process(data: Path, run_dir: Path) -> Path:
    env = {**os.environ, "PYTHONHASHSEED": "random"}  # nothing may hang on hash order
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(run_dir),
                             str(data / "train.toml")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def two_runs(csv_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("reproducible-runs")
    return (_run_in_fresh_process(csv_data, root / "a"),
            _run_in_fresh_process(csv_data, root / "b"))


def test_weights_are_bit_identical_across_processes(two_runs):
    a, b = two_runs
    weights_a = load_file(str(a / "model" / "weights.safetensors"))
    weights_b = load_file(str(b / "model" / "weights.safetensors"))
    assert sorted(weights_a) == sorted(weights_b)
    for name, tensor in weights_a.items():
        assert tensor.dtype == weights_b[name].dtype and tensor.shape == weights_b[name].shape
        assert tensor.view(-1).view(dtype=_same_width_int(tensor)).equal(
            weights_b[name].view(-1).view(dtype=_same_width_int(tensor))), name
    assert ((a / "model" / "weights.safetensors").read_bytes()
            == (b / "model" / "weights.safetensors").read_bytes())
    history_a = json.loads((a / "model" / "training.json").read_text())["history"]
    history_b = json.loads((b / "model" / "training.json").read_text())["history"]
    assert [(h["loss"], h["valid_recall@50"]) for h in history_a] \
        == [(h["loss"], h["valid_recall@50"]) for h in history_b]


def _same_width_int(tensor):
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[
        tensor.element_size()]


def test_prepared_tables_and_exported_lists_are_identical(two_runs):
    a, b = two_runs
    for relative in ("pairs/train_pairs.parquet", "pairs/item_stats.parquet",
                     "pairs/valid_pairs.parquet", "pairs/test_pairs.parquet",
                     "pairs/train_sessions.parquet", "lists.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / relative),
                                      pd.read_parquet(b / relative), check_exact=True,
                                      obj=relative)
    lists = pd.read_parquet(a / "lists.parquet")
    assert len(lists) > 0


def test_manifest_records_what_the_bits_depend_on(two_runs):
    manifest = json.loads((two_runs[0] / "manifest.json").read_text())
    determinism = manifest["train"]["determinism"]
    assert determinism["seed"] == 3
    assert determinism["deterministic_algorithms"] is True
    assert determinism["torch_threads"] == 1 and determinism["torch_threads_from"] == "config"
    assert determinism["device"] == "cpu" and determinism["cpu_capability"]
    versions = manifest["versions"]
    for key in ("machine", "platform", "python", "torch", "numpy", "pandas", "duckdb",
                "faiss-cpu"):
        assert versions.get(key), key


def test_training_restores_process_settings(csv_data, tmp_path):
    """The deterministic flag and thread count are set for the fit only."""
    import torch

    from relrec.config import RunConfig
    from relrec.data.prepare import prepare_run
    from relrec.train.pipeline import train_run
    from relrec.train.presets import resolve_train_config

    run_dir = tmp_path / "run"
    prepare_run(run_dir, RunConfig(), interactions=csv_data / "interactions.csv",
                items=csv_data / "items.csv")
    threads, enabled = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    config = RunConfig()
    config.train = resolve_train_config(config.train, "cf", {
        "max_epochs": 1, "embedding_dim": 8, "id_dim": 8, "hidden_dims": [8],
        "num_threads": threads + 1})
    summary = train_run(run_dir, config, progress=False)
    assert summary["determinism"]["torch_threads"] == threads + 1
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == enabled


def test_out_of_core_tables_are_written_in_a_total_order(tmp_path):
    """Out-of-core tables come back sorted by their keys (item_stats rows = item indices,
    which RunData reads positionally) and equal across DuckDB thread counts and buckets."""
    dataset = generate(n_items=300, n_topics=5, n_users=300, sessions_per_user=3,
                       session_length=6, seed=4)
    interactions = dataset.interactions[["user_id", "item_id", "timestamp"]]
    source = tmp_path / "interactions.parquet"
    interactions.to_parquet(source, index=False)
    keys = {"item_map.parquet": ["item_index"], "item_stats.parquet": ["item_index"],
            "train_pairs.parquet": ["trigger_index", "candidate_index"],
            "valid_pairs.parquet": ["user_id", "trigger_index", "target_index"],
            "test_pairs.parquet": ["user_id", "trigger_index", "target_index"]}
    outputs = []
    for threads, buckets in ((1, 1), (4, 3)):
        out = tmp_path / f"out-{threads}-{buckets}"
        extract_pairs_out_of_core(source, out, threads=threads, user_buckets=buckets,
                                  memory_limit="1GB")
        tables = {name: pd.read_parquet(out / name) for name in keys}
        for name, columns in keys.items():
            frame = tables[name]
            ordered = frame.sort_values(columns, kind="stable").reset_index(drop=True)
            pd.testing.assert_frame_equal(frame, ordered, obj=name)
        assert (tables["item_stats.parquet"]["item_index"].to_numpy()
                == range(len(tables["item_stats.parquet"]))).all()
        outputs.append(tables)
    for name in keys:
        pd.testing.assert_frame_equal(outputs[0][name], outputs[1][name], obj=name)
