"""What operators see of the API: a request id and a JSON log line per request, and /metrics.

/metrics (Prometheus text) has
- calib_http_requests_total{method,route,status} and calib_http_request_duration_seconds{method,route},
  counted in each gunicorn process and summed at scrape time (prometheus_client's multiprocess
  mode; services/gunicorn_conf.py sets its directory);
- calib_waiting_requests, the `?wait=` requests open now (services/api/waiting.py), summed the same way;
- calib_fits{status} and calib_queue_depth, read from the database and the broker at scrape time;
- the workers' counters (chunk and fit durations, fits finished by status, epochs), which the
  workers add to the database after each chunk (shared/store/worker_metrics.py): Celery workers are
  separate processes, often on other machines, and the database is what they all share.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from services.api.extensions import Services, current_services
from shared.runtime import logs
from shared.store import worker_metrics
from shared.store.models import STATUSES

log = logging.getLogger("calib.api")

REQUESTS = Counter("calib_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "calib_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A client's X-Request-ID is kept if it looks like an id; anything else gets a new one.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def install(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_reset)


def _start() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex
    g.started = time.perf_counter()
    g.log_context = [logs.request_id.set(g.request_id), logs.fit_id.set((request.view_args or {}).get("fit_id"))]


def _finish(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule else "unmatched"
    # Label values only from known sets: a client's invented method must not grow the series.
    method = request.method if request.method in _METHODS else "OTHER"
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    REQUESTS.labels(method, route, str(response.status_code)).inc()
    LATENCY.labels(method, route).observe(seconds)
    response.headers["X-Request-ID"] = g.get("request_id", "")
    if route != "/metrics":
        log.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
    return response


def _reset(_: BaseException | None) -> None:
    for token in reversed(g.pop("log_context", [])):
        token.var.reset(token)


def bind_fit(fit_id: str) -> None:
    """For the rest of this request's lines: the fit it created."""
    logs.fit_id.set(fit_id)


class ServiceState:
    """Collected at scrape time, by the process that answers the scrape."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        counts, depth = self.svc.queue_snapshot()
        fits = GaugeMetricFamily("calib_fits", "Fits by status", labels=["status"])
        for status in STATUSES:
            fits.add_metric([status], counts.get(status, 0))
        yield fits
        if depth is not None:
            yield GaugeMetricFamily("calib_queue_depth", "Chunk messages waiting in the broker", value=depth)
        yield from _worker_families(worker_metrics.read(self.svc.db))


def _worker_families(rows: list[tuple[str, str, float]]) -> Iterator[Metric]:
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for name, label, value in rows:
        values[name][label] = value
    for name, doc in worker_metrics.HISTOGRAMS.items():
        buckets = values.get(name + "_bucket", {})
        family = HistogramMetricFamily(name, doc)
        family.add_metric(
            [],
            [
                (label.removeprefix("le="), buckets.get(label, 0.0))
                for label in map(worker_metrics.le_label, worker_metrics.BUCKETS)
            ],
            sum_value=values.get(name + "_sum", {}).get("", 0.0),
        )
        yield family
    for name, doc in worker_metrics.COUNTERS.items():
        labelled = [label for label in values.get(name, {}) if label]
        counter = CounterMetricFamily(
            name.removesuffix("_total"), doc, labels=[labelled[0].split("=")[0]] if labelled else None
        )
        for label, value in values.get(name, {}).items():
            counter.add_metric([label.split("=", 1)[1]] if label else [], value)
        yield counter


def metrics() -> Response:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        requests_registry = CollectorRegistry()
        # prometheus_client leaves the collector's constructor unannotated.
        multiprocess.MultiProcessCollector(requests_registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        requests_registry = REGISTRY
    state = CollectorRegistry()
    state.register(ServiceState(current_services()))
    return Response(generate_latest(requests_registry) + generate_latest(state), mimetype=CONTENT_TYPE_LATEST)
