"""Index-path requests in flight together are answered by one batched search
(:mod:`relrec.serve.batching`): the same bytes as alone, errors kept per batch, and the
garbage-collector freeze of ``relrec serve``."""

import asyncio
import gc

import httpx
import numpy as np
import pytest

from relrec.serve.app import create_app
from relrec.serve.batching import RequestBatcher
from relrec.serve.state import ServiceState


def gather(batcher, requests):
    async def run():
        return await asyncio.gather(*(batcher.submit(key, item) for key, item in requests),
                                    return_exceptions=True)
    return asyncio.run(run())


def test_requests_of_one_loop_turn_share_a_call_per_key():
    calls = []

    def answer(key, items):
        calls.append((key, list(items)))
        return [f"{key}:{item}" for item in items]

    batcher = RequestBatcher(answer, max_batch=3)
    requests = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]
    assert gather(batcher, requests) == [f"{key}:{item}" for key, item in requests]
    # one call per key, split at max_batch, in arrival order
    assert calls == [("a", [1, 3, 4]), ("a", [5]), ("b", [2, 6])]
    assert (batcher.batches, batcher.requests) == (3, 6)
    # a lone request later is its own batch (nothing waits for a timer)
    assert gather(batcher, [("a", 7)]) == ["a:7"]
    assert calls[-1] == ("a", [7])


def test_an_error_fails_its_batch_only_and_the_batcher_goes_on():
    def answer(key, items):
        if key == "bad":
            raise ValueError("broken batch")
        return list(items)

    batcher = RequestBatcher(answer)
    results = gather(batcher, [("bad", 1), ("good", 2), ("bad", 3)])
    assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError)
    assert results[1] == 2
    assert gather(batcher, [("good", 4)]) == [4]


def test_a_cancelled_request_is_left_out_of_its_batch():
    seen = []

    def answer(key, items):
        seen.extend(items)
        return list(items)

    batcher = RequestBatcher(answer)

    async def run():
        first = asyncio.ensure_future(batcher.submit("k", 1))
        second = asyncio.ensure_future(batcher.submit("k", 2))
        await asyncio.sleep(0)  # both submitted, the flush is scheduled
        first.cancel()
        return await second

    assert asyncio.run(run()) == 2
    assert seen == [2]


def test_a_loop_that_ends_before_its_flush_does_not_stall_the_next():
    batcher = RequestBatcher(lambda key, items: list(items))
    loop = asyncio.new_event_loop()
    task = loop.create_task(batcher.submit("k", 1))
    loop.call_soon(loop.stop)
    loop.run_forever()  # the request is queued, the loop stops before its flush runs
    task.cancel()
    loop.close()

    async def later():
        return await asyncio.wait_for(batcher.submit("k", 2), timeout=5)

    assert asyncio.run(later()) == 2  # another loop is served (no flush left "scheduled")


@pytest.fixture(scope="module")
def index_apps(serve_runs, tmp_path_factory, make_settings):
    """The same run served twice without precomputed lists: batched (the default 16) and alone
    (no in-flight limit: every request of the test is in flight at once)."""
    root = tmp_path_factory.mktemp("batching")
    return {batch: create_app(make_settings(serve_runs[0], state_dir=root / f"s{batch}",
                                            use_precomputed=False, search_batch=batch,
                                            max_concurrent_requests=None))
            for batch in (16, 1)}


async def fetch_all(app, paths):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    return [(r.status_code, r.content) for r in responses]


def test_batched_answers_are_the_bytes_of_lone_answers(index_apps):
    batched, alone = index_apps[16], index_apps[1]
    model = batched.state.service.models["main"]
    triggers = np.flatnonzero(model.related.eligible)
    ids = [str(model.run.item_ids[t]) for t in triggers]
    paths = ([f"/v1/items/{item}/related" for item in ids]
             + [f"/v1/items/{item}/related?k=7" for item in ids[:50]]
             + [f"/v1/items/{item}/related?k=5&mode=exact" for item in ids[:50]]
             + ["/v1/items/no-such-item/related", "/v1/items/no-such-item/related?k=3&alpha=0.5"])
    batcher = batched.state.service.search_batcher
    before = (batcher.batches, batcher.requests)
    got = asyncio.run(fetch_all(batched, paths))
    want = [asyncio.run(fetch_all(alone, [path]))[0] for path in paths]  # one at a time
    assert got == want
    assert [status for status, _ in got[-2:]] == [404, 404]  # unknown ids: refused alone
    assert all(status == 200 for status, _ in got[:-2])
    batches, requests = batcher.batches - before[0], batcher.requests - before[1]
    assert requests == len(paths) - 2
    assert batches < requests / 4  # in flight together: far fewer searches than requests
    assert alone.state.service.search_batcher.batches == 0  # search_batch=1: never batched
    metrics = asyncio.run(fetch_all(batched, ["/metrics"]))[0][1].decode()
    assert f"relrec_search_batched_requests {float(batcher.requests)}" in metrics


def test_relrec_serve_freezes_the_loaded_objects_out_of_the_collector(serve_runs, tmp_path,
                                                                      make_settings):
    gc.unfreeze()
    try:
        state = ServiceState(make_settings(serve_runs[0], state_dir=tmp_path / "s",
                                           freeze_gc=True))
        state.load_all()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the model, the libraries: never walked again while serving
        model = state.models["main"]
        state.reload(["main"])  # the previous freeze undone first: the old bundle can go
        assert state.models["main"] is not model and gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
    state = ServiceState(make_settings(serve_runs[0], state_dir=tmp_path / "t"))
    state.load_all()
    assert gc.get_freeze_count() == 0  # embedded apps (tests) are left alone
