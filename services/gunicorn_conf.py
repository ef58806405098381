"""gunicorn's settings for the API (`-c python:services.gunicorn_conf`); the command line
(services/cli/processes.py) gives the bind address, processes and timeouts. Outside the
services.api package on purpose: importing that package imports prometheus_client."""

from __future__ import annotations

import os
import tempfile
from typing import Any

# Set before anything imports prometheus_client, which reads it once: each gunicorn process
# then counts its requests in files here, and /metrics sums them whichever process answers.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="calib-metrics-"))

# gunicorn's own lines as JSON too; each request is logged by the app (with its request id).
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "shared.runtime.logs.JsonFormatter", "service": "api"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    # gunicorn merges this over its defaults key by key: every key that names a handler is given.
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
