"""Bad input: every refusal is a 4xx JSON error body; nothing ever reaches a 500."""

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

AUTH = {"Authorization": "Bearer test-token-123-0123456789abcdef-xyz"}


def assert_error(response, status, fragment=""):
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    assert fragment.lower() in body["error"]["message"].lower(), body
    assert "Traceback" not in response.text and 'File "' not in response.text


@pytest.mark.parametrize("query, status, fragment", [
    ("k=0", 422, "k"), ("k=-3", 422, "k"), ("k=101", 422, "less than or equal to 100"),
    ("k=abc", 422, "integer"), ("k=1e3", 422, "k"), ("k=", 422, "k"),
    ("alpha=-0.1", 422, "alpha"), ("alpha=1.5", 422, "alpha"), ("alpha=nan", 422, "finite"),
    ("alpha=inf", 422, "finite"), ("alpha=x", 422, "alpha"),
    ("diversify=perhaps", 422, "diversify"), ("diversify=true", 422, "not available"),
    ("run=other", 422, "run"), ("mode=fast", 422, "mode"),
])
def test_bad_query_parameters(client, query, status, fragment):
    assert_error(client.get(f"/v1/items/1/related?{query}"), status, fragment)


def test_unknown_items_and_routes_are_404_json(client):
    assert_error(client.get("/v1/items/no-such-item/related"), 404, "unknown item")
    assert_error(client.get("/v1/items/no-such-item"), 404, "unknown item")
    assert_error(client.post("/v1/related", json={"item_ids": ["1", "nope"]}), 404, "'nope'")
    assert_error(client.post("/v1/up-next", json={"items": ["nope"]}), 404, "unknown item")
    assert_error(client.get("/v1/nothing-here"), 404)
    assert_error(client.get("/images/main/999999999"), 404)
    assert_error(client.delete("/v1/items/1/related"), 405)


@pytest.mark.parametrize("path, body, status, fragment", [
    ("/v1/related", {"item_ids": []}, 422, "item_ids"),
    ("/v1/related", {"item_ids": [str(i) for i in range(21)]}, 422, "at most 20"),
    ("/v1/related", {"item_ids": ["1"], "k": 0}, 422, "k"),
    ("/v1/related", {"item_ids": ["1"], "k": 101}, 422, "at most 100"),
    ("/v1/related", {"item_ids": ["1"], "alpha": 3}, 422, "alpha"),
    ("/v1/related", {"item_ids": "1"}, 422, "item_ids"),
    ("/v1/related", {"item_ids": [1]}, 422, "string"),
    ("/v1/related", {"item_ids": ["1"], "surprise": True}, 422, "extra"),
    ("/v1/related", {"item_ids": [""]}, 422, "item_ids"),
    ("/v1/related", {"item_ids": ["x" * 300]}, 422, "item_ids"),
    ("/v1/related", {"item_ids": ["1"], "exclude": ["2"] * 1001}, 422, "exclude"),
    ("/v1/related", [], 422, "body"),
    ("/v1/up-next", {"items": []}, 422, "items"),
    ("/v1/up-next", {"items": ["1"] * 51}, 422, "at most 50"),
    ("/v1/up-next", {"items": ["1"], "diversify": True}, 422, "not available"),
    ("/v1/up-next", {"items": ["1"], "run": "compare", "k": "many"}, 422, "k"),
    ("/v1/related/by-content", {}, 422, "title"),
    ("/v1/related/by-content", {"title": ""}, 422, "title"),
    ("/v1/related/by-content", {"title": "x", "tags": "a|b"}, 422, "tags"),
    ("/v1/related/by-content", {"title": "x", "image": "/etc/passwd"}, 422, "server-side paths"),
    ("/v1/related/by-content", {"title": "x", "image": "../x.jpg"}, 422, "server-side paths"),
    ("/v1/related/by-content", {"title": "x", "image": "nope.jpg"}, 422, "server-side paths"),
    ("/v1/related/by-content", {"title": "x", "image_base64": "%%"}, 422, "base64"),
    ("/v1/related/by-content", {"title": "x", "image_item_id": "nope"}, 404, "unknown"),
    ("/v1/related/by-content", {"title": "x", "k": 1000}, 422, "at most 100"),
])
def test_bad_bodies(client, path, body, status, fragment):
    assert_error(client.post(path, json=body), status, fragment)


def test_malformed_and_oversized_bodies(client, serve_runs, make_settings, tmp_path):
    assert_error(client.post("/v1/related", content=b"{not json",
                             headers={"content-type": "application/json"}), 422)
    assert_error(client.post("/v1/related", content=b"\xff\xfe\x00",
                             headers={"content-type": "application/json"}), 400, "parsing")
    assert_error(client.post("/v1/related", content=b"item_ids=1",
                             headers={"content-type": "text/plain"}), 422)
    huge = json.dumps({"item_ids": ["1"] * 200_000}).encode()
    assert_error(client.post("/v1/related", content=huge,
                             headers={"content-type": "application/json"}), 413, "limit")

    def chunks():  # no content-length: the limit is counted while streaming
        for _ in range(100):
            yield b" " * 8192

    assert_error(client.post("/v1/related", content=chunks(),
                             headers={"content-type": "application/json"}), 413)
    # the limit is configurable
    from fastapi.testclient import TestClient

    from relrec.serve.app import create_app

    small = TestClient(create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s",
                                                max_body_bytes=64, max_k=5)),
                       raise_server_exceptions=False)
    assert_error(small.post("/v1/related", json={"item_ids": [str(i) for i in range(30)]}),
                 413)
    assert_error(small.get("/v1/items/1/related?k=6"), 422, "5")
    assert small.get("/v1/items/1/related?k=5").status_code == 200


def test_admin_endpoints_need_the_token(client, serve_runs, make_settings, tmp_path):
    for path, body in (("/admin/reload", None), ("/admin/items", {"items": [
            {"item_id": "n", "title": "t"}]}), ("/admin/availability",
                                                {"item_ids": ["1"], "available": False})):
        assert_error(client.post(path, json=body), 401, "token")
        assert_error(client.post(path, json=body, headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(client.post(path, json=body, headers={"X-Admin-Token": "wrong"}), 401)
    assert_error(client.post("/admin/items", json={"items": []}, headers=AUTH), 422, "items")
    assert_error(client.post("/admin/reload?run=nope", headers=AUTH), 422, "run")
    from fastapi.testclient import TestClient

    from relrec.serve.app import create_app

    open_app = TestClient(create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s",
                                                   admin_token=None)))
    assert_error(open_app.post("/admin/reload", headers=AUTH), 403, "disabled")


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
scalar = st.one_of(text, st.integers(min_value=-10**20, max_value=10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from(["", "true", "false", "null", "[]", "1,2", "%00", "ä", "0"]))
PARAMS = ["k", "alpha", "diversify", "exclude", "run", "mode", "q", "limit", "junk"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=st.one_of(text.filter(lambda s: s.strip(".") != ""), st.just("1")),
       params=st.lists(st.tuples(st.sampled_from(PARAMS), scalar), max_size=6))
def test_generated_garbage_query_params_never_500(client, item, params):
    item = quote(item, safe="")
    for path in (f"/v1/items/{item}/related", "/v1/search", f"/v1/items/{item}"):
        response = client.get(path, params=params)
        assert response.status_code < 500, (path, params, response.text)
        assert response.headers["content-type"].startswith("application/json")
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
              st.floats(allow_nan=False, allow_infinity=False),
              text),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(text, children, max_size=4)), max_leaves=12)
body_field = st.sampled_from(["item_ids", "items", "k", "alpha", "diversify", "exclude", "run",
                              "mode", "title", "description", "tags", "image",
                              "image_base64", "image_item_id", "x"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/related", "/v1/up-next", "/v1/related/by-content"]),
       body=st.one_of(json_value, st.dictionaries(body_field, json_value, max_size=5)))
def test_generated_garbage_bodies_never_500(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
