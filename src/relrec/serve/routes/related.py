"""``related``: lists by item, batch, session (up next) and new-item content."""

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route

from relrec.serve.batching import RequestBatcher
from relrec.serve.engine import ServedModel
from relrec.serve.errors import ServeError
from relrec.serve.images import check_image
from relrec.serve.render import dumps, list_body
from relrec.serve.routes.common import (
    ERRORS,
    JSONBytes,
    check_diversify,
    check_k,
    split_ids,
)
from relrec.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ContentRequest,
    RelatedList,
    RunName,
    UpNextRequest,
)
from relrec.serve.state import ServiceState


def router(state: ServiceState) -> APIRouter:
    s = state.settings
    api = APIRouter(tags=["related"])

    def banned(model: ServedModel, exclude: list[str]) -> np.ndarray:
        static = state.static_banned(model)
        if not exclude:
            return static
        return np.union1d(static, model.catalogue.exclusion_indices(exclude))

    def list_bodies(model: ServedModel, triggers: list[int], k: int, exclude: list[str],
                    alpha: float | None, diversify: bool, exact: bool) -> list[bytes]:
        """One body per trigger: the precomputed table where it answers, the rest in one
        batched index search."""
        bodies: list[bytes | None] = [None] * len(triggers)
        if (s.use_precomputed and not exact and not exclude and alpha is None
                and not diversify and not len(state.static_banned(model))):
            bodies = [model.precomputed_body(t, k) for t in triggers]
        todo = [row for row, body in enumerate(bodies) if body is None]
        if todo:
            rows = np.asarray([triggers[row] for row in todo], np.int64)
            ranked = model.rank_rows(rows, k, banned=banned(model, exclude), alpha=alpha,
                                     diversify=diversify)
            entries = model.entries(rows[:, None], ranked.indices, ranked.scores)
            for j, row in enumerate(todo):
                trigger = triggers[row]
                head = {"item_id": model.catalogue.item_id(trigger),
                        "title": model.catalogue.title(trigger),
                        "run": model.name, "model_version": model.version,
                        "mode": ranked.mode}
                bodies[row] = list_body(head, entries[j], k, ranked.notes)
        return bodies

    def related_index(model, item_id, k, exclude, alpha, diversify, exact) -> JSONBytes:
        trigger = model.catalogue.require_indices([item_id])[0]
        return JSONBytes(list_bodies(model, [trigger], k, split_ids(s, exclude), alpha,
                                     diversify, exact)[0])

    # unfiltered index-path lists in flight together: one batched search (serve/batching.py)
    batcher = RequestBatcher(lambda key, triggers: list_bodies(key[0], list(triggers), key[1],
                                                               [], key[2], False, key[3]),
                             max_batch=max(1, s.search_batch))
    state.search_batcher = batcher

    async def related_unfiltered(model, item_id, k, alpha, exact) -> JSONBytes:
        """One list without exclude or diversify: alone, or batched with the others in
        flight (same model, k and options)."""
        if s.search_batch <= 1:
            return related_index(model, item_id, k, [], alpha, False, exact)
        trigger = model.catalogue.require_indices([item_id])[0]
        return JSONBytes(await batcher.submit((model, k, alpha, exact), trigger))

    @api.get("/v1/items/{item_id}/related", response_model=RelatedList, responses=ERRORS,
             response_class=JSONBytes)
    async def related(item_id: Annotated[str, PathParam(min_length=1, max_length=256)],
                      k: Annotated[int, Query(ge=1, le=s.max_k)] = 10,
                      alpha: Annotated[float | None, Query(ge=0.0, le=1.0,
                                                           allow_inf_nan=False)] = None,
                      diversify: bool = False,
                      exclude: Annotated[list[str], Query(
                          description="ids; repeat or comma-separate")] = [],
                      run: RunName = "main",
                      mode: Literal["auto", "exact"] = "auto"):
        """Related items of one item. Unfiltered default-option requests in precomputed mode
        are a table lookup on the event loop; one index search is cheap enough to run there
        too; diversify (the re-ranker) runs in the thread pool."""
        model = state.model(run)
        check_diversify(model, diversify)
        if not exclude and alpha is None and not diversify and mode == "auto":
            answer = precomputed_answer(model, item_id, k)
            if answer is not None:
                return answer
        arguments = (model, item_id, k, exclude, alpha, diversify, mode == "exact")
        if diversify:
            return await run_in_threadpool(related_index, *arguments)
        if not exclude:
            return await related_unfiltered(model, item_id, k, alpha, mode == "exact")
        return related_index(*arguments)

    def precomputed_answer(model, item_id: str, k: int):
        """The stored list body of an unfiltered default-option request, or None."""
        if not s.use_precomputed or len(state.static_banned(model)):
            return None
        trigger = model.run.index_of_id.get(item_id)
        body = None if trigger is None else model.precomputed_body(trigger, k)
        return None if body is None else JSONBytes(body)

    # the common request, ``?k=N`` or nothing, answered without FastAPI's parameter machinery
    # (CommonRelated matches only those); anything else (other parameters, a bad k, a long
    # id) goes on to the route above, which validates it and is the one in OpenAPI
    async def related_common(request):
        item_id = request.path_params["item_id"]
        k = CommonRelated.k_of(request.scope)
        model = state.model("main")
        answer = precomputed_answer(model, item_id, k)
        if answer is not None:
            return answer
        return await related_unfiltered(model, item_id, k, None, False)

    common = CommonRelated("/v1/items/{item_id}/related", related_common, methods=["GET"],
                           include_in_schema=False, max_k=s.max_k)
    api.routes.insert(len(api.routes) - 1, common)

    def stored_answer(scope) -> bytes | None:
        """The stored body of a common request (``?k=N`` or nothing) the precomputed table
        answers, for :class:`relrec.serve.middleware.StoredAnswers` in front of FastAPI's
        stack; None for every other request (it goes on to the routes)."""
        model = state.models.get("main")
        if model is None or model.bodies is None:
            return None
        match, child = common.matches(scope)
        if match is not Match.FULL:
            return None
        answer = precomputed_answer(model, child["path_params"]["item_id"],
                                    CommonRelated.k_of(scope))
        if answer is None:
            return None
        scope["route"] = common  # the metric label
        return answer.body

    state.stored_answer = stored_answer

    @api.post("/v1/related", response_model=BatchResponse, responses=ERRORS,
              response_class=JSONBytes)
    def related_batch(request: BatchRequest):
        """Related items of a batch of items (one list each; one batched index search)."""
        if len(request.item_ids) > s.max_batch:
            raise ServeError(422, "invalid_request", f"item_ids: at most {s.max_batch} per batch")
        check_k(s, request.k)
        model = state.model(request.run)
        check_diversify(model, request.diversify)
        triggers = model.catalogue.require_indices(request.item_ids)
        bodies = list_bodies(model, triggers, request.k, split_ids(s, request.exclude),
                             request.alpha, request.diversify, request.mode == "exact")
        return JSONBytes(b'{"run":%s,"model_version":"%s","results":[%s]}' % (
            dumps(model.name), model.version.encode(), b",".join(bodies)))

    @api.post("/v1/up-next", response_model=RelatedList, responses=ERRORS,
              response_class=JSONBytes)
    def up_next(request: UpNextRequest):
        """One list for a session's recent items (most recent last); seen items excluded."""
        if len(request.items) > s.max_session_items:
            raise ServeError(422, "invalid_request",
                             f"items: at most {s.max_session_items} session items")
        check_k(s, request.k)
        model = state.model(request.run)
        check_diversify(model, request.diversify)
        triggers = model.catalogue.require_indices(request.items)
        ranked = model.rank(triggers, request.k,
                            banned=banned(model, split_ids(s, request.exclude)),
                            alpha=request.alpha, diversify=request.diversify)
        entries = model.entries(np.asarray([triggers]), ranked.indices, ranked.scores)[0]
        return JSONBytes(list_body({"run": model.name, "model_version": model.version,
                                    "mode": ranked.mode}, entries, request.k, ranked.notes))

    @api.post("/v1/related/by-content", response_model=RelatedList, responses=ERRORS,
              response_class=JSONBytes)
    def by_content(request: ContentRequest):
        """Related items of a new item from its title / description / tags (/ image)."""
        check_k(s, request.k)
        model = state.model(request.run)
        notes = []
        image_note = check_image(model, request)
        if image_note:
            notes.append(image_note)
        ranked, text = model.rank_content(request.model_dump(), request.k,
                                          banned(model, split_ids(s, request.exclude)))
        path = ranked.mode
        notes.insert(0, f"content path: {path}" + (
            " (the model's tower with the cold ID row and the item's text)" if path == "tower"
            else " (nearest catalogue items by text; this model has no text input)"))
        entries = model.entries(np.zeros((1, 0), np.int64), ranked.indices, ranked.scores,
                                trigger_text=text)[0]
        return JSONBytes(list_body({"title": request.title, "run": model.name,
                                    "model_version": model.version, "mode": path},
                                   entries, request.k, notes))

    return api



class CommonRelated(Route):
    """Matches ``GET /v1/items/{id}/related`` with no query or only ``k=N`` (1 <= N <= max_k,
    an id of at most 256 characters); every other request falls through to the next route.
    ``hot_path``: the app tries it before every other route (it shadows none)."""

    hot_path = True

    def __init__(self, *args, max_k: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_k = max_k

    @staticmethod
    def k_of(scope) -> int:
        """The k of a request this route matched (``k=N``, or 10 with no query)."""
        return int(scope["query_string"][2:] or 10)

    def matches(self, scope):
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        query = scope.get("query_string", b"")
        if query:
            digits = query[2:]
            if query[:2] != b"k=" or not digits.isdigit() or len(digits) > 6 \
                    or not 1 <= int(digits) <= self.max_k:
                return Match.NONE, {}
        if not 1 <= len(child["path_params"]["item_id"]) <= 256:
            return Match.NONE, {}
        child["route"] = self  # the metric label without matching every route again
        return match, child
