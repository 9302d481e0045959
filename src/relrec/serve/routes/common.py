"""What several routers share: raw-bytes JSON responses and request checks."""

from __future__ import annotations

from fastapi.responses import Response

from relrec.serve.engine import ServedModel
from relrec.serve.errors import ServeError
from relrec.serve.schemas import ErrorResponse
from relrec.serve.settings import Settings

ERRORS = {status: {"model": ErrorResponse} for status in (404, 413, 422)}
ADMIN_ERRORS = {status: {"model": ErrorResponse} for status in (401, 403, 409, 413, 422)}


class JSONBytes(Response):
    """A JSON body that is already bytes (documented by the route's ``response_model``, never
    re-validated nor re-encoded)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return content


def check_k(settings: Settings, k: int) -> None:
    if k > settings.max_k:
        raise ServeError(422, "invalid_request", f"k: must be at most {settings.max_k}")


def split_ids(settings: Settings, values: list[str]) -> list[str]:
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if len(out) > settings.max_exclude:
        raise ServeError(422, "invalid_request", f"exclude: at most {settings.max_exclude} ids")
    return out


def check_diversify(model: ServedModel, diversify: bool) -> None:
    if diversify and not (model.has_reranker and model.related.has_reranker):
        raise ServeError(422, "not_available",
                         "diversify: not available for this model (no re-ranker in the run)")
