"""Pure ASGI middleware: the request body limit and the request metrics."""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse


def error_response(status: int, code: str, message: str, **extra) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status)


class BodyLimitAndMetrics:
    """Pure ASGI: refuses bodies over the limit with 413 JSON; counts and times requests."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.state.settings.max_body_bytes
        start = time.perf_counter()
        status_holder = {"status": 500}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = False
        if length is not None:
            try:
                too_large = int(length) > limit
            except ValueError:
                too_large = False
        if too_large:
            response = error_response(413, "body_too_large",
                                      f"request body over the limit of {limit} bytes")
            await response(scope, receive, send)
            self.state.observe(scope, 413, time.perf_counter() - start)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # no declared length (chunked): read up to the limit before the app sees anything
            messages, received = [], 0
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                received += len(message.get("body", b""))
                if received > limit:
                    response = error_response(413, "body_too_large",
                                              f"request body over the limit of {limit} bytes")
                    await response(scope, receive, send)
                    self.state.observe(scope, 413, time.perf_counter() - start)
                    return
                if not message.get("more_body", False):
                    break
            replay = iter(messages)

            async def replay_receive():
                try:
                    return next(replay)
                except StopIteration:
                    return await receive()

            downstream_receive = replay_receive
        else:
            downstream_receive = receive

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        await self.app(scope, downstream_receive, tracking_send)
        self.state.observe(scope, status_holder["status"], time.perf_counter() - start)


class StoredAnswers:
    """Pure ASGI, inside the body limit, metrics and concurrency limits: a GET the precomputed
    table answers (``state.stored_answer(scope)``, set by the related routes) is sent from
    here, before FastAPI's own per-request stack (its exception and exit-stack middleware, the
    router) — the same bytes and headers as the route; anything else goes on."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        answer = self.state.stored_answer
        if scope["type"] == "http" and scope["method"] == "GET" and answer is not None:
            body = answer(scope)
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"%d" % len(body)),
                                        (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
