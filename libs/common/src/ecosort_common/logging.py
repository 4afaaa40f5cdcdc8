"""JSON logs with the request id bound to every line (structlog)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file named: each logger takes sys.stdout as it is when made, not a stream that a
        # test's output capture closed since (the same stream in a service's process).
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (Celery, uvicorn, Alembic) through the same processors and
    # renderer: one JSON object per line whoever wrote it, with the request id where bound.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    # uvicorn has given its own loggers plain-text handlers (stderr; stdout for an access log,
    # where one is on), and kept their lines from the root's, by the time it imports the app
    # that calls this: send them to the root's too.
    for name in ("uvicorn", "uvicorn.access"):
        uvicorn = logging.getLogger(name)
        if name == "uvicorn.access" and not uvicorn.handlers and not uvicorn.propagate:
            # Its access log is off (--no-access-log: the service's own JSON line is the access
            # log). uvicorn writes one while the logger has a handler up its tree, the root's
            # included: a propagating logger would log every request twice.
            continue
        uvicorn.handlers.clear()
        uvicorn.propagate = True
        uvicorn.setLevel(logging.NOTSET)
    # httpx logs every outbound request's full URL at INFO (httpcore its traffic at DEBUG), and
    # some providers take their API key in the query string (Roboflow).
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
