"""Liveness and readiness for orchestrators and load balancers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response

from services.api import telemetry
from services.api.contract import operation
from services.api.extensions import current_services
from services.api.problems import Problem

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation("healthz", "200 while the process serves", {"200": {"description": "Alive"}})
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_answers() -> str | None:
    try:
        with current_services().db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}"
    return None


def _broker_answers() -> str | None:
    failure = current_services().broker_failure()
    return f"broker: {failure}" if failure else None


@bp.get("/metrics")
@operation(
    "metrics",
    "Prometheus text: requests by route and status, fits by status, queue "
    "depth, the workers' chunk and fit durations (docs/operators.md)",
    {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics() -> Response:
    """Prometheus text; open like the probes (it holds counts, no tenant's data)."""
    return telemetry.metrics()


@bp.get("/readyz")
@operation(
    "readyz", "200 when the database and the broker answer", {"200": {"description": "Ready"}}, problems=("503",)
)
def readyz() -> dict[str, Any]:
    failures = [f for f in (_database_answers(), _broker_answers()) if f]
    if failures:
        raise Problem(503, "not ready: " + "; ".join(failures), slug="dependency-unavailable", retry_after=5)
    return {"status": "ready", "database": "ok", "broker": "ok"}
