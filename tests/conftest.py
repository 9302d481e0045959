"""Shared fixtures: where the real data lives (../shared/data, or $RELREC_SHARED_DATA)."""

import os
from pathlib import Path

import pytest

from relrec.config import RunConfig
from relrec.content.stage import write_content
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.run import RunData

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RELREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def in_ci() -> bool:
    """True when the environment variable CI says so ("true", as CI services set it; "1"/"yes")."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_shared(relative: str, root: Path | None = None) -> Path:
    """Path under the shared data folder (``root``, default :data:`SHARED_DATA`).

    Missing: skip for a developer without the data, but FAIL in CI (``CI=true``), where a
    missing folder means the checkout is set up wrong and every real-data test would
    otherwise pass silently as a skip.
    """
    path = Path(SHARED_DATA if root is None else root) / relative
    if not path.exists():
        if in_ci():
            pytest.fail(f"{path} is missing: CI (CI={os.environ.get('CI')!r}) must run with "
                        "../shared/data beside the repo or RELREC_SHARED_DATA set",
                        pytrace=False)
        pytest.skip(f"real data not found at {path}")
    return path


def require_module(name: str):
    """``pytest.importorskip(name)`` locally; in CI a missing optional package fails instead."""
    if in_ci():
        import importlib

        try:
            return importlib.import_module(name)
        except ImportError as err:
            pytest.fail(f"{name} is not importable in CI ({err}): install relrec[all]",
                        pytrace=False)
    return pytest.importorskip(name)


@pytest.fixture(scope="session")
def shared_data_helpers():
    """``(require_shared, require_module)`` for tests (conftest is not importable by name)."""
    return require_shared, require_module


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


@pytest.fixture(autouse=True, scope="session")
def _test_read_ledger(tmp_path_factory):
    """Test reads made by the suite are counted in a ledger of its own, not the user's."""
    path = tmp_path_factory.mktemp("ledger") / "test_reads.json"
    previous = os.environ.get("RELREC_TEST_LEDGER")
    os.environ["RELREC_TEST_LEDGER"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RELREC_TEST_LEDGER", None)
    else:
        os.environ["RELREC_TEST_LEDGER"] = previous


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
    """``synthetic_run(config=None, *, text=False, **generate_options) -> (run_dir, dataset)``:
    a synthetic data set (:func:`relrec.data.synthetic.generate` with ``generate_options``)
    prepared into a run directory with ``config`` (default ``RunConfig()``); ``text`` writes
    the data set's content vectors as the run's text content. Built once per session for each
    distinct set of arguments: a test that writes into the run directory beyond training its
    own model works on a copy."""
    built = {}

    def build(config=None, *, text: bool = False, **generate_options):
        config = config or RunConfig()
        key = (config.model_dump_json(), text, tuple(sorted(generate_options.items())))
        if key not in built:
            dataset = generate(**generate_options)
            run_dir = tmp_path_factory.mktemp("synthetic") / "run"
            prepare_run(run_dir, config, interactions=dataset.interactions, items=dataset.items)
            if text:
                write_content(RunData(run_dir), "text", dataset.content_vectors,
                              source="synthetic")
            built[key] = (run_dir, dataset)
        return built[key]

    return build
