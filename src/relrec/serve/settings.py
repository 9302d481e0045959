"""Service settings: what ``relrec serve`` and :func:`relrec.serve.create_app` are given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relrec.serve.runtime_items import default_text_encoder


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
    # index-path requests answered by one search (1: off); <= 19 keeps FAISS's flat index on
    # the per-query scan a lone request gets (from 20 queries it uses BLAS: other last bits)
    search_batch: int = 16
    # the loaded bundles' objects frozen out of the garbage collector after each (re)load:
    # a full collection of them stalled every request for ~130 ms (the p99 under load).
    # ``relrec serve`` turns it on; off for embedded apps (tests build many)
    freeze_gc: bool = False
    # FastAPI's native OpenTelemetry (traces, metrics, logs to the global providers): off, its
    # per-request check of the providers cost ~19 us a request; /metrics is Prometheus
    opentelemetry: bool = False
    # -- limits against expensive or slow clients (None / 0: off); see docs/SERVING.md
    max_concurrent_requests: int | None = 64  # in flight at once (not /healthz, /readyz): 503
    max_content_requests: int | None = 2      # /v1/related/by-content (the encoder) at once: 429
    retry_after: int = 1                      # the Retry-After (seconds) of those 503 / 429
    header_timeout: float | None = 10.0       # seconds to send a whole request, else closed
    keep_alive_timeout: float = 5.0           # an idle kept-alive connection is closed after it
    http: str = "httptools"                   # uvicorn's HTTP parser: httptools (faster) or h11
    max_connections: int | None = 1000        # open connections; past it new ones closed at once
    log_rate: int | None = 20                 # log records a second per logger and message
    log_report_interval: float = 60.0         # how often the dropped log records are reported
    index_kind: str | None = None
    text_encoder_factory: Callable[[str], object] = default_text_encoder
    allow_model_download: bool = False   # default encoder: local models only (never a hub name)
    extra: dict = field(default_factory=dict)


