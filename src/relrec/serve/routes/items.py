"""``explorer`` (items): title search and one item's fields."""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from relrec.serve.render import dumps
from relrec.serve.routes.common import ERRORS, JSONBytes
from relrec.serve.schemas import RunName
from relrec.serve.state import ServiceState


def router(state: ServiceState) -> APIRouter:
    s = state.settings
    api = APIRouter(tags=["explorer"])

    @api.get("/v1/search", response_class=JSONBytes)
    async def search(q: Annotated[str, Query(min_length=1, max_length=200)],
                     limit: Annotated[int, Query(ge=1, le=s.max_search_results)] = 10,
                     run: RunName = "main"):
        """Items whose title contains ``q`` (case-insensitive), popular first."""
        model = state.model(run)
        return JSONBytes(dumps({"run": model.name, "model_version": model.version,
                                "items": model.catalogue.search_titles(q, limit)}))

    @api.get("/v1/items/{item_id}", responses=ERRORS, response_class=JSONBytes)
    async def item(item_id: Annotated[str, PathParam(min_length=1, max_length=256)],
                   run: RunName = "main"):
        model = state.model(run)
        index = model.catalogue.require_indices([item_id])[0]
        return JSONBytes(dumps(dict(model.catalogue.describe(index), model_version=model.version)))

    return api
