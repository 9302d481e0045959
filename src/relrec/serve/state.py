"""The service's state: the served bundles (load, hot reload, watch), the blocklist, items
added at run time, availability marks, and the metrics registry."""

from __future__ import annotations

import functools
import gc
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relrec.data.media import images_folder, resolve_folder
from relrec.serve.bundle import (
    BundleError,
    discard,
    last_good,
    record_last_good,
    stage_bundle,
)
from relrec.serve.engine import ServedModel
from relrec.serve.errors import ServeError
from relrec.serve.limits import RouteLabels
from relrec.serve.runtime_items import default_text_encoder
from relrec.serve.settings import Settings
from relrec.serve.state_dir import (
    clean_orphaned_staging,
    load_admin_state,
    lock_state_dir,
    save_admin_state,
)

log = logging.getLogger("relrec.serve")


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
        self._metric_children: dict = {}  # (method, route, status) -> metric children
        self.search_batcher = None  # set by the related routes (serve/batching.py)
        self.stored_answer = None  # set by the related routes (middleware.StoredAnswers)
        for name, what, read in (
                ("relrec_search_batches", "batched index searches answered",
                 lambda: self.search_batcher.batches if self.search_batcher else 0),
                ("relrec_search_batched_requests", "requests answered by those searches",
                 lambda: self.search_batcher.requests if self.search_batcher else 0)):
            Gauge(name, what, registry=self.registry).set_function(read)

    def observe(self, scope, status: int, seconds: float) -> None:
        # closed label sets: route templates and known methods, else "other" (see limits.py)
        label = self.labels.route(scope) if self.labels is not None else "other"
        key = (RouteLabels.method(scope), label, status)
        children = self._metric_children.get(key)
        if children is None:  # label sets are closed: this dict stays small
            children = self._metric_children[key] = (
                self.requests.labels(key[0], label, str(status)), self.latency.labels(label))
        children[0].inc()
        children[1].observe(seconds)

    # -- bundles ---------------------------------------------------------------------------
    def _image_root(self, model_source: Path) -> Path | None:
        """The one folder image files are served from: ``--images``, else the images folder
        the run was prepared with (its manifest); none: no image file is served (http(s)
        URLs are still handed to the browser). Never guessed from the items' paths."""
        if self.settings.image_root is not None:
            return resolve_folder(self.settings.image_root)
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
        self.settle_garbage()

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
            old = model = None  # the replaced bundle must not survive into the freeze below
            self.load_blocklist()
            self.settle_garbage()
            return results

    def settle_garbage(self) -> None:
        """With ``freeze_gc``: collect once, then freeze what survives (the models, the
        libraries), so the collector never walks them again while serving; the previous
        freeze is undone first, so a replaced bundle is still freed."""
        if self.settings.freeze_gc:
            gc.unfreeze()
            gc.collect()
            gc.freeze()

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

    def static_banned(self, model: ServedModel) -> np.ndarray:
        """Sorted item indices never recommended now: the blocklist and unavailable items
        (cached per model, admin generation and run-time item count)."""
        key = (id(model), self.generation, len(model.extras))
        cached = self._banned_cache.get(model.name)
        if cached is None or cached[0] != key:
            banned = model.catalogue.exclusion_indices(self.blocklist | self.unavailable)
            banned.setflags(write=False)
            cached = (key, banned)
            self._banned_cache[model.name] = cached
        return cached[1]

    def watch_loop(self, stop: threading.Event) -> None:
        def signature():
            out = []
            for name, source in self.sources.items():
                for relative in ("model/weights.safetensors", "model/tower_config.json",
                                 "model/bundle.json", "export/related.parquet",
                                 "rerank/weights.safetensors"):
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
