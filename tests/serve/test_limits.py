"""Limits against expensive or slow clients: closed metric labels, concurrency (503) and encoder
(429) pools, a header timeout and a connection cap on the real uvicorn server, log rate limits.

Mechanisms only: a blocked encoder stub holds a slot open; the timeouts are test-sized (0.5 s)
and a test only waits for a connection to be closed (at most 5 s), never measures how fast.
"""

import asyncio
import logging
import random
import re
import socket
import threading
import time

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from relrec.cli import app as cli_app
from relrec.serve.app import create_app
from relrec.serve.limits import HTTP_PARSERS

from .conftest import HashingTextEncoder

BLOCK = "block-me"


class GatedEncoder(HashingTextEncoder):
    """The hashing encoder, but a text holding ``block-me`` waits for ``gate`` (a slow encoder)."""

    entered = threading.Event()
    gate = threading.Event()

    def encode(self, texts):
        if any(BLOCK in str(text) for text in texts):
            GatedEncoder.entered.set()
            assert GatedEncoder.gate.wait(30), "the test never opened the gate"
        return super().encode(texts)


@pytest.fixture()
def gated():
    GatedEncoder.entered.clear()
    GatedEncoder.gate.clear()
    yield GatedEncoder
    GatedEncoder.gate.set()  # never leave a worker thread blocked


def assert_json_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]


# -- 1. /metrics labels come from a closed set ---------------------------------------------
def label_values(metrics: str, name: str, label: str) -> set[str]:
    return set(re.findall(rf'^{name}{{[^}}]*\b{label}="([^"]*)"', metrics, re.M))


def test_metric_labels_stay_a_closed_set_under_invented_methods_and_paths(client, served_app):
    rng = random.Random(0)
    before = len(client.get("/metrics").content)
    for number in range(300):
        method = rng.choice(["GET", "POST", "DELETE", f"X{rng.getrandbits(40):x}",
                             f"BREW{number}", "PROPFIND"])
        path = rng.choice([f"/{rng.getrandbits(60):x}", f"/v1/items/{rng.getrandbits(40):x}/related",
                           f"/v1/nothing/{number}", f"/images/main/{number}", f"/static/{number}.js"])
        assert client.request(method, path).status_code < 500
    metrics = client.get("/metrics").text
    methods = label_values(metrics, "relrec_requests_total", "method")
    routes = label_values(metrics, "relrec_requests_total", "route")
    routes |= label_values(metrics, "relrec_request_seconds_bucket", "route")
    templates = {route.path for route in served_app.routes}
    assert methods <= {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "other"}, methods
    assert "other" in methods
    assert routes <= templates | {"other"}, routes - templates
    assert {"other", "/v1/items/{item_id}/related", "/images/{run}/{item_id}"} <= routes
    assert 'method="other",route="/v1/items/{item_id}/related",status="405"' in metrics
    assert len(metrics.encode()) < before + 64 * 1024  # bounded, not one series per request


# -- 2. concurrency: past the limit 503 JSON; past the encoder pool 429 JSON ---------------
async def hold_a_content_request(app, other_requests):
    """Start a by-content call that blocks in the encoder; run ``other_requests(client)`` while it
    holds its slot; open the gate; return (the blocked call's response, the others' result)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
        blocked = asyncio.create_task(client.post("/v1/related/by-content",
                                                  json={"title": f"space {BLOCK}", "k": 5}))
        assert await asyncio.to_thread(GatedEncoder.entered.wait, 20), "the encoder was not reached"
        try:
            result = await other_requests(client)
        finally:
            GatedEncoder.gate.set()
        return await blocked, result


def test_past_the_concurrency_limit_a_request_gets_503_json(serve_runs, tmp_path, make_settings,
                                                            gated):
    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "state",
                                   text_encoder_factory=GatedEncoder, max_concurrent_requests=1,
                                   max_content_requests=4))

    async def others(client):
        return (await client.get("/v1/items/1/related"), await client.get("/healthz"),
                await client.post("/v1/up-next", json={"items": ["1"]}))

    blocked, (related, health, up_next) = asyncio.run(hold_a_content_request(app, others))
    assert_json_error(related, 503, "overloaded")
    assert_json_error(up_next, 503, "overloaded")
    assert related.headers["retry-after"] == "1"
    assert health.status_code == 200  # liveness is exempt
    assert blocked.status_code == 200 and blocked.json()["items"]
    from fastapi.testclient import TestClient

    assert TestClient(app).get("/v1/items/1/related").status_code == 200  # the slot came back
    metrics = TestClient(app).get("/metrics").text
    assert 'route="/v1/items/{item_id}/related",status="503"' in metrics


def test_past_the_encoder_limit_by_content_gets_429_json(serve_runs, tmp_path, make_settings,
                                                         gated):
    app = create_app(make_settings(serve_runs[0], state_dir=tmp_path / "state",
                                   text_encoder_factory=GatedEncoder, max_concurrent_requests=8,
                                   max_content_requests=1))

    async def others(client):
        return (await client.post("/v1/related/by-content", json={"title": "space", "k": 5}),
                await client.get("/v1/items/1/related"))

    blocked, (second, related) = asyncio.run(hold_a_content_request(app, others))
    assert_json_error(second, 429, "rate_limited")
    assert int(second.headers["retry-after"]) >= 1
    assert related.status_code == 200  # the rest of the API is not held up by the encoder pool
    assert blocked.status_code == 200
    from fastapi.testclient import TestClient

    again = TestClient(app).post("/v1/related/by-content", json={"title": "space", "k": 5})
    assert again.status_code == 200, again.text


# -- 3. the real server: header timeout, keep-alive timeout, connection cap ----------------
class ThreadServer:
    """``build_server`` (what ``relrec serve`` runs) on a pre-bound loopback socket, in a thread."""

    def __init__(self, app, settings):
        from relrec.serve.server import build_server

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = build_server(app, settings, host="127.0.0.1", port=self.port,
                                   log_config=None)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            self.thread.join(0.05)
        raise AssertionError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; socket.timeout (a failure) if it does not."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (headers and a JSON body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def get(sock: socket.socket, path="/healthz", keep_alive=True) -> bytes:
    close = "" if keep_alive else "Connection: close\r\n"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{close}\r\n".encode())
    return read_answer(sock)


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_a_connection_that_stops_mid_headers_is_closed_after_the_header_timeout(
        served_app, serve_runs, make_settings, http):
    settings = make_settings(serve_runs[0], header_timeout=0.5, keep_alive_timeout=0.5,
                             http=http)
    with ThreadServer(served_app, settings) as server:
        partial, silent = server.connect(), server.connect()
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        assert read_until_closed(partial) == b""  # closed, no answer
        assert read_until_closed(silent) == b""  # never sent a byte: closed too
        # a trickle of header bytes does not reset the clock: closed before the trickle ends
        trickle = server.connect()
        trickle.sendall(b"GET /healthz HTTP/1.1\r\n")
        trickle.settimeout(0.2)
        closed = False
        for _ in range(25):  # 25 bytes, one per 0.2 s wait: 5 s, ten header timeouts
            try:
                if trickle.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            try:
                trickle.sendall(b"X")
            except OSError:  # reset by the closed peer
                closed = True
                break
        assert closed
        # a complete request is answered; the kept-alive idle connection is closed after
        kept = server.connect()
        assert b" 200 OK" in get(kept)
        assert read_until_closed(kept) == b""
        fresh = server.connect()
        assert b'{"status":"ok"}' in get(fresh, keep_alive=False)
        fresh.close()


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_trickling_the_body_of_a_request_answered_early_does_not_keep_it_open(
        served_app, serve_runs, make_settings, http):
    # a 413 from the declared length comes before the body; the request's own deadline stands:
    # uvicorn's keep-alive timer (cancelled by every byte) must not take over, nor may the
    # trickle arm a fresh header timer for the request already answered
    settings = make_settings(serve_runs[0], header_timeout=1.0, keep_alive_timeout=3.0,
                             http=http)
    with ThreadServer(served_app, settings) as server:
        sock = server.connect()
        start = time.monotonic()  # the header timer runs from the connection
        sock.sendall(b"POST /v1/related/by-content HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")
        data = read_answer(sock)
        assert b" 413 " in data.split(b"\r\n", 1)[0], data
        sock.settimeout(0.7)  # silent a while (within keep-alive), then one byte per 0.25 s
        closed_after = None
        while time.monotonic() - start < 5.0:
            try:
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - start
                    break
            except socket.timeout:
                pass
            sock.settimeout(0.25)
            try:
                sock.sendall(b"{")
            except OSError:  # reset by the closed peer
                closed_after = time.monotonic() - start
                break
        assert closed_after is not None, "still open 5 s after connecting (header timeout 1 s)"
        # closed at the request's deadline (1 s), not a header timeout after the first
        # trickled byte (0.7 + 1 s)
        assert closed_after < 1.45, closed_after
        # a body that does arrive in time after the early answer: the connection serves on
        kept = server.connect()
        kept.sendall(b"POST /v1/related/by-content HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 300000\r\n\r\n")
        data = read_answer(kept)
        assert b" 413 " in data.split(b"\r\n", 1)[0], data
        kept.sendall(b"x" * 300000)
        assert b" 200 OK" in get(kept)
        assert b" 200 OK" in get(kept)
        assert read_until_closed(kept) == b""  # then closed when idle, as any kept-alive one


class GateApp:
    """A tiny ASGI app: ``/slow`` waits for ``gate`` (a request in progress), the rest answer."""

    def __init__(self):
        self.gate, self.entered = threading.Event(), threading.Semaphore(0)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        if scope["path"] == "/slow":
            self.entered.release()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"12")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_past_the_connection_cap_the_longest_idle_connection_makes_room(serve_runs,
                                                                         make_settings, http):
    settings = make_settings(serve_runs[0], header_timeout=30, keep_alive_timeout=30,
                             max_connections=2, http=http)
    app = GateApp()
    with ThreadServer(app, settings) as server:
        stalled = server.connect()
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # mid-headers: idle
        busy = server.connect()
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert app.entered.acquire(timeout=10)  # a request in progress: not idle
        newcomer = server.connect()  # third: the stalled one is closed to make room
        assert b" 200 OK" in get(newcomer, "/")  # ... and the newcomer is served (kept alive)
        assert read_until_closed(stalled) == b""
        second_busy = server.connect()  # third again: the kept-alive newcomer is idle longest
        assert read_until_closed(newcomer) == b""
        second_busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        assert app.entered.acquire(timeout=10)
        refused = server.connect()  # both open ones busy, none idle: the new one is closed
        assert read_until_closed(refused) == b""
        app.gate.set()
        for sock in (busy, second_busy):
            data = read_answer(sock)
            assert b" 200 OK" in data


@pytest.mark.parametrize("http", HTTP_PARSERS)
def test_a_pipelined_request_waits_for_the_answer_before_its_clock_runs(serve_runs,
                                                                         make_settings, http):
    # request 2 begins (partly sent) while request 1 is answered for longer than the header
    # timeout: request 1's answer still arrives, then request 2 is served once complete
    settings = make_settings(serve_runs[0], header_timeout=0.5, keep_alive_timeout=5, http=http)
    app = GateApp()
    with ThreadServer(app, settings) as server:
        sock = server.connect()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n")
        assert app.entered.acquire(timeout=10)
        time.sleep(1.0)  # twice the header timeout
        app.gate.set()
        data = read_answer(sock)
        assert b" 200 OK" in data
        sock.sendall(b"\r\n")  # request 2 completed: answered
        data = read_answer(sock)
        assert b" 200 OK" in data


def test_serve_cli_takes_the_limits(run_copy, start_server):
    server = start_server(run_copy, "--state-dir", run_copy.parent / "state",
                          "--header-timeout", "0.5", "--keep-alive-timeout", "1",
                          "--max-connections", "50", "--max-concurrent-requests", "8",
                          "--max-content-requests", "1", "--log-rate", "5",
                          "--http", "h11", "--search-batch", "8")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        assert read_until_closed(sock) == b""
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    item = pd.read_parquet(run_copy / "data" / "items.parquet")["item_id"].astype(str)[0]
    answer = httpx.get(f"{server.url}/v1/items/{item}/related", params={"k": 3})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 3


def test_serve_cli_refuses_an_unknown_http_parser_before_loading(run_copy):
    result = CliRunner().invoke(cli_app, ["serve", str(run_copy), "--http", "fast"])
    assert result.exit_code == 2
    assert "--http 'fast': one of httptools, h11" in result.output


def test_limits_are_on_by_default(tmp_path):
    from relrec.serve.app import Settings

    settings = Settings(run_dir=tmp_path)
    for name in ("max_concurrent_requests", "max_content_requests", "header_timeout",
                 "keep_alive_timeout", "max_connections", "log_rate"):
        assert getattr(settings, name), name


# -- 4. log rate limit ---------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_log_filter_drops_records_past_the_rate_and_counts_them():
    from relrec.serve.limits import LogRateLimit

    clock = Clock()
    limiter = LogRateLimit(per_second=5, report_every=60, clock=clock)
    handler = Collect()
    handler.addFilter(limiter)
    logger = logging.getLogger("relrec.test.flood")
    report_logger = logging.getLogger("relrec.serve.logs")
    logger.addHandler(handler)
    report_logger.addHandler(handler)
    logger.propagate = report_logger.propagate = False
    try:
        for number in range(50):
            logger.warning("invalid request from %s", number)
        logger.warning("another message")
        messages = [record.getMessage() for record in handler.records]
        assert messages == [f"invalid request from {n}" for n in range(5)] + ["another message"]
        assert limiter.dropped_total == 45
        clock.now += 1.0  # a new second: five more pass
        for number in range(10):
            logger.warning("invalid request from %s", number)
        assert len(handler.records) == 11 and limiter.dropped_total == 50
        clock.now += 60  # the report is due: the next record brings it
        logger.warning("after a while")
        report = [r for r in handler.records if r.name == "relrec.serve.logs"]
        assert len(report) == 1 and "dropped 50 records" in report[0].getMessage()
        assert "invalid request from %s" in report[0].getMessage()
        assert handler.records[-1].getMessage() == "after a while"
        assert limiter.report(force=True) == 0  # counts were reset by the report
        for number in range(7):
            logger.warning("invalid request from %s", number)
        assert limiter.report(force=True) == 2 and limiter.dropped_total == 52
    finally:
        logger.removeHandler(handler)
        report_logger.removeHandler(handler)
        logger.propagate = report_logger.propagate = True
