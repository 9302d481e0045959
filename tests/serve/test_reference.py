"""Served lists against an independent NumPy reference, on every trigger of the catalogue:
brute-force inner products over the eligible items, the trigger and every filter removed by
hand — precomputed and index modes, exclude / blocklist / availability, α on two heads."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from relrec.related import RelatedItems
from relrec.serve.app import create_app

K = 10


def reference(model, head, trigger, banned, k=K):
    """(ids, scores) of the brute-force top k of ``trigger`` on ``head``."""
    vectors = model.related.embeddings[head]
    scores = vectors @ vectors[trigger]
    keep = model.related.eligible.copy()
    keep[trigger] = False
    keep[list(banned)] = False
    candidates = np.flatnonzero(keep)
    order = np.argsort(-scores[candidates], kind="stable")[:k]
    return candidates[order], scores[candidates][order]


def check_row(model, head, trigger, entries, banned):
    ids, scores = reference(model, head, trigger, banned)
    got = [model.run.index_of_id[e["item_id"]] for e in entries]
    got_scores = np.array([e["score"] for e in entries])
    assert len(got) == len(ids)
    assert not set(got) & (set(banned) | {trigger})
    np.testing.assert_allclose(got_scores, scores, atol=2e-5)  # same top-k (ties any order)
    vectors = model.related.embeddings[head]
    np.testing.assert_allclose(vectors[got] @ vectors[trigger], got_scores, atol=2e-5)


def batches(client, triggers, model, **body):
    ids = [str(model.run.item_ids[t]) for t in triggers]
    for start in range(0, len(ids), 100):
        response = client.post("/v1/related", json={"item_ids": ids[start:start + 100], "k": K,
                                                     **body})
        assert response.status_code == 200, response.text
        yield from response.json()["results"]


@pytest.mark.parametrize("mode", ["auto", "exact"])
def test_every_trigger_matches_brute_force(serve_runs, exported, tmp_path, make_settings, mode):
    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s", precomputed=exported))
    client = TestClient(app)
    model = app.state.service.models["main"]
    triggers = np.flatnonzero(model.related.eligible)
    expected_mode = "precomputed" if mode == "auto" else "index"
    for trigger, result in zip(triggers, batches(client, triggers, model, mode=mode)):
        assert result["mode"] == expected_mode
        check_row(model, model.main_head, trigger, result["items"], set())
    # the GET fast path answers the same bytes' worth of lists
    for trigger in triggers[:200]:
        body = client.get(f"/v1/items/{model.run.item_ids[trigger]}/related",
                          params={"k": K, "mode": mode}).json()
        assert body["mode"] == expected_mode
        check_row(model, model.main_head, trigger, body["items"], set())


def test_filters_match_brute_force(serve_runs, exported, tmp_path, make_settings, admin_headers):
    run = serve_runs[0]
    probe = RelatedItems.load(run)
    eligible = np.flatnonzero(probe.eligible)
    rng = np.random.default_rng(0)
    blocked, unavailable, excluded = (rng.choice(eligible, 15, replace=False) for _ in range(3))
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("\n".join(str(probe.item_ids_[i]) for i in blocked) + "\n")
    app = create_app(make_settings(run, state_dir=tmp_path / "s", precomputed=exported,
                                   blocklist=blocklist))
    client = TestClient(app)
    assert client.post("/admin/availability", headers=admin_headers, json={
        "item_ids": [str(probe.item_ids_[i]) for i in unavailable],
        "available": False}).status_code == 200
    model = app.state.service.models["main"]
    exclude = [str(model.run.item_ids[i]) for i in excluded]
    banned = set(blocked) | set(unavailable) | set(excluded)
    for trigger, result in zip(eligible, batches(client, eligible, model, exclude=exclude)):
        assert result["mode"] == "index"
        check_row(model, model.main_head, trigger, result["items"], banned - {trigger})


def test_alpha_on_a_two_head_model_matches_each_head(serve_runs, tmp_path, make_settings):
    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s"))
    model = app.state.service.models["main"]
    rng = np.random.default_rng(1)
    n = model.n_items
    heads = {name: rng.normal(size=(n, 8)).astype(np.float32)
             for name in ("engagement", "relevance")}
    two = RelatedItems(model.run, heads, model.related.eligible.copy())
    two.tower_ = model.tower
    model.related = two
    client = TestClient(app)
    triggers = np.flatnonzero(two.eligible)[:300]
    for alpha, head in ((1.0, "engagement"), (0.0, "relevance")):
        for trigger, result in zip(triggers, batches(client, triggers, model, alpha=alpha)):
            check_row(model, head, trigger, result["items"], set())
    # a mix holds k distinct items, never the trigger, as the library's quota merge does
    for trigger, result in zip(triggers[:50], batches(client, triggers[:50], model, alpha=0.4)):
        ids = [e["item_id"] for e in result["items"]]
        library, _ = two.similar_items([str(model.run.item_ids[trigger])], K, alpha=0.4)
        assert ids == [i for i in library[0] if i]


def test_diversify_reorders_the_brute_force_candidates(serve_runs, tmp_path, make_settings):
    """With a (random) CAViaR re-ranker: every diversified item comes from the brute-force
    top (k + window) of the main ranking, filters hold, and the list is what the library's
    ``similar_items(diversify=True)`` gives."""
    from relrec.rerank.features import ItemSpace
    from relrec.rerank.model import ContextualReranker

    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "s"))
    model = app.state.service.models["main"]
    rng = np.random.default_rng(3)
    n = model.n_items
    space = ItemSpace(rng.normal(size=(n, 8)).astype(np.float32),
                      rng.integers(0, 5, n).astype(np.int64),
                      rng.random(n).astype(np.float32))
    model.related._reranker, model.related._reranker_loaded = ContextualReranker(space), True
    model.has_reranker = True
    client = TestClient(app)
    eligible = np.flatnonzero(model.related.eligible)
    excluded = [str(model.run.item_ids[i]) for i in eligible[:3]]
    triggers = eligible[3:123]
    for trigger, result in zip(triggers, batches(client, triggers, model, diversify=True,
                                                 exclude=excluded)):
        got = [model.run.index_of_id[e["item_id"]] for e in result["items"]]
        banned = set(eligible[:3].tolist())
        window, _ = reference(model, model.main_head, trigger, set(), k=K + len(banned) + 20)
        assert len(got) == K and len(set(got)) == K
        assert not set(got) & (banned | {trigger}) and set(got) <= set(window.tolist())
        library, _ = model.related.similar_items([str(model.run.item_ids[trigger])], K,
                                                 filter_items=excluded, diversify=True)
        assert [e["item_id"] for e in result["items"]] == [i for i in library[0] if i]
