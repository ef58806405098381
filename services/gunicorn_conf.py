"""gunicorn's settings for the API (`-c python:services.gunicorn_conf`); the command line
(services/cli/processes.py) gives the bind address, processes and timeouts. Outside the
services.api package on purpose: importing that package imports prometheus_client."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from gunicorn import glogging

# Set before anything imports prometheus_client, which reads it once: each gunicorn process
# then counts its requests in files here, and /metrics sums them whichever process answers.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="calib-metrics-"))


class AppLogsEachRequest(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's logger without its access line: the app logs each request once, as JSON with its
    request id (services/api/telemetry.py). With `logconfig_dict` set, gunicorn wrote an access
    line of its own for every request as well, whatever `accesslog` said: two lines a request, and
    about 7 % of the API's CPU under load (py-spy, benchmarks.load)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


logger_class = AppLogsEachRequest
# gunicorn's own lines (starts, stops, errors) as JSON too.
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
