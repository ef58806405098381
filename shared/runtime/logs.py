"""JSON logs, one object per line, for every process of the service.

Each line carries the request id (API) or the chunk id (worker) and the fit id it is about,
from context variables set where a request or a chunk starts, so an operator can follow one
fit from its submission through the worker that ran it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
fit_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("fit_id", default=None)
chunk_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("chunk_id", default=None)
CONTEXT = {"request_id": request_id, "fit_id": fit_id, "chunk_id": chunk_id}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str = "calib", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in CONTEXT.items():
            value = getattr(record, name, None) or var.get()
            if value:
                line[name] = value
        for name in ("method", "path", "status", "duration_ms"):
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(service: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as JSON lines (replacing any handler the root had)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings as log lines too


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Set context fields (fit_id, chunk_id, request_id) for the lines logged inside."""
    tokens = [(CONTEXT[name], CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
