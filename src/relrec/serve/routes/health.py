"""``ops``: liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relrec.serve.middleware import error_response
from relrec.serve.state import ServiceState


def router(state: ServiceState) -> APIRouter:
    api = APIRouter(tags=["ops"])

    @api.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz():
        if not state.ready or "main" not in state.models:
            return error_response(503, "not_ready", "no model loaded yet")
        return {"status": "ready",
                "runs": {name: {"version": m.version, "fallback": getattr(m, "fallback", False)}
                         for name, m in state.models.items()}}

    @api.get("/metrics", response_class=Response)
    def metrics():
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    return api
