"""The run folder is not silently mixed or lost: ``prepare`` over an existing run, ``--out`` on
a file, ``--movielens`` with ``--interactions``, a corrupt checkpoint, non-finite weights and
Ctrl-C during ``train`` — each a one-line message (no traceback) with what to do next."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from relrec.data.synthetic import generate, write_dataset

ENV = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


def relrec(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "relrec.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def one_line_error(completed, *fragments):
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, completed.stderr
    message = " ".join(completed.stderr.split())
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.fixture(scope="module")
def input_data(tmp_path_factory):
    dataset = generate(n_items=80, n_topics=4, n_users=120, sessions_per_user=3,
                       session_length=6, seed=2)
    directory = tmp_path_factory.mktemp("safety-data")
    paths = write_dataset(dataset, directory)
    return paths["interactions"], paths["items"]


@pytest.fixture(scope="module")
def prepared(input_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("safety-run") / "run"
    completed = relrec("prepare", "--interactions", input_data[0], "--items", input_data[1],
                       "--out", run_dir)
    assert completed.returncode == 0, completed.stderr
    return run_dir


def prepare_args(input_data, out):
    return ("prepare", "--interactions", input_data[0], "--items", input_data[1], "--out", out)


# -- 9. prepare over an existing run --------------------------------------------------------
def test_prepare_over_an_existing_run_needs_overwrite_and_then_clears_it(input_data, prepared,
                                                                         tmp_path):
    run_dir = shutil.copytree(prepared, tmp_path / "run")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "weights.safetensors").write_bytes(b"old weights")
    (run_dir / "export").mkdir()
    (run_dir / "export" / "related.parquet").write_bytes(b"old lists")
    manifest = (run_dir / "manifest.json").read_bytes()
    pairs = (run_dir / "pairs" / "train_pairs.parquet").read_bytes()
    message = one_line_error(relrec(*prepare_args(input_data, run_dir)), "--overwrite",
                             str(run_dir))
    assert "already" in message
    assert (run_dir / "manifest.json").read_bytes() == manifest  # nothing replaced
    assert (run_dir / "pairs" / "train_pairs.parquet").read_bytes() == pairs
    assert (run_dir / "model" / "weights.safetensors").is_file()

    completed = relrec(*prepare_args(input_data, run_dir), "--overwrite")
    assert completed.returncode == 0, completed.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "export").exists()
    assert "train" not in json.loads((run_dir / "manifest.json").read_text())
    assert (run_dir / "pairs" / "train_pairs.parquet").is_file()


def test_overwrite_refuses_while_a_server_holds_the_run_state_lock(input_data, prepared,
                                                                   tmp_path):
    run_dir = shutil.copytree(prepared, tmp_path / "run")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "weights.safetensors").write_bytes(b"old weights")
    # a server's lock: relrec.serve.state_dir takes it on RUN/serve_state/serve.lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from relrec.serve.state_dir import lock_state_dir; "
         "lock_state_dir(sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
         str(run_dir / "serve_state")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
        manifest = (run_dir / "manifest.json").read_bytes()
        one_line_error(relrec(*prepare_args(input_data, run_dir), "--overwrite"),
                       "a relrec server is running on", str(run_dir), "stop it first")
        assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == before
        assert (run_dir / "manifest.json").read_bytes() == manifest
        assert (run_dir / "model" / "weights.safetensors").read_bytes() == b"old weights"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # the server gone (its lock file left behind), --overwrite clears the run as before
    completed = relrec(*prepare_args(input_data, run_dir), "--overwrite")
    assert completed.returncode == 0, completed.stderr
    assert not (run_dir / "model").exists() and not (run_dir / "serve_state").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(input_data, tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    for extra in ((), ("--overwrite",)):
        one_line_error(relrec(*prepare_args(input_data, folder), *extra), str(folder),
                       "not a relrec run")
        assert (folder / "thesis.tex").read_text() == "precious"
        assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


def test_overwrite_refuses_when_an_input_lies_inside_the_run(input_data, prepared, tmp_path):
    run_dir = shutil.copytree(prepared, tmp_path / "run")
    inside = shutil.copyfile(input_data[0], run_dir / input_data[0].name)
    one_line_error(relrec("prepare", "--interactions", inside, "--items", input_data[1],
                          "--out", run_dir, "--overwrite"), "inside", str(inside))
    assert inside.is_file() and (run_dir / "manifest.json").is_file()


def test_prepare_into_an_empty_folder_is_fine(input_data, tmp_path):
    (tmp_path / "empty").mkdir()
    completed = relrec(*prepare_args(input_data, tmp_path / "empty"))
    assert completed.returncode == 0, completed.stderr


# -- 10. --out on a file; corrupt checkpoint ---------------------------------------------------
def test_out_naming_an_existing_file_is_one_line(input_data, tmp_path):
    existing = tmp_path / "run.txt"
    existing.write_text("a file")
    one_line_error(relrec(*prepare_args(input_data, existing)), str(existing), "not a directory")
    assert existing.read_text() == "a file"


def test_a_corrupt_checkpoint_is_refused_in_one_line_and_restart_discards_it(prepared,
                                                                             tmp_path):
    run_dir = shutil.copytree(prepared, tmp_path / "run")
    checkpoint = run_dir / "model" / "checkpoint.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\x00" * 50)
    args = ("train", run_dir, "--preset", "cf", "--epochs", "1", "--no-progress")
    one_line_error(relrec(*args), str(checkpoint), "--restart")
    assert checkpoint.read_bytes().startswith(b"\x10")  # left for the user to decide
    completed = relrec(*args, "--restart")
    assert completed.returncode == 0, completed.stderr
    assert (run_dir / "model" / "weights.safetensors").is_file()
    assert "discarded" in " ".join(completed.stdout.split())


# -- 11. --movielens with --interactions; Ctrl-C during train ------------------------------
def test_movielens_with_interactions_is_refused(input_data, movielens_small_dir, tmp_path):
    for extra in (("--interactions", input_data[0]), ("--items", input_data[1])):
        one_line_error(relrec("prepare", "--movielens", movielens_small_dir, *extra,
                              "--out", tmp_path / "run"), "--movielens", extra[0])
        assert not (tmp_path / "run").exists()


def test_sigint_during_train_says_where_it_stopped_and_how_to_resume(prepared, tmp_path):
    run_dir = shutil.copytree(prepared, tmp_path / "run")
    config = tmp_path / "long.toml"
    config.write_text("[train]\npatience = 100000\nbatch_size = 16\n")
    args = ["train", str(run_dir), "--preset", "cf", "--epochs", "100000", "--config",
            str(config), "--no-progress"]
    checkpoint = run_dir / "model" / "checkpoint.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-m", "relrec.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=ENV,
        # a shell may start background jobs with SIGINT ignored; the CLI should see it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.exists() and time.monotonic() < deadline \
                and process.poll() is None:
            time.sleep(0.05)
        assert checkpoint.exists(), process.communicate(timeout=30)
        os.kill(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr + stdout
    message = " ".join(stderr.split())
    assert "interrupted" in message and "epoch" in message and "step" in message, message
    assert str(checkpoint) in message and f"relrec train {run_dir}" in message, message
    assert not (run_dir / "model" / "weights.safetensors").exists()

    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as handle:
        done = int(handle.metadata()["epoch"])  # the last completed (0-based) epoch
    resumed = relrec(*args[:5], str(done + 2), *args[6:])
    assert resumed.returncode == 0, resumed.stderr
    training = json.loads((run_dir / "model" / "training.json").read_text())
    assert training["resumed_from_epoch"] == done + 1
    assert len(training["history"]) == done + 2
    assert f"resumed from the checkpoint at epoch {done + 2}" in " ".join(resumed.stdout.split())


# -- 7. training refuses to save non-finite weights --------------------------------------------
def test_train_refuses_to_save_non_finite_weights(prepared, tmp_path, monkeypatch):
    import torch
    from typer.testing import CliRunner

    from relrec.cli import app
    from relrec.train.trainer import Trainer

    run_dir = shutil.copytree(prepared, tmp_path / "run")
    fit = Trainer.fit

    def diverging_fit(self, tower, *args, **kwargs):
        summary = fit(self, tower, *args, **kwargs)
        with torch.no_grad():
            next(tower.parameters())[3] = float("nan")  # what a diverged run ends with
        return summary

    monkeypatch.setattr(Trainer, "fit", diverging_fit)
    result = CliRunner().invoke(app, ["train", str(run_dir), "--preset", "cf", "--epochs", "1",
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = " ".join(result.output.split())
    assert "non-finite" in message and "not saved" in message, message
    assert not (run_dir / "model" / "weights.safetensors").exists()
    assert "train" not in json.loads((run_dir / "manifest.json").read_text())
