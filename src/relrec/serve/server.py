"""Run the service with uvicorn (what ``relrec serve`` calls)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from relrec.serve.app import Settings, check_admin_token, create_app
from relrec.serve.limits import HTTP_PARSERS, LogRateLimit, guarded_protocol

log = logging.getLogger("relrec.serve")


def _descriptor_room(wanted: int | None) -> int | None:
    """``wanted`` open connections, lowered to leave file descriptors for the process itself."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return wanted
    room = max(16, soft - 128)
    if wanted is None or wanted > room:
        log.info("max connections %s lowered to %d (open-file limit %d)", wanted, room, soft)
        return room
    return wanted


def build_server(app, settings, *, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "info", log_config="default", **uvicorn_options):
    """The uvicorn server ``relrec serve`` runs: its HTTP parser (``settings.http``: httptools,
    else h11) with the header timeout and connection cap of ``settings`` (``Settings``), its
    keep-alive timeout, no access log."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    protocol = guarded_protocol(settings.header_timeout,
                                _descriptor_room(settings.max_connections), settings.http)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            http=protocol, timeout_keep_alive=settings.keep_alive_timeout,
                            timeout_graceful_shutdown=5,
                            log_config=LOGGING_CONFIG if log_config == "default" else log_config,
                            **uvicorn_options)
    return uvicorn.Server(config)


def install_log_rate_limit(limiter, loggers=("", "uvicorn", "uvicorn.error", "uvicorn.access")):
    """Put ``limiter`` (a :class:`~relrec.serve.limits.LogRateLimit`) on the handlers of
    ``loggers`` — root's and uvicorn's by default."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if limiter not in handler.filters:
                handler.addFilter(limiter)


def report_dropped_logs(limiter, every: float) -> threading.Event:
    """A daemon thread reports the limiter's drops every ``every`` seconds; set the event to stop."""
    stop = threading.Event()

    def loop():
        while not stop.wait(every):
            limiter.report()

    threading.Thread(target=loop, daemon=True, name="relrec-log-report").start()
    return stop


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); ``0.0.0.0`` / ``::`` are not."""
    import ipaddress

    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin_exposure(host: str, admin_token: str | None, *, ssl_keyfile=None,
                         ssl_certfile=None, insecure_admin: bool = False) -> None:
    """Refuse to start admin endpoints (an admin token) on a non-loopback host without TLS
    (``--ssl-keyfile`` + ``--ssl-certfile``) unless ``--insecure-admin`` says so explicitly:
    the bearer token would cross the network in clear."""
    if (ssl_keyfile is None) != (ssl_certfile is None):
        raise ValueError("TLS needs both --ssl-keyfile and --ssl-certfile")
    for option, path in (("--ssl-keyfile", ssl_keyfile), ("--ssl-certfile", ssl_certfile)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{option} {path}: file not found")
    if not admin_token or is_loopback(host) or ssl_certfile is not None:
        return
    if insecure_admin:
        log.warning("admin endpoints on %s without TLS (--insecure-admin): the admin token "
                    "crosses the network in clear", host)
        return
    raise ValueError(f"admin endpoints on the non-loopback host {host} need TLS "
                     "(--ssl-keyfile and --ssl-certfile), or --insecure-admin to accept the "
                     "token in clear; or serve on 127.0.0.1, or without an admin token")


def run_server(run_dir: Path, *, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info", ssl_keyfile: Path | None = None,
               ssl_certfile: Path | None = None, insecure_admin: bool = False,
               **settings) -> None:
    check_admin_token(settings.get("admin_token"))
    if settings.get("http", HTTP_PARSERS[0]) not in HTTP_PARSERS:  # before the model loads
        raise ValueError(f"--http {settings['http']!r}: one of {', '.join(HTTP_PARSERS)}")
    check_admin_exposure(host, settings.get("admin_token"), ssl_keyfile=ssl_keyfile,
                         ssl_certfile=ssl_certfile, insecure_admin=insecure_admin)
    tls = {} if ssl_certfile is None else {"ssl_keyfile": str(ssl_keyfile),
                                           "ssl_certfile": str(ssl_certfile)}

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(run_dir=Path(run_dir), **{"freeze_gc": True, **settings})
    limiter = LogRateLimit(settings.log_rate, settings.log_report_interval) \
        if settings.log_rate else None
    if limiter is not None:
        install_log_rate_limit(limiter, loggers=("",))  # the loading logs too
    app = create_app(settings)
    server = build_server(app, settings, host=host, port=port, log_level=log_level, **tls)
    if limiter is None:
        return server.run()
    install_log_rate_limit(limiter)  # uvicorn's handlers exist once its config is built
    stop = report_dropped_logs(limiter, settings.log_report_interval)
    shutdown = server.shutdown

    async def shutdown_and_report(*args, **kwargs):
        # here, not after run(): uvicorn re-raises SIGTERM once run() unwinds
        await shutdown(*args, **kwargs)
        stop.set()
        limiter.report(force=True)

    server.shutdown = shutdown_and_report
    server.run()
