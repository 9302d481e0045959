"""Security regressions: images only from the run's images folder (prepare, serve, embed), admin
hygiene (token length, 401 before the body, TLS on a public host, no paths in /v1/runs, no
model download named by a manifest), and the preset /v1/runs reports."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from relrec.cli import app as cli_app
from relrec.serve.app import create_app

from .conftest import ADMIN_TOKEN, copy_run

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
runner = CliRunner()


# -- helpers -------------------------------------------------------------------------------------
def _set_images(run_dir: Path, images: dict[str, str | None], *, folder: Path | None) -> None:
    """Rewrite a run copy as if prepared with these item images (and this images folder);
    the bundle is resealed on load (as after a new `prepare`)."""
    path = run_dir / "data" / "items.parquet"
    items = pd.read_parquet(path)
    items["image"] = None
    for item_id, value in images.items():
        items.loc[items["item_id"] == item_id, "image"] = value
    items.to_parquet(path, index=False)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("inputs", {})["images"] = (
        None if folder is None else {"path": str(folder), "sha256": None})
    manifest_path.write_text(json.dumps(manifest))
    (run_dir / "model" / "bundle.json").unlink(missing_ok=True)


@pytest.fixture()
def image_folder(tmp_path, posters_dir):
    """A folder with poster 1.jpg, a symlink 2.jpg to a file outside it, and that file."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copyfile(posters_dir / "1.jpg", folder / "1.jpg")
    outside = tmp_path / "outside.jpg"
    shutil.copyfile(posters_dir / "2.jpg", outside)
    os.symlink(outside, folder / "2.jpg")
    return folder, outside


# -- 1. images: prepare -----------------------------------------------------------------------
def test_prepare_rejects_image_paths_outside_the_images_folder(serve_subset, image_folder,
                                                               tmp_path):
    folder, _ = image_folder
    items = pd.read_csv(serve_subset / "items.csv", dtype=str, keep_default_na=False)
    items["image"] = ""
    wanted = {"1": "1.jpg",                               # relative: inside the folder
              "2": "2.jpg",                               # a symlink inside pointing outside
              "3": "/etc/passwd",                         # absolute, outside
              "5": "../outside.jpg",                      # relative, escapes the folder
              "6": str(folder / "1.jpg"),                 # absolute, inside
              "7": "https://example.org/7.jpg",           # a URL: kept as is
              "10": "file:///etc/passwd"}                 # a URL the browser must not get
    for item_id, value in wanted.items():
        items.loc[items["item_id"] == item_id, "image"] = value
    items_path = tmp_path / "items.csv"
    items.to_csv(items_path, index=False)
    run_dir = tmp_path / "run"
    result = runner.invoke(cli_app, ["prepare", "--interactions",
                                     str(serve_subset / "interactions.csv"), "--items",
                                     str(items_path), "--images", str(folder),
                                     "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    prepared = pd.read_parquet(run_dir / "data" / "items.parquet").set_index("item_id")
    assert len(prepared) == len(items)  # every item kept, bad ones without an image
    image = prepared["image"]
    assert image["1"] == str(folder.resolve() / "1.jpg") == image["6"]
    assert image["7"] == "https://example.org/7.jpg"
    for item_id in ("2", "3", "5", "10"):
        assert pd.isna(image[item_id]), (item_id, image[item_id])
    rejected = pd.read_csv(run_dir / "data" / "rejected_rows.csv", dtype=str)
    image_rejects = rejected[rejected["column"] == "image"]
    assert sorted(image_rejects["value"]) == sorted(wanted[i] for i in ("2", "3", "5", "10"))
    assert (image_rejects["file"] == str(items_path)).all()
    rows = {item_id: str(items.index[items["item_id"] == item_id][0] + 2)
            for item_id in ("2", "3", "5", "10")}
    assert sorted(image_rejects["row"]) == sorted(rows.values())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["inputs"]["images"]["path"] == str(folder.resolve())
    assert sum(v for k, v in manifest["rejected"].items() if "image" in k) == 4

    # without --images a local path has no folder to lie in: rejected, the URL kept
    bare = tmp_path / "bare"
    result = runner.invoke(cli_app, ["prepare", "--interactions",
                                     str(serve_subset / "interactions.csv"), "--items",
                                     str(items_path), "--out", str(bare)])
    assert result.exit_code == 0, result.output
    image = pd.read_parquet(bare / "data" / "items.parquet").set_index("item_id")["image"]
    assert image.drop("7").isna().all() and image["7"] == "https://example.org/7.jpg"
    rejected = pd.read_csv(bare / "data" / "rejected_rows.csv", dtype=str)
    assert (rejected["column"] == "image").sum() == 6


# -- 1. images: serve -------------------------------------------------------------------------
def test_a_served_run_reads_no_file_outside_its_images_folder(serve_runs, make_settings,
                                                              image_folder, tmp_path):
    """The reported attack: a run whose items hold /etc/passwd, served without --images."""
    folder, _ = image_folder
    run = copy_run(serve_runs[0], tmp_path / "run")
    _set_images(run, {"1": str(folder / "1.jpg"), "2": "/etc/passwd"}, folder=None)
    client = TestClient(create_app(make_settings(run, state_dir=tmp_path / "s1")))
    assert client.get("/images/main/2").status_code == 404
    assert client.get("/images/main/1").status_code == 404  # no folder declared: none served
    assert client.get("/v1/items/2").json()["image_url"] is None

    # with a folder: inside is served; outside, a symlink out of it and a URL are not
    run2 = copy_run(serve_runs[0], tmp_path / "run2")
    _set_images(run2, {"1": str(folder / "1.jpg"), "2": str(folder / "2.jpg"),
                       "3": "/etc/passwd", "6": "https://example.org/6.jpg"},
                folder=folder.resolve())
    client = TestClient(create_app(make_settings(run2, state_dir=tmp_path / "s2")))
    response = client.get("/images/main/1")
    assert response.status_code == 200 and response.content == (folder / "1.jpg").read_bytes()
    for item_id in ("2", "3", "6"):
        assert client.get(f"/images/main/{item_id}").status_code == 404, item_id
    assert client.get("/v1/items/1").json()["image_url"] == "/images/main/1"
    assert client.get("/v1/items/2").json()["image_url"] is None
    # a URL is handed to the browser as is, never fetched by the server
    assert client.get("/v1/items/6").json()["image_url"] == "https://example.org/6.jpg"


def test_by_content_never_takes_a_server_side_path(serve_runs, make_settings, image_folder,
                                                   posters_dir, tmp_path):
    folder, _ = image_folder
    run = copy_run(serve_runs[0], tmp_path / "run")
    _set_images(run, {"1": str(folder / "1.jpg"), "2": "/etc/passwd"}, folder=None)
    client = TestClient(create_app(make_settings(run, state_dir=tmp_path / "s")))
    answers = []
    for image in ("/etc/passwd", "/etc/no-such-file", "1.jpg", str(folder / "1.jpg"),
                  "../../etc/passwd"):
        response = client.post("/v1/related/by-content", json={"title": "x", "image": image})
        assert response.status_code == 422, (image, response.text)
        answers.append(response.json())
    assert all(answer == answers[0] for answer in answers)  # nothing to tell them apart
    assert "image_base64" in answers[0]["error"]["message"]
    # uploaded bytes or a catalogue item's image instead
    run2 = copy_run(serve_runs[0], tmp_path / "run2")
    _set_images(run2, {"1": str(folder / "1.jpg"), "2": str(folder / "2.jpg")},
                folder=folder.resolve())
    client = TestClient(create_app(make_settings(run2, state_dir=tmp_path / "s2")))
    data = base64.b64encode((posters_dir / "1.jpg").read_bytes()).decode()
    ok = client.post("/v1/related/by-content", json={"title": "x", "image_base64": data})
    assert ok.status_code == 200, ok.text
    assert any("image accepted" in note for note in ok.json()["notes"])
    bad = client.post("/v1/related/by-content", json={"title": "x", "image_base64": "%%%"})
    assert bad.status_code == 422 and "image_base64" in bad.json()["error"]["message"]
    junk = base64.b64encode(b"not an image").decode()
    bad = client.post("/v1/related/by-content", json={"title": "x", "image_base64": junk})
    assert bad.status_code == 422 and "image" in bad.json()["error"]["message"]
    by_item = client.post("/v1/related/by-content", json={"title": "x", "image_item_id": "1"})
    assert by_item.status_code == 200, by_item.text
    for item_id in ("2", "260"):  # its image is a symlink out of the folder / it has none
        response = client.post("/v1/related/by-content",
                               json={"title": "x", "image_item_id": item_id})
        assert response.status_code == 422 and "image" in response.json()["error"]["message"]
    missing = client.post("/v1/related/by-content", json={"title": "x", "image_item_id": "nope"})
    assert missing.status_code == 404


# -- 1. images: embed -------------------------------------------------------------------------
def test_embed_reads_no_media_outside_the_images_folder(serve_runs, image_folder, tmp_path,
                                                        monkeypatch):
    import relrec.content.embed as embed_module
    from relrec.config import ContentConfig
    from relrec.content import image, image_models
    from relrec.content.stage import ensure_content
    from relrec.run import RunData

    class Constant(image.ImageEncoder):
        model_id = "constant-hardening-test"

        def __init__(self, **_):
            super().__init__()
            self._dim = 3

        def _embed(self, images):
            return np.ones((len(images), 3))

    image_models.register_image_model("constant-hardening-test", Constant)
    opened = []
    load_image, hash_file = image.load_image, embed_module.content_hash_file
    monkeypatch.setattr(image, "load_image", lambda p: opened.append(str(p)) or load_image(p))
    monkeypatch.setattr(embed_module, "content_hash_file",
                        lambda p: opened.append(str(p)) or hash_file(p))
    folder, outside = image_folder
    run_dir = copy_run(serve_runs[0], tmp_path / "run")
    for name in ("visual.npy", "visual_ok.npy"):
        (run_dir / "content" / name).unlink(missing_ok=True)
    _set_images(run_dir, {"1": str(folder / "1.jpg"), "2": str(folder / "2.jpg"),
                          "3": str(outside), "5": "https://example.org/5.jpg"},
                folder=folder.resolve())
    run = RunData(run_dir)
    config = ContentConfig(image_model="constant-hardening-test",
                           cache_dir=str(tmp_path / "cache"))
    ensure_content(run, ["visual"], config, progress=False)
    ok = np.load(run_dir / "content" / "visual_ok.npy")
    index = run.index_of_id
    assert ok[index["1"]] and ok.sum() == 1
    assert not any(path in (str(outside), str(folder / "2.jpg")) or "example.org" in path
                   for path in opened), opened


# -- 2. admin hygiene -------------------------------------------------------------------------
def test_a_short_admin_token_is_refused_at_startup(serve_runs, make_settings, tmp_path):
    with pytest.raises(ValueError, match="32 characters"):
        create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s",
                                 admin_token="short-token"))


def test_the_admin_token_is_checked_before_the_body(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for body in ({"items": "not a list"}, {"surprise": 1}):
            response = client.post("/admin/items", json=body, headers=headers)
            assert response.status_code == 401, response.text
        response = client.post("/admin/availability", content=b"{not json",
                               headers={**headers, "content-type": "application/json"})
        assert response.status_code == 401, response.text
    # with the token the body is then validated as before
    assert client.post("/admin/items", json={"items": "x"}, headers=AUTH).status_code == 422


@pytest.fixture()
def no_listen(monkeypatch):
    """uvicorn never listens here: what it would have been started with is recorded."""
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(options))
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, *a, **k: started.append(vars(self.config)))
    return started


def test_admin_on_a_public_host_needs_tls_or_an_explicit_flag(serve_runs, tmp_path, no_listen,
                                                              monkeypatch):
    monkeypatch.setenv("RELREC_ADMIN_TOKEN", ADMIN_TOKEN)
    run = str(serve_runs[0])
    state = ["--state-dir", str(tmp_path / "state")]
    result = runner.invoke(cli_app, ["serve", run, "--host", "0.0.0.0", *state])
    assert result.exit_code == 2 and not no_listen, result.output
    assert "TLS" in result.output and "--insecure-admin" in result.output
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    key.write_text("key")
    cert.write_text("cert")
    result = runner.invoke(cli_app, ["serve", run, "--host", "0.0.0.0", "--ssl-keyfile",
                                     str(key), "--ssl-certfile", str(cert), *state])
    assert result.exit_code == 0, result.output
    assert no_listen[-1]["ssl_keyfile"] == str(key)
    assert no_listen[-1]["ssl_certfile"] == str(cert)
    result = runner.invoke(cli_app, ["serve", run, "--host", "0.0.0.0", "--insecure-admin",
                                     *state])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli_app, ["serve", run, "--host", "0.0.0.0", "--ssl-keyfile",
                                     str(key), *state])
    assert result.exit_code == 2 and "--ssl-certfile" in result.output
    # loopback, or no admin token at all: no TLS needed
    assert runner.invoke(cli_app, ["serve", run, *state]).exit_code == 0
    monkeypatch.delenv("RELREC_ADMIN_TOKEN")
    assert runner.invoke(cli_app, ["serve", run, "--host", "0.0.0.0", *state]).exit_code == 0


def test_runs_list_no_absolute_paths(client, serve_runs):
    body = client.get("/v1/runs").json()

    def strings(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield str(key)
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    found = list(strings(body))
    assert not [s for s in found if s.startswith("/") or str(serve_runs[0].parent) in s], found
    assert body["runs"][0]["run_name"] == serve_runs[0].name


def test_a_manifest_cannot_make_the_service_download_a_model(run_copy, make_settings, tmp_path,
                                                             monkeypatch):
    import sentence_transformers

    from relrec.serve.runtime_items import default_text_encoder

    loaded = []

    class Recording:
        def __init__(self, name, *args, **kwargs):
            loaded.append(name)
            raise RuntimeError("no network in this test")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Recording)
    manifest_path = run_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["content"]["text_model"] = "someone/remote-model"
    manifest_path.write_text(json.dumps(manifest))
    for name in ("text.npy", "text_ok.npy"):
        (run_copy / "content" / name).unlink(missing_ok=True)
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "s",
                                                 text_encoder_factory=default_text_encoder)),
                        raise_server_exceptions=False)
    response = client.post("/v1/related/by-content", json={"title": "Toy Story 5"})
    assert response.status_code == 422, response.text
    assert "--allow-model-download" in response.json()["error"]["message"]
    assert loaded == []
    # allowed explicitly: the name reaches sentence-transformers (here: refused offline)
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "s2",
                                                 text_encoder_factory=default_text_encoder,
                                                 allow_model_download=True)),
                        raise_server_exceptions=False)
    client.post("/v1/related/by-content", json={"title": "Toy Story 5"})
    assert loaded == ["someone/remote-model"]


# -- 3. the preset ----------------------------------------------------------------------------
def test_runs_report_the_preset_the_run_was_trained_with(run_copy, make_settings, tmp_path):
    manifest_path = run_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    prepared_preset = manifest["config"]["train"]["preset"]  # what prepare recorded
    trained_preset = "text" if prepared_preset != "text" else "cf"
    manifest["train"]["train_config"]["preset"] = trained_preset  # what training recorded
    manifest_path.write_text(json.dumps(manifest))
    client = TestClient(create_app(make_settings(run_copy, state_dir=tmp_path / "s")))
    assert client.get("/v1/runs").json()["runs"][0]["preset"] == trained_preset
