"""Serve-test fixtures: two small trained runs on the 40 most active ml-latest-small users.

Built once per session (``--epochs 1``); tests that damage a bundle work on a copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from relrec.cli import app as cli_app

ADMIN_TOKEN = "test-token-123-0123456789abcdef-xyz"  # the service wants >= 32 characters


class HashingTextEncoder:
    """A tiny deterministic stand-in for the sentence encoder (bag of hashed words)."""

    dim = 1024

    def __init__(self, model_name: str = "hashing"):
        self.model_name = model_name

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", str(text).lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out


@pytest.fixture(scope="session")
def serve_subset(movielens_small_dir, posters_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve-ml-subset")
    ratings = pd.read_csv(movielens_small_dir / "ratings.csv", dtype=str)
    ratings = ratings[ratings["movieId"] != "999999"]
    users = ratings["userId"].value_counts().index[:40]
    subset = ratings[ratings["userId"].isin(users)].rename(
        columns={"userId": "user_id", "movieId": "item_id", "rating": "weight"})
    subset.to_csv(directory / "interactions.csv", index=False)
    movies = pd.read_csv(movielens_small_dir / "movies.csv", dtype=str)
    image = [str(posters_dir / f"{m}.jpg") if (posters_dir / f"{m}.jpg").exists() else ""
             for m in movies["movieId"]]
    items = pd.DataFrame({"item_id": movies["movieId"], "title": movies["title"],
                          "topics": movies["genres"].replace("(no genres listed)", ""),
                          "image": image})
    items.to_csv(directory / "items.csv", index=False)
    return directory


def _train(subset: Path, run_dir: Path, seed: int, images: Path) -> Path:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["prepare", "--interactions", str(subset / "interactions.csv"),
                                     "--items", str(subset / "items.csv"), "--images", str(images),
                                     "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli_app, ["train", str(run_dir), "--preset", "cf", "--epochs", "1",
                                     "--seed", str(seed), "--no-progress"])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="session")
def serve_runs(serve_subset, posters_dir, tmp_path_factory):
    """(run A, run B): the same data, two seeds — a baseline and a 'new model'."""
    root = tmp_path_factory.mktemp("serve-runs")
    return (_train(serve_subset, root / "a", 0, posters_dir),
            _train(serve_subset, root / "b", 1, posters_dir))


@pytest.fixture(scope="session")
def exported(serve_runs, tmp_path_factory):
    """Run A's related lists exported at K=20 (precomputed mode)."""
    from relrec.related import RelatedItems

    path = tmp_path_factory.mktemp("serve-export") / "related.parquet"
    RelatedItems.load(serve_runs[0]).export(path, 20)
    return path


def _publish(new_run: Path, run_dir: Path) -> None:
    """What a retrain leaves behind: new weights and manifest, each replaced atomically."""
    for relative in ("model/tower_config.json", "model/weights.safetensors", "manifest.json"):
        temporary = run_dir / f"{relative}.publish-tmp"
        shutil.copyfile(new_run / relative, temporary)
        temporary.replace(run_dir / relative)


@pytest.fixture(scope="session")
def publish():
    """``publish(new_run, run_dir)``: simulate a retrain of ``run_dir`` into ``new_run``'s model."""
    return _publish


def copy_run(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("serve_state"))
    return target


@pytest.fixture()
def run_copy(serve_runs, tmp_path):
    return copy_run(serve_runs[0], tmp_path / "run")


def _make_settings(run_dir, **overrides):
    from relrec.serve.app import Settings

    overrides = {"admin_token": ADMIN_TOKEN, "text_encoder_factory": HashingTextEncoder,
                 **overrides}
    return Settings(run_dir=Path(run_dir), **overrides)


@pytest.fixture(scope="session")
def make_settings():
    """Settings for a test app: admin token set, the hashing text encoder."""
    return _make_settings


@pytest.fixture(scope="session")
def admin_headers():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture()
def start_server(tmp_path):
    """Start ``relrec serve ARGS`` on a free loopback port; every server is stopped after."""
    servers = []

    def start(*args, log_name="server.log", timeout=90.0):
        server = ServerProcess([str(a) for a in args], tmp_path / log_name)
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def served_app(serve_runs, posters_dir, tmp_path_factory):
    """One app over run A (compare: run B) shared by the read-only tests."""
    from relrec.serve.app import create_app

    state_dir = tmp_path_factory.mktemp("serve-state")
    return create_app(_make_settings(serve_runs[0], compare_dir=serve_runs[1], state_dir=state_dir,
                                    max_k=100, max_batch=20))


@pytest.fixture(scope="session")
def client(served_app):
    from fastapi.testclient import TestClient

    return TestClient(served_app, raise_server_exceptions=False)


# -- real server subprocesses -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.args = args

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        import httpx

        env = dict(os.environ, RELREC_ADMIN_TOKEN=ADMIN_TOKEN,
                   OMP_NUM_THREADS="1")
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relrec.cli", "serve", *self.args, "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"server not ready in {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
