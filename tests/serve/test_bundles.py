"""Model bundles: hashes, hot reload, refusal of corrupt bundles, last-good fallback, watch."""

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from relrec.serve.app import create_app
from relrec.serve.bundle import BundleError, stage_bundle

AUTH = {"Authorization": "Bearer test-token-123-0123456789abcdef-xyz"}



def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def version(client):
    return client.get("/v1/items/1/related?k=3").json()["model_version"]


def test_bundle_manifest_records_hashes_and_version(run_copy, tmp_path):
    (run_copy / "model" / "bundle.json").unlink(missing_ok=True)  # sealed by other tests' apps
    staged = stage_bundle(run_copy, tmp_path / "state")
    recorded = json.loads((run_copy / "model" / "bundle.json").read_text())
    assert staged.sealed and recorded["version"] == staged.version and len(staged.version) == 12
    assert set(recorded["files"]) >= {"model/weights.safetensors", "model/tower_config.json",
                                      "data/items.parquet", "pairs/item_stats.parquet"}
    assert all(len(digest) == 64 for digest in recorded["files"].values())
    again = stage_bundle(run_copy, tmp_path / "state")
    assert not again.sealed and again.version == staged.version and again.path != staged.path
    truncate(run_copy / "model" / "weights.safetensors")
    with pytest.raises(BundleError, match="weights.safetensors does not match"):
        stage_bundle(run_copy, tmp_path / "state")


def test_reexported_lists_and_new_content_are_accepted_truncated_lists_refused(run_copy,
                                                                              tmp_path):
    import numpy as np

    from relrec.content.stage import write_content
    from relrec.related import RelatedItems
    from relrec.run import RunData

    (run_copy / "model" / "bundle.json").unlink(missing_ok=True)
    export = run_copy / "export" / "related.parquet"
    RelatedItems.load(run_copy).export(export, 20)
    stage_bundle(run_copy, tmp_path / "state")  # sealed with these lists
    RelatedItems.load(run_copy).export(export, 10)  # exported again, e.g. after tune-blend
    run = RunData(run_copy)  # content embedded after sealing (for a content blend)
    write_content(run, "text", np.ones((run.n_items, 4), np.float32), source="test")
    staged = stage_bundle(run_copy, tmp_path / "state")
    assert "precomputed lists changed since sealing (re-exported)" in staged.notes
    recorded = json.loads((run_copy / "model" / "bundle.json").read_text())["files"]
    assert recorded["export/related.parquet"] == staged.hashes["export/related.parquet"]
    assert "content/text.npy" in recorded
    truncate(export)
    with pytest.raises(BundleError, match="related.parquet does not match"):
        stage_bundle(run_copy, tmp_path / "state")


def test_reload_swaps_and_a_corrupt_bundle_is_refused_while_the_old_serves(
        run_copy, serve_runs, make_settings, tmp_path, caplog, publish):
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "state")),
                        raise_server_exceptions=False)
    first = version(client)
    before = client.get("/v1/items/1/related?k=10").json()
    publish(serve_runs[1], run_copy)
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 200, response.text
    second = response.json()["reloaded"]["main"]["version"]
    assert response.json()["reloaded"]["main"]["previous"] == first and second != first
    assert version(client) == second
    assert client.get("/v1/items/1/related?k=10").json()["items"] != before["items"]
    # a truncated weights file: refused with a clear log line, the last bundle keeps serving
    truncate(run_copy / "model" / "weights.safetensors")
    with caplog.at_level(logging.ERROR, logger="relrec.serve"):
        response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "bundle_refused" and "weights.safetensors" in error["message"]
    assert f"still serving {second}" in error["message"]
    assert any("refused bundle" in r.getMessage() and "weights.safetensors" in r.getMessage()
               for r in caplog.records)
    assert version(client) == second
    assert "relrec_reloads_total" in client.get("/metrics").text


def test_garbage_weights_that_claim_a_retrain_are_refused(run_copy, make_settings, tmp_path):
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "state")))
    first = version(client)
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["train"]["best_epoch"] = 99  # a "new" training run ...
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    (run_copy / "model" / "weights.safetensors").write_bytes(b"\x00garbage" * 10)  # ... broken
    response = client.post("/admin/reload", headers=AUTH)
    assert response.status_code == 409 and "cannot load" in response.json()["error"]["message"]
    assert version(client) == first


def test_restart_falls_back_to_the_last_good_bundle(run_copy, make_settings, tmp_path, caplog):
    state = tmp_path / "state"
    good = version(TestClient(create_app(make_settings(run_copy, state_dir=state))))
    truncate(run_copy / "model" / "weights.safetensors")
    with caplog.at_level(logging.WARNING, logger="relrec.serve"):
        client = TestClient(create_app(make_settings(run_copy, state_dir=state)))
    assert version(client) == good
    assert client.get("/readyz").json()["runs"]["main"] == {"version": good, "fallback": True}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "refused bundle" in messages and f"serving the last good bundle {good}" in messages
    with pytest.raises(BundleError, match="no last good bundle"):
        create_app(make_settings(run_copy, state_dir=tmp_path / "fresh-state"))


def test_watched_bundle_reloads_by_itself(run_copy, serve_runs, make_settings, tmp_path,
                                          publish):
    app = create_app(make_settings(run_copy, state_dir=tmp_path / "state", watch=True,
                                   watch_interval=0.2))
    with TestClient(app) as client:
        first = version(client)
        publish(serve_runs[1], run_copy)
        deadline = time.monotonic() + 30
        while version(client) == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert version(client) != first
