"""The HTTP routes, one :class:`fastapi.APIRouter` per tag, each built for a
:class:`~relrec.serve.state.ServiceState` (limits such as ``max_k`` come from its settings)."""

from relrec.serve.routes import admin, health, items, related, runs

ROUTERS = (related, items, runs, health, admin)

__all__ = ["ROUTERS"]
