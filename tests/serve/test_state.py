"""The service's state folder and what it refuses to install.

* items added at run time and availability marks persist in the state folder and are
  re-applied at start and reload, in one encoder batch; their total is capped;
* exported lists are validated before they are installed (ranks 1..k contiguous per trigger,
  known ids, finite scores, k within a bound);
* a bundle whose embeddings are not finite is refused;
* one server per state folder (an exclusive lock), orphaned staging folders cleaned at start.
"""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from relrec.serve.app import create_app
from relrec.serve.bundle import BundleError

AUTH = {"Authorization": "Bearer test-token-123-0123456789abcdef-xyz"}  # conftest.ADMIN_TOKEN
NEW = {"title": "Toy Story 5 (2030)", "description": "Woody and Buzz, animated toys",
       "tags": ["pixar", "animation"]}


def ids(body):
    return [entry["item_id"] for entry in body["items"]]


def recording_factory(base_factory, calls):
    """A text-encoder factory that records every batch of texts it is asked to encode."""

    def factory(name):
        inner = base_factory(name)

        class Recording:
            def encode(self, texts):
                calls.append(list(texts))
                return inner.encode(texts)

        return Recording()

    return factory


# -- 5. added items and availability marks persist --------------------------------------------
def test_added_items_and_availability_survive_a_restart(run_copy, make_settings, tmp_path):
    state = tmp_path / "state"
    client = TestClient(create_app(make_settings(run_copy, state_dir=state)))
    top = ids(client.get("/v1/items/1/related", params={"k": 10}).json())
    added = [dict(NEW, item_id="new-1"), dict(NEW, item_id="new-2", title="Cars 9 (2031)"),
             dict(NEW, item_id="new-3", title="Up 2", available=False)]
    assert client.post("/admin/items", json={"items": added}, headers=AUTH).status_code == 200
    response = client.post("/admin/availability", json={"item_ids": [top[0]], "available": False},
                           headers=AUTH)
    assert response.status_code == 200, response.text

    # a restart: a new service on the same state folder
    restarted = TestClient(create_app(make_settings(run_copy, state_dir=state)))
    info = restarted.get("/v1/runs").json()["runs"][0]
    assert info["n_added_items"] == 3
    assert restarted.get("/v1/items/new-2/related", params={"k": 5}).status_code == 200
    assert restarted.get("/v1/items/new-2").json()["title"] == "Cars 9 (2031)"
    after = ids(restarted.get("/v1/items/1/related", params={"k": 10}).json())
    assert top[0] not in after and after[:9] == top[1:10]
    service = restarted.app.state.service
    assert {top[0], "new-3"} <= service.unavailable
    # marking available again is persisted too
    restarted.post("/admin/availability", json={"item_ids": [top[0]], "available": True},
                   headers=AUTH)
    again = TestClient(create_app(make_settings(run_copy, state_dir=state)))
    assert ids(again.get("/v1/items/1/related", params={"k": 10}).json()) == top
    assert not list(state.glob("*.tmp")) and not list(state.glob(".*.tmp"))


def test_an_item_added_to_two_runs_survives_a_restart_on_both(run_copy, serve_runs,
                                                                make_settings, tmp_path):
    # persisted by (run, item id): adding X to "compare" must not take it away from "main"
    state = tmp_path / "state"

    def app():
        return TestClient(create_app(make_settings(run_copy, compare_dir=serve_runs[1],
                                                   state_dir=state)))

    def added(client):
        return {info["name"]: info["n_added_items"]
                for info in client.get("/v1/runs").json()["runs"]}

    client = app()
    for run, title in (("main", "Main title"), ("compare", "Compare title")):
        response = client.post("/admin/items", headers=AUTH,
                               json={"items": [dict(NEW, item_id="new-x", title=title)],
                                     "run": run})
        assert response.status_code == 200, response.text
    assert added(client) == {"main": 1, "compare": 1}
    assert client.post("/admin/reload", headers=AUTH).status_code == 200
    assert added(client) == {"main": 1, "compare": 1}
    restarted = app()
    assert added(restarted) == {"main": 1, "compare": 1}
    records = json.loads((state / "admin_state.json").read_text())["added"]
    assert sorted((r["_run"], r["title"]) for r in records) == [
        ("compare", "Compare title"), ("main", "Main title")]
    # adding it to "all" replaces both runs' copies with one record
    response = restarted.post("/admin/items", headers=AUTH,
                              json={"items": [dict(NEW, item_id="new-x", title="Both")]})
    assert response.status_code == 200, response.text
    records = json.loads((state / "admin_state.json").read_text())["added"]
    assert [(r["_run"], r["title"]) for r in records] == [("all", "Both")]
    assert added(app()) == {"main": 1, "compare": 1}


def test_a_reload_encodes_the_added_items_in_one_batch(run_copy, make_settings, tmp_path):
    calls = []
    settings = make_settings(run_copy, state_dir=tmp_path / "state")
    settings.text_encoder_factory = recording_factory(settings.text_encoder_factory, calls)
    client = TestClient(create_app(settings))
    titles = [f"Added movie number {n}" for n in range(25)]
    items = [dict(NEW, item_id=f"new-{n}", title=title) for n, title in enumerate(titles)]
    assert client.post("/admin/items", json={"items": items}, headers=AUTH).status_code == 200
    calls.clear()
    assert client.post("/admin/reload", headers=AUTH).status_code == 200
    batches = [batch for batch in calls if any("Added movie number" in t for t in batch)]
    assert len(batches) == 1 and len(batches[0]) == 25, [len(b) for b in batches]
    assert client.get("/v1/runs").json()["runs"][0]["n_added_items"] == 25
    assert client.get("/v1/items/new-24").json()["title"] == titles[24]


def test_the_number_of_added_items_is_capped(run_copy, make_settings, tmp_path):
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "state",
                                                 max_added_items=3)),
                        raise_server_exceptions=False)
    first = [dict(NEW, item_id=f"new-{n}") for n in range(2)]
    assert client.post("/admin/items", json={"items": first}, headers=AUTH).status_code == 200
    over = [dict(NEW, item_id=f"more-{n}") for n in range(2)]
    response = client.post("/admin/items", json={"items": over}, headers=AUTH)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_added_items" and "3" in error["message"]
    assert client.get("/v1/runs").json()["runs"][0]["n_added_items"] == 2  # nothing added
    # replacing an added item does not count against the cap; one more fits exactly
    again = [dict(NEW, item_id="new-0", title="Renamed"), dict(NEW, item_id="more-0")]
    assert client.post("/admin/items", json={"items": again}, headers=AUTH).status_code == 200
    assert client.get("/v1/runs").json()["runs"][0]["n_added_items"] == 3


# -- 6. exported lists are validated before they are installed --------------------------------
def write_export(source, target, mutate):
    """``source``'s lists with ``mutate(frame)`` applied, keeping the file's relrec metadata."""
    table = pq.read_table(source)
    frame = table.to_pandas()
    mutate(frame)
    out = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(out.schema.metadata or {})
    metadata.update({k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"})
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out.replace_schema_metadata(metadata), target)


def first_trigger_rows(frame):
    return frame.index[frame["trigger"] == frame["trigger"].iloc[0]]


def gap(frame):
    frame.loc[first_trigger_rows(frame)[-1], "rank"] = 20000


def duplicate_rank(frame):
    rows = first_trigger_rows(frame)
    frame.loc[rows[2], "rank"] = frame.loc[rows[1], "rank"]


def unknown_item(frame):
    frame["item"] = frame["item"].astype(str)
    frame.loc[3, "item"] = "no-such-item"


def nan_score(frame):
    frame.loc[5, "score"] = np.nan


@pytest.mark.parametrize("mutate, expected", [
    (gap, "rank"), (duplicate_rank, "rank"), (unknown_item, "no-such-item"),
    (nan_score, "finite")])
def test_an_invalid_export_is_refused_and_the_old_bundle_keeps_serving(
        run_copy, exported, make_settings, tmp_path, mutate, expected):
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "state")),
                        raise_server_exceptions=False)
    target = run_copy / "export" / "related.parquet"
    write_export(exported, target, lambda frame: None)  # the valid lists install
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    good = response.json()["reloaded"]["main"]["version"]
    assert client.get("/v1/items/1/related", params={"k": 10}).json()["mode"] == "precomputed"
    write_export(exported, target, mutate)
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409, response.text
    message = response.json()["error"]["message"]
    assert "related.parquet" in message and expected in message, message
    body = client.get("/v1/items/1/related", params={"k": 10}).json()
    assert body["model_version"] == good and body["mode"] == "precomputed"
    assert client.app.state.service.models["main"].pre_k == 20


def test_an_export_over_the_k_bound_is_refused(run_copy, exported, make_settings, tmp_path):
    write_export(exported, run_copy / "export" / "related.parquet", lambda frame: None)
    with pytest.raises(BundleError, match="max_precomputed_k"):
        create_app(make_settings(run_copy, state_dir=tmp_path / "state", max_precomputed_k=10))
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "other",
                                                 max_precomputed_k=20)))
    assert client.get("/v1/runs").json()["runs"][0]["precomputed_k"] == 20


# -- 7. non-finite embeddings ----------------------------------------------------------------
def poison_weights(run_dir):
    from safetensors.torch import load_file, save_file

    path = run_dir / "model" / "weights.safetensors"
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.dim() == 2 and v.shape[0] > 100)
    tensors[name][7] = float("nan")  # one item's ID row
    save_file(tensors, str(path))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["train"]["best_epoch"] = 98  # claims a retrain, so the new hash is accepted
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_non_finite_embeddings_are_refused(run_copy, make_settings, tmp_path):
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "state")),
                        raise_server_exceptions=False)
    good = client.get("/v1/items/1/related").json()["model_version"]
    poison_weights(run_copy)
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409, response.text
    assert "non-finite" in response.json()["error"]["message"]
    assert client.get("/v1/items/1/related").json()["model_version"] == good
    with pytest.raises(BundleError, match="non-finite"):
        create_app(make_settings(run_copy, state_dir=tmp_path / "fresh"))


# -- 8. one server per state folder; orphaned staging cleaned ----------------------------------
def tree(directory):
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file() and p.name != "serve.lock"}


@pytest.mark.slow
def test_a_second_server_on_the_same_state_folder_exits_2_and_touches_nothing(
        run_copy, start_server, tmp_path):
    state = tmp_path / "state"
    first = start_server(run_copy, "--state-dir", state)
    before = tree(state)
    last_good = (state / "last_good.json").read_bytes()
    second = subprocess.run(
        [sys.executable, "-m", "relrec.cli", "serve", str(run_copy), "--state-dir", str(state),
         "--host", "127.0.0.1", "--port", str(first.port)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                         "COLUMNS": "200"})
    assert second.returncode == 2, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    message = " ".join(second.stderr.split())
    assert "state folder" in message and "in use" in message and str(state) in message
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert (state / "last_good.json").read_bytes() == last_good
    assert tree(state) == before
    import httpx

    assert httpx.get(f"{first.url}/readyz").status_code == 200


def test_orphaned_staging_folders_are_removed_at_start(run_copy, make_settings, tmp_path):
    state = tmp_path / "state"
    orphan = state / "staging" / "20240101T000000-deadbeef"
    (orphan / "model").mkdir(parents=True)
    (orphan / "model" / "weights.safetensors").write_bytes(b"x" * 1000)
    kept = state / "staging" / "20240101T000001-cafecafe"
    (kept / "model").mkdir(parents=True)
    (kept / "model" / "weights.safetensors").write_bytes(b"y")
    (state / "last_good.json").write_text(json.dumps({"main": [{
        "path": str(kept), "version": "000000000000", "source": str(run_copy.resolve()),
        "hashes": {}, "precomputed": False}]}))
    client = TestClient(create_app(make_settings(run_copy, state_dir=state)))
    assert client.get("/readyz").status_code == 200
    assert not orphan.exists() and kept.is_dir()
    staged = client.app.state.service.models["main"].staged.path
    assert staged.is_dir() and sorted(p.name for p in (state / "staging").iterdir()) == sorted(
        [kept.name, staged.name])
