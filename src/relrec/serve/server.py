"""Run the service with uvicorn (what ``relrec serve`` calls)."""

from __future__ import annotations

import logging
from pathlib import Path


def run_server(run_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info", **settings) -> None:
    import uvicorn

    from relrec.serve.app import Settings, create_app

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(Settings(run_dir=Path(run_dir), **settings))
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5)
