"""A real ``relrec serve`` on loopback: reload under load, kill and restart; schemathesis.

Bounded: a few hundred requests over a few seconds; 127.0.0.1 only.
"""

import asyncio
import random

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

AUTH = {"Authorization": "Bearer test-token-123-0123456789abcdef-xyz"}



async def hammer(url, item_ids, total, concurrency, during=None):
    """At least ``total`` GETs at ``concurrency``; ``during`` runs once a third of them are
    done, and the load goes on until it has returned, then one more request per worker (sent
    after ``during`` returned, whatever the reload's duration against the requests')."""
    statuses, versions = [], []
    queue = asyncio.Queue()
    for position in range(total):
        queue.put_nowait(position)
    started, finished = asyncio.Event(), asyncio.Event()

    async def worker(client):
        while True:
            try:
                position = queue.get_nowait()
            except asyncio.QueueEmpty:
                if during is None or finished.is_set():
                    return
                position = total  # keep the load on while ``during`` runs
            if position == total // 3:
                started.set()
            try:
                response = await client.get(f"{url}/v1/items/{random.choice(item_ids)}/related",
                                            params={"k": 10})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])
            except httpx.HTTPError as error:
                statuses.append(repr(error))

    async def side():
        await started.wait()
        try:
            return await during() if during else None
        finally:
            for _ in range(concurrency):
                queue.put_nowait(total + 1)
            finished.set()

    async with httpx.AsyncClient(timeout=30) as client:
        results = await asyncio.gather(side(), *(worker(client) for _ in range(concurrency)))
    return statuses, versions, results[0]


@pytest.mark.slow
def test_reload_under_load_drops_nothing(run_copy, serve_runs, start_server, publish):
    server = start_server(run_copy, "--state-dir", run_copy.parent / "state")
    item_ids = ["1", "260", "296", "318", "356", "480", "589", "593", "2571", "2959"]

    async def reload():
        publish(serve_runs[1], run_copy)
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(f"{server.url}/admin/reload", headers=AUTH)
        return response

    statuses, versions, reload_response = asyncio.run(
        hammer(server.url, item_ids, total=400, concurrency=8, during=reload))
    assert reload_response.status_code == 200, reload_response.text
    new = reload_response.json()["reloaded"]["main"]["version"]
    assert len(statuses) >= 400 and statuses == [200] * len(statuses), \
        [s for s in statuses if s != 200][:5]
    assert versions[0] != new and versions[-1] == new  # both bundles served, no gap


@pytest.mark.slow
def test_kill_and_restart_keeps_serving_the_last_good_bundle(run_copy, start_server):
    state = run_copy.parent / "state"
    server = start_server(run_copy, "--state-dir", state, log_name="first.log")
    good = httpx.get(f"{server.url}/v1/items/1/related").json()["model_version"]
    server.kill()  # SIGKILL: no clean shutdown
    weights = run_copy / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the bundle is damaged meanwhile
    restarted = start_server(run_copy, "--state-dir", state, log_name="second.log")
    body = httpx.get(f"{restarted.url}/v1/items/1/related").json()
    assert body["model_version"] == good and len(body["items"]) == 10
    assert httpx.get(f"{restarted.url}/readyz").json()["runs"]["main"]["fallback"] is True
    log = restarted.output()
    assert "refused bundle" in log and f"serving the last good bundle {good}" in log
    assert "Traceback" not in log


def test_schemathesis_finds_no_server_error(served_app):
    """Every operation of the OpenAPI schema, 40 generated cases each (in process, ASGI)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", served_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    calls = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call_and_validate(checks=[not_a_server_error])
            calls.append((operation.label, response.status_code))

        check()
    assert len({label for label, _ in calls}) == len(operations) and len(calls) > 100
    assert {status for _, status in calls} >= {200, 422}
