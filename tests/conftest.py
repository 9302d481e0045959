"""Shared fixtures: where the real data lives (../shared/data, or $RELREC_SHARED_DATA)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RELREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_shared(relative: str) -> Path:
    """Path under the shared data folder; skip locally, fail in CI when it is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run with ../shared beside the repo")
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def movielens_small_dir() -> Path:
    return require_shared("ml-latest-small")


@pytest.fixture(scope="session")
def posters_dir() -> Path:
    return require_shared("ml-latest-small-posters")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return require_shared("microlens-sample-videos")


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    """Tiny test models run faster on one thread, and results do not depend on thread count."""
    import torch

    torch.set_num_threads(1)
