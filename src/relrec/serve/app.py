"""The HTTP service: ``create_app(Settings(run_dir=...))`` → a FastAPI app.

Every error a client can cause is a 4xx JSON body ``{"error": {"code", "message"}}``; an
unexpected exception is logged with its traceback server side and answered with a bare 500 JSON
(no details) — the tests assert that no generated input ever reaches it.
"""


import functools
import logging
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

from fastapi import FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, \
    generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from relrec.serve.bundle import BundleError, discard, last_good, record_last_good, stage_bundle
from relrec.serve.engine import ServedModel, ServeError, default_text_encoder
from relrec.serve.state_dir import clean_orphaned_staging, load_admin_state, lock_state_dir, \
    save_admin_state
from relrec.serve.limits import ConcurrencyLimits, RouteLabels
from relrec.data.media import images_folder, resolve_folder

log = logging.getLogger("relrec.serve")
STATIC = Path(__file__).parent / "static"
RUN_NAMES = ("main", "compare")


@dataclass
class Settings:
    run_dir: Path
    compare_dir: Path | None = None
    precomputed: Path | None = None      # default: RUN_DIR/export/related.parquet when present
    use_precomputed: bool = True         # False: always the index ("exact mode")
    image_root: Path | None = None       # default: the images folder of the run's manifest
    state_dir: Path | None = None        # default: RUN_DIR/serve_state
    admin_token: str | None = None
    blocklist: Path | None = None        # one item id per line
    watch: bool = False                  # reload when the bundle's files change
    watch_interval: float = 2.0
    max_k: int = 200
    max_batch: int = 100
    max_session_items: int = 50
    max_exclude: int = 1000
    max_body_bytes: int = 256 * 1024
    max_new_items: int = 100
    max_added_items: int = 10_000         # items added at run time, in all (they persist)
    max_precomputed_k: int = 1000         # rows per trigger of exported lists (n_items x K table)
    max_search_results: int = 50
    # -- limits against expensive or slow clients (None / 0: off); see docs/SERVING.md
    max_concurrent_requests: int | None = 64  # in flight at once (not /healthz, /readyz): 503
    max_content_requests: int | None = 2      # /v1/related/by-content (the encoder) at once: 429
    retry_after: int = 1                      # the Retry-After (seconds) of those 503 / 429
    header_timeout: float | None = 10.0       # seconds to send a whole request, else closed
    keep_alive_timeout: float = 5.0           # an idle kept-alive connection is closed after it
    max_connections: int | None = 1000        # open connections; past it new ones closed at once
    log_rate: int | None = 20                 # log records a second per logger and message
    log_report_interval: float = 60.0         # how often the dropped log records are reported
    index_kind: str | None = None
    text_encoder_factory: Callable[[str], object] = default_text_encoder
    allow_model_download: bool = False   # default encoder: local models only (never a hub name)
    extra: dict = field(default_factory=dict)


# -- request / response models ------------------------------------------------------------
ItemId = Annotated[str, Field(min_length=1, max_length=256)]
RunName = Literal["main", "compare"]


class Reasons(BaseModel):
    shared_topics: list[str]
    text_similarity: float | None
    co_engagement_count: int


class RelatedEntry(BaseModel):
    rank: int
    item_id: str
    title: str
    score: float
    topics: list[str]
    image_url: str | None
    reasons: Reasons


class RelatedList(BaseModel):
    item_id: str | None = None
    title: str | None = None
    run: str
    model_version: str
    mode: str
    k: int
    items: list[RelatedEntry]
    notes: list[str] = []


class BatchResponse(BaseModel):
    run: str
    model_version: str
    results: list[RelatedList]


class UpNextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemId] = Field(..., min_length=1, description="recent items, most recent last")
    k: int = Field(10, ge=1)
    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    diversify: bool = False
    exclude: list[ItemId] = []
    run: RunName = "main"


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[ItemId] = Field(..., min_length=1)
    k: int = Field(10, ge=1)
    alpha: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    diversify: bool = False
    exclude: list[ItemId] = []
    run: RunName = "main"
    mode: Literal["auto", "exact"] = "auto"


class ContentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(..., min_length=1, max_length=1000)
    description: str | None = Field(None, max_length=20000)
    tags: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100)
    image: str | None = Field(None, max_length=4096, description=(
        "refused (422): the server never reads a path a client names; use image_base64 or "
        "image_item_id"))
    image_base64: str | None = Field(None, min_length=1, description=(
        "the new item's image file, base64-encoded (a data: URL prefix is accepted); the "
        "request body limit applies"))
    image_item_id: ItemId | None = Field(None, description="use this catalogue item's image")
    k: int = Field(10, ge=1)
    exclude: list[ItemId] = []
    run: RunName = "main"


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: ItemId
    title: str = Field(..., min_length=1, max_length=1000)
    description: str | None = Field(None, max_length=20000)
    tags: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100)
    topics: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=100,
                                                                description="display only")
    available: bool = True


class NewItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[NewItem] = Field(..., min_length=1)
    run: RunName | Literal["all"] = "all"


class AvailabilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[ItemId] = Field(..., min_length=1)
    available: bool


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {status: {"model": ErrorResponse} for status in (404, 413, 422)}
ADMIN_ERRORS = {status: {"model": ErrorResponse} for status in (401, 403, 409, 413, 422)}


def _readable_image(image_module, stream) -> bool:
    """Whether Pillow recognises and verifies the bytes as an image (nothing is decoded)."""
    try:
        with image_module.open(stream) as picture:
            picture.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image"
        return False


def error_response(status: int, code: str, message: str, **extra) -> JSONResponse:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=status)


# -- middleware: body limit + metrics -----------------------------------------------------
class BodyLimitAndMetrics:
    """Pure ASGI: refuses bodies over the limit with 413 JSON; counts and times requests."""

    def __init__(self, app, state: "ServiceState"):
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


# -- state --------------------------------------------------------------------------------
class ServiceState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_dir = Path(settings.state_dir or Path(settings.run_dir) / "serve_state")
        self.models: dict[str, ServedModel] = {}
        self.sources = {"main": Path(settings.run_dir)}
        if settings.compare_dir is not None:
            self.sources["compare"] = Path(settings.compare_dir)
        self.reload_lock = threading.Lock()
        self.blocklist: frozenset[str] = frozenset()
        # one server per state folder, before anything in it is read or written
        if lock_state_dir(self.state_dir):
            clean_orphaned_staging(self.state_dir)
        # items added at run time and availability marks: persisted, re-applied at start
        self.added, self.unavailable = load_admin_state(self.state_dir)
        if self.added or self.unavailable:
            log.info("re-applying %d added items and %d unavailable marks from %s",
                     len(self.added), len(self.unavailable), self.state_dir)
        self.generation = 0
        self._banned_cache: dict = {}
        self.registry = CollectorRegistry()
        self.requests = Counter("relrec_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("relrec_request_seconds", "request latency in seconds",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.model_info = Gauge("relrec_model_info", "served model bundle (value 1)",
                                ["run", "version"], registry=self.registry)
        self.reloads = Counter("relrec_reloads_total", "bundle reloads", ["run", "outcome"],
                               registry=self.registry)
        self.ready = False
        self.labels: RouteLabels | None = None  # set by create_app: labels from its routes

    def observe(self, scope, status: int, seconds: float) -> None:
        # closed label sets: route templates and known methods, else "other" (see limits.py)
        label = self.labels.route(scope) if self.labels is not None else "other"
        self.requests.labels(RouteLabels.method(scope), label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    # -- bundles ---------------------------------------------------------------------------
    def _image_root(self, model_source: Path) -> Path | None:
        """The one folder image files are served from: ``--images``, else the images folder
        the run was prepared with (its manifest); none: no image file is served (http(s)
        URLs are still handed to the browser). Never guessed from the items' paths."""
        if self.settings.image_root is not None:
            return resolve_folder(self.settings.image_root)
        import json

        try:
            manifest = json.loads((model_source / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return images_folder(manifest)

    def _build(self, name: str, staged) -> ServedModel:
        factory = self.settings.text_encoder_factory
        if factory is default_text_encoder:  # local models only, unless allowed
            factory = functools.partial(default_text_encoder,
                                        allow_download=self.settings.allow_model_download)
        model = ServedModel(name, staged, image_root=self._image_root(staged.source),
                            text_encoder_factory=factory,
                            cache_dir=self.state_dir / "cache",
                            index_kind=self.settings.index_kind,
                            max_precomputed_k=self.settings.max_precomputed_k)
        records = [r for r in self.added if r.get("_run", "all") in ("all", name)
                   and r["item_id"] not in model.run.index_of_id]  # now in the catalogue
        if records:
            try:
                model.extras, _ = model.with_extras(records)  # one encoder batch
            except Exception as error:  # noqa: BLE001 - the bundle itself still serves
                log.error("%s: could not re-apply %d added items (%s); serving without them",
                          name, len(records), getattr(error, "message", error))
        return model

    def add_items(self, records: list[dict], names: list[str]) -> dict:
        """Add or replace run-time items on ``names`` (under the reload lock); persisted in
        the state folder before they are installed."""
        # kept by (run, item id): the same id added to two runs is two records, and adding it
        # to one run leaves the other's alone; adding it to "all" replaces every run's copy
        kept = {(r.get("_run", "all"), r["item_id"]): r for r in self.added}
        incoming = {(r.get("_run", "all"), r["item_id"]): r for r in records}
        everywhere = {item_id for run, item_id in incoming if run == "all"}
        kept = {key: r for key, r in kept.items() if key[1] not in everywhere or key in incoming}
        new = set(incoming) - set(kept)
        limit = self.settings.max_added_items
        if len(kept) + len(new) > limit:
            raise ServeError(409, "too_many_added_items",
                             f"at most {limit} items can be added at run time "
                             f"(max_added_items); {len(kept)} are, this request adds "
                             f"{len(new)} new: retrain with them in the catalogue")
        built = {}
        result = {}
        for name in names:
            extras, paths = self.models[name].with_extras(records)
            built[name] = extras
            result[name] = {"added": [r["item_id"] for r in records],
                            "content_path": sorted(set(paths)), "n_added_items": len(extras)}
        for key, record in incoming.items():  # the latest last: it wins on a reload
            kept.pop(key, None)
            kept[key] = record
        unavailable = set(self.unavailable)
        for record in records:
            (unavailable.discard if record["available"] else unavailable.add)(record["item_id"])
        self.persist(tuple(kept.values()), frozenset(unavailable))
        for name, extras in built.items():
            self.models[name].extras = extras  # one reference swap
        self.generation += 1
        return result

    def set_available(self, item_ids: list[str], available: bool) -> None:
        unavailable = set(self.unavailable)
        if available:
            unavailable -= set(item_ids)
        else:
            unavailable |= set(item_ids)
        self.persist(self.added, frozenset(unavailable))
        self.generation += 1

    def persist(self, added: tuple[dict, ...], unavailable: frozenset[str]) -> None:
        """Write the admin state atomically, then make it current; a failed write changes
        nothing (507 JSON)."""
        try:
            save_admin_state(self.state_dir, added, unavailable)
        except OSError as error:
            raise ServeError(507, "state_not_saved",
                             f"could not save the admin state in {self.state_dir}: "
                             f"{error.strerror or error}; nothing changed") from None
        self.added, self.unavailable = added, unavailable

    def _stage(self, name: str):
        precomputed = self.settings.precomputed if name == "main" else None
        return stage_bundle(self.sources[name], self.state_dir, precomputed)

    def _load(self, name: str, *, fallback: bool) -> ServedModel:
        source = self.sources[name]
        staged = None
        try:
            staged = self._stage(name)
            model = self._build(name, staged)
        except Exception as error:  # BundleError, corrupt weights, unreadable parquet ...
            if staged is not None:
                discard(staged)
            reason = error if isinstance(error, BundleError) else f"cannot load: {error}"
            log.error("refused bundle of %s (%s): %s", source, name, reason)
            if not fallback:
                raise BundleError(str(reason)) from error
            previous = last_good(self.state_dir, name, source)
            if previous is None:
                raise BundleError(f"{reason}; and no last good bundle to fall back to") from error
            log.warning("serving the last good bundle %s of %s (%s) from %s", previous.version,
                        source, name, previous.path)
            model = self._build(name, previous)
            model.fallback = True
            return model
        try:
            record_last_good(self.state_dir, name, staged)
        except OSError as exc:
            log.warning("could not record the last good bundle: %s", exc)
        model.fallback = False
        return model

    def load_all(self) -> None:
        for name in self.sources:
            self.install(name, self._load(name, fallback=True))
        self.load_blocklist()
        self.ready = True

    def install(self, name: str, model: ServedModel) -> None:
        old = self.models.get(name)
        self.models[name] = model  # one reference swap: requests hold the model they started with
        if old is not None and old.version != model.version:
            self.model_info.remove(name, old.version)
        self.model_info.labels(name, model.version).set(1)
        self.generation += 1
        log.info("serving %s bundle %s from %s%s", name, model.version, model.source,
                 " (precomputed lists)" if model.pre_indices is not None else "")

    def reload(self, names: list[str]) -> dict:
        with self.reload_lock:
            results = {}
            for name in names:
                old = self.models.get(name)
                try:
                    model = self._load(name, fallback=False)
                except BundleError as error:
                    self.reloads.labels(name, "refused").inc()
                    raise ServeError(409, "bundle_refused",
                                     f"{name}: {error}; still serving "
                                     f"{old.version if old else 'nothing'}") from None
                self.install(name, model)
                self.reloads.labels(name, "ok").inc()
                results[name] = {"previous": old.version if old else None,
                                 "version": model.version}
            self.load_blocklist()
            return results

    def load_blocklist(self) -> None:
        path = self.settings.blocklist
        if path is None:
            return
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            log.error("cannot read blocklist %s: %s; keeping %d ids", path, error,
                      len(self.blocklist))
            return
        self.blocklist = frozenset(line.strip() for line in lines
                                   if line.strip() and not line.startswith("#"))
        self.generation += 1

    def model(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise ServeError(404, "unknown_run", f"no {name!r} run is served"
                             + (" (start with --compare RUN_DIR)" if name == "compare" else ""))
        return model

    def static_banned(self, model: ServedModel) -> set[int]:
        key = (id(model), self.generation, len(model.extras))
        cached = self._banned_cache.get(model.name)
        if cached is None or cached[0] != key:
            banned = model.exclusion_indices(self.blocklist | self.unavailable)
            cached = (key, frozenset(banned))
            self._banned_cache[model.name] = cached
        return cached[1]

    def watch_loop(self, stop: threading.Event) -> None:
        def signature():
            out = []
            for name, source in self.sources.items():
                for relative in ("model/weights.safetensors", "model/tower_config.json",
                                 "model/bundle.json", "export/related.parquet"):
                    try:
                        stat = (source / relative).stat()
                        out.append((name, relative, stat.st_mtime_ns, stat.st_size))
                    except OSError:
                        out.append((name, relative, None, None))
            return out

        seen = signature()
        while not stop.wait(self.settings.watch_interval):
            now = signature()
            if now == seen:
                continue
            time.sleep(self.settings.watch_interval)  # let the writer finish
            if signature() != now:
                continue
            seen = signature()
            changed = sorted({entry[0] for entry, old in zip(now, seen) if entry != old} or
                             set(self.sources))
            try:
                log.info("watched bundle files changed; reloading")
                self.reload(list(self.sources))
            except ServeError as error:
                log.error("watched reload refused: %s", error.message)
            del changed


# -- app ----------------------------------------------------------------------------------
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


def create_app(settings: Settings, state: ServiceState | None = None) -> FastAPI:
    check_admin_token(settings.admin_token)
    state = state or ServiceState(settings)
    if not state.ready:
        state.load_all()
    s = settings
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app):
        thread = None
        if s.watch:
            thread = threading.Thread(target=state.watch_loop, args=(stop,), daemon=True,
                                      name="relrec-watch")
            thread.start()
        yield
        stop.set()

    app = FastAPI(title="relrec", version="1", lifespan=lifespan,
                  description="Related-item lists: by item, session (up next), batch and content; "
                              "web explorer at /.")
    app.state.service = state
    app.router.route_class = GuardedRoute  # /admin/*: the token before the body
    state.labels = RouteLabels(app.router)
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

    # -- helpers ---------------------------------------------------------------------------
    def check_k(k: int) -> None:
        if k > s.max_k:
            raise ServeError(422, "invalid_request", f"k: must be at most {s.max_k}")

    def split_ids(values: list[str]) -> list[str]:
        out = [part.strip() for value in values for part in value.split(",") if part.strip()]
        if len(out) > s.max_exclude:
            raise ServeError(422, "invalid_request",
                             f"exclude: at most {s.max_exclude} ids")
        return out

    def check_diversify(model: ServedModel, diversify: bool) -> None:
        if diversify and not (model.has_reranker and model.related.has_reranker):
            raise ServeError(422, "not_available",
                             "diversify: not available for this model (no re-ranker in the run)")

    def entries(model: ServedModel, ranked_indices, scores, triggers, trigger_text=None,
                trigger_topics=None) -> list[dict]:
        out = []
        for rank, (index, score) in enumerate(zip(ranked_indices, scores), start=1):
            entry = model.describe(index)
            entry.update(rank=rank, score=round(float(score), 6),
                         reasons=model.reasons(triggers, index, trigger_text, trigger_topics))
            out.append(entry)
        return out

    def related_list(model: ServedModel, trigger: int, k: int, exclude: list[str],
                     alpha: float | None, diversify: bool, exact: bool) -> dict:
        banned = set(state.static_banned(model)) | model.exclusion_indices(exclude)
        ranked = model.rank([trigger], k, banned=banned, alpha=alpha, diversify=diversify,
                            precomputed=s.use_precomputed and not exact)
        return {"item_id": model.item_id(trigger), "title": model.title(trigger),
                "run": model.name, "model_version": model.version, "mode": ranked.mode, "k": k,
                "items": entries(model, ranked.indices, ranked.scores, [trigger]),
                "notes": ranked.notes}

    # -- API -------------------------------------------------------------------------------
    @app.get("/v1/items/{item_id}/related", response_model=RelatedList, responses=ERRORS,
             tags=["related"])
    def related(item_id: Annotated[str, PathParam(min_length=1, max_length=256)],
                k: Annotated[int, Query(ge=1, le=s.max_k)] = 10,
                alpha: Annotated[float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = None,
                diversify: bool = False,
                exclude: Annotated[list[str], Query(description="ids; repeat or comma-separate")] = [],
                run: RunName = "main",
                mode: Literal["auto", "exact"] = "auto"):
        """Related items of one item."""
        model = state.model(run)
        check_diversify(model, diversify)
        trigger = model.require_indices([item_id])[0]
        return related_list(model, trigger, k, split_ids(exclude), alpha, diversify,
                            mode == "exact")

    @app.post("/v1/related", response_model=BatchResponse, responses=ERRORS, tags=["related"])
    def related_batch(request: BatchRequest):
        """Related items of a batch of items (one list each)."""
        if len(request.item_ids) > s.max_batch:
            raise ServeError(422, "invalid_request", f"item_ids: at most {s.max_batch} per batch")
        check_k(request.k)
        model = state.model(request.run)
        check_diversify(model, request.diversify)
        triggers = model.require_indices(request.item_ids)
        exclude = split_ids(request.exclude)
        return {"run": model.name, "model_version": model.version,
                "results": [related_list(model, t, request.k, exclude, request.alpha,
                                         request.diversify, request.mode == "exact")
                            for t in triggers]}

    @app.post("/v1/up-next", response_model=RelatedList, responses=ERRORS, tags=["related"])
    def up_next(request: UpNextRequest):
        """One list for a session's recent items (most recent last); seen items excluded."""
        if len(request.items) > s.max_session_items:
            raise ServeError(422, "invalid_request",
                             f"items: at most {s.max_session_items} session items")
        check_k(request.k)
        model = state.model(request.run)
        check_diversify(model, request.diversify)
        triggers = model.require_indices(request.items)
        banned = set(state.static_banned(model)) | model.exclusion_indices(
            split_ids(request.exclude))
        ranked = model.rank(triggers, request.k, banned=banned, alpha=request.alpha,
                            diversify=request.diversify, precomputed=s.use_precomputed)
        return {"run": model.name, "model_version": model.version, "mode": ranked.mode,
                "k": request.k, "items": entries(model, ranked.indices, ranked.scores, triggers),
                "notes": ranked.notes}

    @app.post("/v1/related/by-content", response_model=RelatedList, responses=ERRORS,
              tags=["related"])
    def by_content(request: ContentRequest):
        """Related items of a new item from its title / description / tags (/ image)."""
        check_k(request.k)
        model = state.model(request.run)
        notes = []
        image_note = check_image(model, request)
        if image_note:
            notes.append(image_note)
        banned = set(state.static_banned(model)) | model.exclusion_indices(
            split_ids(request.exclude))
        record = request.model_dump()
        indices, scores, path, text = model.rank_content(record, request.k, banned)
        notes.insert(0, f"content path: {path}" + (
            " (the model's tower with the cold ID row and the item's text)" if path == "tower"
            else " (nearest catalogue items by text; this model has no text input)"))
        return {"title": request.title, "run": model.name, "model_version": model.version,
                "mode": path, "k": request.k,
                "items": entries(model, indices, scores, [], trigger_text=text),
                "notes": notes}

    def check_image(model: ServedModel, request: ContentRequest) -> str | None:
        """The new item's image: uploaded bytes or a catalogue item's image — never a path on
        the server (refused with one message, whatever the path, so nothing can be probed)."""
        if request.image is not None:
            raise ServeError(422, "invalid_request",
                             "image: server-side paths are not accepted; send the image's "
                             "bytes as image_base64 or name a catalogue item with "
                             "image_item_id")
        if request.image_base64 is not None and request.image_item_id is not None:
            raise ServeError(422, "invalid_request",
                             "image_base64, image_item_id: give one of them, not both")
        if request.image_base64 is not None:
            import base64
            import binascii
            import io

            data = request.image_base64.strip()
            if data.startswith("data:") and ";base64," in data[:100]:
                data = data.split(";base64,", 1)[1]
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ServeError(422, "invalid_request",
                                 "image_base64: not valid base64") from None
            try:
                from PIL import Image
            except ImportError:  # pragma: no cover - Pillow comes with the visual extra
                Image = None
            if not raw or Image is not None and not _readable_image(Image, io.BytesIO(raw)):
                raise ServeError(422, "invalid_request",
                                 "image_base64: not a readable image file")
        elif request.image_item_id is not None:
            index = model.require_indices([request.image_item_id])[0]
            if model.resolve_image(index) is None:
                raise ServeError(422, "invalid_request",
                                 f"image_item_id: item {request.image_item_id!r} has no image "
                                 "file in the server's image folder")
        else:
            return None
        return ("image accepted but not used: this model has no visual input"
                if not model.tower.config.visual_dim else
                "image accepted but not used: no visual encoder is wired into the service yet")

    @app.get("/v1/search", tags=["explorer"])
    def search(q: Annotated[str, Query(min_length=1, max_length=200)],
               limit: Annotated[int, Query(ge=1, le=s.max_search_results)] = 10,
               run: RunName = "main"):
        """Items whose title contains ``q`` (case-insensitive), popular first."""
        model = state.model(run)
        return {"run": model.name, "model_version": model.version,
                "items": model.search_titles(q, limit)}

    @app.get("/v1/items/{item_id}", tags=["explorer"], responses=ERRORS)
    def item(item_id: Annotated[str, PathParam(min_length=1, max_length=256)],
             run: RunName = "main"):
        model = state.model(run)
        index = model.require_indices([item_id])[0]
        return dict(model.describe(index), model_version=model.version)

    @app.get("/v1/runs", tags=["explorer"])
    def runs():
        """The served runs (main and optional compare) with their versions and heads."""
        return {"runs": [model.info() for model in state.models.values()],
                "limits": {"max_k": s.max_k, "max_batch": s.max_batch,
                           "max_session_items": s.max_session_items,
                           "max_body_bytes": s.max_body_bytes}}

    @app.get("/images/{run}/{item_id}", tags=["explorer"], responses={404: {"model": ErrorResponse}},
             response_class=FileResponse)
    def image(run: RunName, item_id: Annotated[str, PathParam(min_length=1, max_length=256)]):
        """An item's poster — only a file inside the run's image folder (symlinks resolved
        and checked on every request). An item whose image is an http(s) URL answers 404:
        the server never fetches (nor redirects to) it; its ``image_url`` is that URL."""
        model = state.model(run)
        index = model.require_indices([item_id])[0]
        path = model.resolve_image(index)
        if path is None:
            if model.image_link(index):
                raise ServeError(404, "external_image",
                                 f"item {item_id!r} has an external image: use its image_url")
            raise ServeError(404, "no_image", f"item {item_id!r} has no image")
        return FileResponse(path)

    # -- health / metrics ------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz():
        if not state.ready or "main" not in state.models:
            return error_response(503, "not_ready", "no model loaded yet")
        return {"status": "ready",
                "runs": {name: {"version": m.version, "fallback": getattr(m, "fallback", False)}
                         for name, m in state.models.items()}}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics():
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    # -- admin -----------------------------------------------------------------------------
    def authorize(authorization: str | None, token_header: str | None) -> None:
        authorize_admin(s, authorization, token_header)  # (GuardedRoute checked it already)

    AuthHeader = Annotated[str | None, Header(max_length=1024)]

    @app.post("/admin/reload", tags=["admin"], responses=ADMIN_ERRORS)
    def admin_reload(run: RunName | Literal["all"] = "all",
                     authorization: AuthHeader = None, x_admin_token: AuthHeader = None):
        """Reload bundles from disk; a refused bundle leaves the old one serving (409)."""
        authorize(authorization, x_admin_token)
        names = list(state.sources) if run == "all" else [run]
        if any(name not in state.sources for name in names):
            raise ServeError(404, "unknown_run", f"no {run!r} run is served")
        return {"reloaded": state.reload(names)}

    @app.post("/admin/items", tags=["admin"], responses=ADMIN_ERRORS)
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

    @app.post("/admin/availability", tags=["admin"], responses=ADMIN_ERRORS)
    def admin_availability(request: AvailabilityRequest, authorization: AuthHeader = None,
                           x_admin_token: AuthHeader = None):
        """Mark items (un)available: unavailable items are never recommended."""
        authorize(authorization, x_admin_token)
        if len(request.item_ids) > s.max_exclude:
            raise ServeError(422, "invalid_request", f"item_ids: at most {s.max_exclude}")
        with state.reload_lock:
            state.set_available(request.item_ids, request.available)
        return {"unavailable": len(state.unavailable)}

    # -- explorer --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
