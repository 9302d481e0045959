"""Limits that keep the service answering under expensive or slow clients.

* :class:`RouteLabels` — metric labels from a closed set (route templates, known methods,
  ``other``), so invented methods and paths cannot grow ``/metrics``.
* :class:`ConcurrencyLimits` — pure ASGI: at most N requests in flight (past it 503 JSON) and
  smaller pools for expensive paths such as the encoder's ``/v1/related/by-content`` (past it
  429 JSON); both with ``Retry-After``.
* :func:`guarded_protocol` — uvicorn's HTTP protocol (httptools or h11) with a header timeout
  (uvicorn has none: a connection that stops mid-headers, or never sends a byte, is otherwise
  kept forever) and a cap on open connections (past it the longest idle one is closed, before
  file descriptors run out).
* :class:`LogRateLimit` — a ``logging.Filter``: at most N records per second per logger and
  message; the dropped ones are counted and reported periodically.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Iterable

log = logging.getLogger("relrec.serve")

KNOWN_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
OTHER = "other"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})  # liveness answers even when saturated


# -- metric labels ------------------------------------------------------------------------
class RouteLabels:
    """``method(scope)``, ``route(scope)``: labels from a closed set.

    The route is the template of the route that serves (or would serve) the path — also for
    requests refused before routing (413, 429, 503) — and ``other`` for paths no route knows.
    """

    def __init__(self, router):
        self.router = router  # routes are read at call time: they are added after creation

    @staticmethod
    def method(scope) -> str:
        method = scope.get("method", "")
        return method if method in KNOWN_METHODS else OTHER

    def templates(self) -> set[str]:
        return {path for route in self.router.routes
                if isinstance(path := getattr(route, "path", None), str)}

    def route(self, scope) -> str:
        from starlette.routing import Match

        route = scope.get("route")
        if route is None:
            for candidate in self.router.routes:
                try:
                    match, _ = candidate.matches(scope)
                except Exception:  # a malformed scope: no label from it
                    continue
                if match is not Match.NONE:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        # (an included router's route object may be a copy of the app's: match by template)
        return path if isinstance(path, str) and path in self._known() else OTHER

    def _known(self) -> set[str]:
        cached = self.__dict__.get("_templates")
        if cached is None or cached[0] != len(self.router.routes):
            cached = (len(self.router.routes), self.templates())
            self.__dict__["_templates"] = cached
        return cached[1]


# -- concurrency --------------------------------------------------------------------------
def _json_refusal(status: int, code: str, message: str, retry_after: int):
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(retry_after).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False})


class ConcurrencyLimits:
    """Pure ASGI. ``pools``: ``{path: at most in flight}`` (past it 429 ``rate_limited``);
    ``max_requests``: all requests in flight but ``exempt`` ones (past it 503 ``overloaded``).
    ``None`` turns a limit off. Counters live on the event loop: no lock needed."""

    def __init__(self, app, max_requests: int | None = None, pools: dict | None = None,
                 retry_after: int = 1, exempt: Iterable[str] = EXEMPT_PATHS):
        self.app = app
        self.max_requests = max_requests
        self.pools = {path: limit for path, limit in (pools or {}).items() if limit is not None}
        self.retry_after = retry_after
        self.exempt = frozenset(exempt)
        self.in_flight = 0
        self.pool_in_flight = {path: 0 for path in self.pools}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            return await self.app(scope, receive, send)
        path = scope.get("path")
        pool = path if path in self.pools else None
        if pool is not None and self.pool_in_flight[pool] >= self.pools[pool]:
            return await self._refuse(send, 429, "rate_limited",
                                      f"{path}: at most {self.pools[pool]} requests at a time; "
                                      f"retry after {self.retry_after}s")
        if self.max_requests is not None and self.in_flight >= self.max_requests:
            return await self._refuse(send, 503, "overloaded",
                                      f"server busy ({self.max_requests} requests in flight); "
                                      f"retry after {self.retry_after}s")
        self.in_flight += 1
        if pool is not None:
            self.pool_in_flight[pool] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if pool is not None:
                self.pool_in_flight[pool] -= 1

    async def _refuse(self, send, status, code, message):
        start, body = _json_refusal(status, code, message, self.retry_after)
        await send(start)
        await send(body)


# -- connections: header timeout, connection cap -------------------------------------------
# where the client's current request stands, for the guard below: WAITING (no request, or its
# line and headers not complete), BODY (headers done, body arriving), RECEIVED (all of it read)
WAITING, BODY, RECEIVED = "waiting", "body", "received"
HTTP_PARSERS = ("httptools", "h11")


def _parsed_protocol(parser: str):
    """uvicorn's protocol for ``parser`` with ``request_state()`` (WAITING / BODY / RECEIVED)."""
    if parser == "h11":
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        states = {h11.IDLE: WAITING, h11.SEND_BODY: BODY}

        class ParsedH11(H11Protocol):
            def request_state(self) -> str:
                return states.get(self.conn.their_state, RECEIVED)

        return ParsedH11
    if parser != "httptools":
        raise ValueError(f"unknown HTTP parser {parser!r} ({', '.join(HTTP_PARSERS)})")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ParsedHttpTools(HttpToolsProtocol):
        _state = WAITING

        def request_state(self) -> str:
            if self._state == WAITING and self.cycle is not None \
                    and not self.cycle.response_complete:
                # the next (pipelined) request began while this one is answered: as h11,
                # its clock starts once the answer is out
                return RECEIVED
            return self._state

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._state = WAITING

        def on_headers_complete(self) -> None:
            previous = self.cycle
            super().on_headers_complete()
            # no new cycle: an upgrade took the connection over (nothing left to guard)
            self._state = BODY if self.cycle is not previous else RECEIVED

        def on_message_complete(self) -> None:
            if self._state != BODY:  # an upgrade
                return super().on_message_complete()
            answered = self.cycle.response_complete
            super().on_message_complete()
            # a request answered before its body ended has nothing more to answer
            self._state = WAITING if answered else RECEIVED

        def on_response_complete(self) -> None:
            if self._state == RECEIVED and not self.pipeline:
                self._state = WAITING  # kept alive: the next request may come
            super().on_response_complete()

    return ParsedHttpTools


def guarded_protocol(header_timeout: float | None, max_connections: int | None,
                     parser: str = "httptools"):
    """A subclass of uvicorn's protocol for ``parser`` (``httptools``, the faster, or ``h11``;
    one class per server).

    ``header_timeout``: from the connection (or, on a kept-alive one, from the first byte of the
    next request) the client has this many seconds to send the whole request — request line,
    headers and body — or the connection is closed; trickled bytes do not reset the clock, and
    a request answered before its body arrived (413, 429, 503) keeps its deadline.
    ``max_connections``: when a new connection would exceed it, the connection that has been
    idle longest (waiting for a request: mid-headers, silent or kept alive) is closed to make
    room — stalled connections cannot lock others out; when none is idle, the new one is closed.
    """
    receiving = (WAITING, BODY)  # the client's request is not complete yet
    idle: dict = {}  # connections with no request in progress, longest idle first

    class GuardedProtocol(_parsed_protocol(parser)):
        _header_timer = None
        _answered_early = False  # answered while the request body is still arriving

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if max_connections is not None and len(self.connections) > max_connections:
                oldest = next(iter(idle), None)
                if oldest is None:
                    log.warning("over %d open connections, none idle: closing a new one",
                                max_connections)
                    transport.close()
                    return
                log.warning("over %d open connections: closing the one idle longest",
                            max_connections)
                oldest._forget()
                oldest.transport.close()
            idle[self] = None
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.request_state()
            if self._answered_early and state != BODY:
                # the body of a request answered early has ended (in time): a new cycle
                self._answered_early = False
                self._cancel_header_timer()
                if state == WAITING and not self.transport.is_closing():
                    idle.pop(self, None)
                    idle[self] = None
                    # uvicorn's keep-alive timer was cancelled by this data: our clock bounds
                    # the wait for the next request
                    self._arm_header_timer()
                    return
            if state != WAITING:
                idle.pop(self, None)  # a request is under way
            if state in receiving and not self.transport.is_closing():
                self._arm_header_timer()
            else:
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            if self.request_state() == BODY:
                # answered before the body arrived (413 from a declared length, a 429/503
                # refusal): the request's deadline stands. uvicorn's keep-alive timer cannot
                # bound it — every trickled byte cancels that — so the header timer, never
                # re-armed for this request, closes the connection if the body is not done.
                self._answered_early = True
                super().on_response_complete()
                return
            self._cancel_header_timer()
            super().on_response_complete()
            if self.request_state() == WAITING and not self.transport.is_closing():
                idle.pop(self, None)
                idle[self] = None  # idle again, the most recent

        def connection_lost(self, exc) -> None:
            self._forget()
            super().connection_lost(exc)

        def _forget(self) -> None:
            idle.pop(self, None)
            self._cancel_header_timer()

        def _arm_header_timer(self) -> None:
            if header_timeout is not None and self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self.request_state() in receiving and not self.transport.is_closing():
                self.transport.close()

    GuardedProtocol.idle = idle  # for tests and introspection
    return GuardedProtocol


# -- logs ---------------------------------------------------------------------------------
class LogRateLimit(logging.Filter):
    """At most ``per_second`` records per second for each (logger, message template); the rest
    are dropped and counted. Every ``report_every`` seconds (checked as records arrive, and by
    :meth:`report` — the server calls it from a timer thread) the drops since the last report
    are logged as one warning on ``relrec.serve.logs``."""

    REPORT_FLAG = "relrec_log_report"
    MAX_KEYS = 2000

    def __init__(self, per_second: int = 20, report_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.per_second, self.report_every, self.clock = per_second, report_every, clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # key -> [window start, records in it]
        self._dropped: dict[tuple, int] = {}
        self.dropped_total = 0  # since the start
        self._last_report = clock()

    @staticmethod
    def key(record: logging.LogRecord) -> tuple:
        message = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        return record.name, message[:200]

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.REPORT_FLAG, False):
            return True
        key, now = self.key(record), self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= 1.0:
                if window is None and len(self._windows) >= self.MAX_KEYS:
                    self._windows = {k: w for k, w in self._windows.items() if now - w[0] < 1.0}
                window = self._windows[key] = [now, 0]
            window[1] += 1
            allowed = window[1] <= self.per_second
            if not allowed:
                self.dropped_total += 1
                if key in self._dropped or len(self._dropped) < self.MAX_KEYS:
                    self._dropped[key] = self._dropped.get(key, 0) + 1
                else:
                    self._dropped[("", "(other messages)")] = \
                        self._dropped.get(("", "(other messages)"), 0) + 1
            due = self._dropped and now - self._last_report >= self.report_every
        if due:
            self.report()
        return allowed

    def report(self, force: bool = False) -> int:
        """Log (and reset) the drops since the last report; returns how many there were."""
        with self._lock:
            now = self.clock()
            if not self._dropped or not (force or now - self._last_report >= self.report_every):
                return 0
            dropped, self._dropped = self._dropped, {}
            seconds, self._last_report = now - self._last_report, now
        total = sum(dropped.values())
        top = sorted(dropped.items(), key=lambda item: -item[1])[:5]
        detail = "; ".join(f"{name or '-'} {message!r}: {count}" for (name, message), count in top)
        # logged outside the lock: this record passes through this same filter
        logging.getLogger("relrec.serve.logs").warning(
            "log rate limit (%d a second per message): dropped %d records in the last %.0fs (%s)",
            self.per_second, total, seconds, detail, extra={self.REPORT_FLAG: True})
        return total
