"""The plain ``?k=N`` lane and the validated route answer the same bytes; everything else
falls through to validation."""

import pytest
from fastapi.testclient import TestClient

from relrec.serve.app import create_app


@pytest.mark.parametrize("precomputed", [True, False])
def test_common_lane_equals_the_documented_route(serve_runs, exported, tmp_path, make_settings,
                                                 precomputed):
    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s", precomputed=exported,
                                   use_precomputed=precomputed))
    client = TestClient(app)
    for item_id in ("1", "260", "2571"):
        for k in (1, 10, 20, 50):
            lane = client.get(f"/v1/items/{item_id}/related?k={k}")
            full = client.get(f"/v1/items/{item_id}/related", params={"k": k, "mode": "auto"})
            assert lane.status_code == full.status_code == 200
            assert lane.content == full.content
            assert lane.headers["content-type"] == "application/json"
        assert client.get(f"/v1/items/{item_id}/related").content == \
            client.get(f"/v1/items/{item_id}/related", params={"run": "main"}).content
    for query, status in (("k=0", 422), ("k=abc", 422), ("k=", 422), ("k=100000", 422),
                          ("k=10&junk=1", 200)):
        assert client.get(f"/v1/items/1/related?{query}").status_code == status, query
    assert client.get("/v1/items/nope/related?k=5").json()["error"]["code"] == "unknown_item"
    assert client.get("/v1/items/" + "x" * 300 + "/related").status_code == 422
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/v1/items/{item_id}/related"]
    metrics = client.get("/metrics").text
    assert 'route="/v1/items/{item_id}/related",status="200"' in metrics
    # the common request the table answers is sent in front of FastAPI's stack
    # (middleware.StoredAnswers); without the table, nothing is answered there
    scope = {"type": "http", "method": "GET", "path": "/v1/items/260/related",
             "root_path": "", "query_string": b"k=10", "headers": []}
    stored = app.state.service.stored_answer(scope)
    if precomputed:
        assert stored == client.get("/v1/items/260/related?k=10").content
        assert scope["route"].path == "/v1/items/{item_id}/related"  # its metric label
    else:
        assert stored is None
