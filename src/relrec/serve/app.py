"""The HTTP service: ``create_app(Settings(run_dir=...))`` → a FastAPI app.

Assembled here from :mod:`relrec.serve.settings`, :mod:`~relrec.serve.state` (the bundles),
:mod:`~relrec.serve.middleware`, :mod:`~relrec.serve.limits` and one router per tag
(:mod:`relrec.serve.routes`). Every error a client can cause is a 4xx JSON body
``{"error": {"code", "message"}}``; an unexpected exception is logged with its traceback server
side and answered with a bare 500 JSON (no details) — the tests assert that no generated input
ever reaches it.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from relrec.serve.errors import ServeError
from relrec.serve.limits import ConcurrencyLimits, RouteLabels
from relrec.serve.middleware import BodyLimitAndMetrics, StoredAnswers, error_response
from relrec.serve.routes import ROUTERS
from relrec.serve.routes.admin import GuardedRoute, authorize_admin, check_admin_token
from relrec.serve.settings import Settings
from relrec.serve.state import ServiceState

log = logging.getLogger("relrec.serve")
STATIC = Path(__file__).parent / "static"

__all__ = ["ServiceState", "Settings", "authorize_admin", "check_admin_token", "create_app"]


def create_app(settings: Settings, state: ServiceState | None = None) -> FastAPI:
    check_admin_token(settings.admin_token)
    state = state or ServiceState(settings)
    if not state.ready:
        state.load_all()
    s = settings
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app):
        if s.watch:
            threading.Thread(target=state.watch_loop, args=(stop,), daemon=True,
                             name="relrec-watch").start()
        yield
        stop.set()

    telemetry = None if s.opentelemetry else {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="relrec", version="1", lifespan=lifespan, telemetry=telemetry,
                  description="Related-item lists: by item, session (up next), batch and content; "
                              "web explorer at /.")
    app.state.service = state
    app.router.route_class = GuardedRoute  # /admin/*: the token before the body
    state.labels = RouteLabels(app.router)
    app.add_middleware(StoredAnswers, state=state)  # innermost: after the limits, metrics
    app.add_middleware(ConcurrencyLimits, max_requests=s.max_concurrent_requests or None,
                       pools={"/v1/related/by-content": s.max_content_requests or None},
                       retry_after=s.retry_after)
    app.add_middleware(BodyLimitAndMetrics, state=state)  # outermost: counts the refusals too

    # -- errors --------------------------------------------------------------------------
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, error: ServeError):
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        details = []
        for item in error.errors()[:20]:
            details.append({"loc": [str(part) for part in item.get("loc", ())],
                            "msg": str(item.get("msg", ""))[:300], "type": str(item.get("type"))})
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return error_response(422, "invalid_request", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return error_response(error.status_code, codes.get(error.status_code, "http_error"),
                              str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error (logged on the server)")

    for module in ROUTERS:  # the routes themselves (metric labels read their templates)
        app.router.routes.extend(module.router(state).routes)
    # the most frequent request is matched first, before the docs and the other routes
    app.router.routes.sort(key=lambda route: not getattr(route, "hot_path", False))

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
