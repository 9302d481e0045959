"""``explorer`` (runs): the served runs and the items' image files."""

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from relrec.serve.errors import ServeError
from relrec.serve.schemas import ErrorResponse, RunName
from relrec.serve.state import ServiceState


def router(state: ServiceState) -> APIRouter:
    s = state.settings
    api = APIRouter(tags=["explorer"])

    @api.get("/v1/runs")
    async def runs():
        """The served runs (main and optional compare) with their versions and heads."""
        return {"runs": [model.info() for model in state.models.values()],
                "limits": {"max_k": s.max_k, "max_batch": s.max_batch,
                           "max_session_items": s.max_session_items,
                           "max_body_bytes": s.max_body_bytes}}

    @api.get("/images/{run}/{item_id}", responses={404: {"model": ErrorResponse}},
             response_class=FileResponse)
    def image(run: RunName, item_id: Annotated[str, PathParam(min_length=1, max_length=256)]):
        """An item's poster — only a file inside the run's image folder (symlinks resolved
        and checked on every request). An item whose image is an http(s) URL answers 404:
        the server never fetches (nor redirects to) it; its ``image_url`` is that URL."""
        model = state.model(run)
        index = model.catalogue.require_indices([item_id])[0]
        path = model.catalogue.resolve_image(index)
        if path is None:
            if model.catalogue.image_link(index):
                raise ServeError(404, "external_image",
                                 f"item {item_id!r} has an external image: use its image_url")
            raise ServeError(404, "no_image", f"item {item_id!r} has no image")
        return FileResponse(path)

    return api
