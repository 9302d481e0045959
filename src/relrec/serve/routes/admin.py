"""``admin``: reload bundles, add items at run time, availability marks — behind a token
checked before the body is read (:class:`GuardedRoute`)."""

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.routing import APIRoute

from relrec.serve.errors import ServeError
from relrec.serve.routes.common import ADMIN_ERRORS
from relrec.serve.schemas import AvailabilityRequest, NewItemsRequest, RunName
from relrec.serve.settings import Settings
from relrec.serve.state import ServiceState

MIN_ADMIN_TOKEN_CHARS = 32


def check_admin_token(token: str | None) -> None:
    """An admin token, when given, has at least :data:`MIN_ADMIN_TOKEN_CHARS` characters."""
    if token and len(token) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(
            f"admin token: at least {MIN_ADMIN_TOKEN_CHARS} characters (this one has "
            f"{len(token)}); make one with: python -c \"import secrets; "
            "print(secrets.token_urlsafe(32))\"")


def authorize_admin(settings: Settings, authorization: str | None,
                    token_header: str | None) -> None:
    """403 when admin is disabled, 401 for a missing or wrong token."""
    if not settings.admin_token:
        raise ServeError(403, "admin_disabled",
                         "admin endpoints are disabled (start the server with an admin token)")
    given = token_header or ""
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not secrets.compare_digest(given.encode(), settings.admin_token.encode()):
        raise ServeError(401, "unauthorized", "missing or wrong admin token")


class GuardedRoute(APIRoute):
    """Every ``/admin`` route checks the token before FastAPI reads, parses or validates the
    body (401 before 422: a client without the token learns nothing about the body)."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        if not self.path.startswith("/admin"):
            return handler

        async def guarded(request: Request):
            authorize_admin(request.app.state.service.settings,
                            request.headers.get("authorization"),
                            request.headers.get("x-admin-token"))
            return await handler(request)

        return guarded


def router(state: ServiceState) -> APIRouter:
    s = state.settings
    api = APIRouter(tags=["admin"], route_class=GuardedRoute)

    def authorize(authorization: str | None, token_header: str | None) -> None:
        authorize_admin(s, authorization, token_header)  # (GuardedRoute checked it already)

    AuthHeader = Annotated[str | None, Header(max_length=1024)]

    @api.post("/admin/reload", responses=ADMIN_ERRORS)
    def admin_reload(run: RunName | Literal["all"] = "all",
                     authorization: AuthHeader = None, x_admin_token: AuthHeader = None):
        """Reload bundles from disk; a refused bundle leaves the old one serving (409)."""
        authorize(authorization, x_admin_token)
        names = list(state.sources) if run == "all" else [run]
        if any(name not in state.sources for name in names):
            raise ServeError(404, "unknown_run", f"no {run!r} run is served")
        return {"reloaded": state.reload(names)}

    @api.post("/admin/items", responses=ADMIN_ERRORS)
    def admin_items(request: NewItemsRequest, authorization: AuthHeader = None,
                    x_admin_token: AuthHeader = None):
        """Add (or replace) candidate items from their metadata, without retraining."""
        authorize(authorization, x_admin_token)
        if len(request.items) > s.max_new_items:
            raise ServeError(422, "invalid_request", f"items: at most {s.max_new_items} per call")
        names = list(state.models) if request.run == "all" else [request.run]
        for name in names:
            state.model(name)
        with state.reload_lock:
            records = []
            for new in request.items:
                for name in names:
                    if new.item_id in state.models[name].run.index_of_id:
                        raise ServeError(409, "item_exists",
                                         f"item {new.item_id!r} is already in the catalogue")
                records.append(dict(new.model_dump(), _run=request.run))
            result = state.add_items(records, names)
        return {"runs": result}

    @api.post("/admin/availability", responses=ADMIN_ERRORS)
    def admin_availability(request: AvailabilityRequest, authorization: AuthHeader = None,
                           x_admin_token: AuthHeader = None):
        """Mark items (un)available: unavailable items are never recommended."""
        authorize(authorization, x_admin_token)
        if len(request.item_ids) > s.max_exclude:
            raise ServeError(422, "invalid_request", f"item_ids: at most {s.max_exclude}")
        with state.reload_lock:
            state.set_available(request.item_ids, request.available)
        return {"unavailable": len(state.unavailable)}

    return api
