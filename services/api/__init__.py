"""The Flask API. `create_app` reads as the table of contents of the service."""

from __future__ import annotations

from typing import Any

from flask import Flask

from migrations.apply import require_head
from services.api import batches, fits, instruments, openapi, ops, telemetry, ui, usage, webhooks
from services.api.auth import authenticate
from services.api.extensions import Services
from services.api.finite_json import FiniteJSONProvider
from services.api.limits import Budgets
from services.api.memory import ParseBudget
from services.api.problems import register_error_handlers
from services.api.requests import refuse_control_characters
from services.api.waiting import Waits
from shared.runtime.queue import make_celery
from shared.runtime.settings import Settings, get_settings
from shared.runtime.wakeups import PendingMark
from shared.store.db import Database


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    settings = settings or get_settings()
    require_head(settings, "API")
    app = Flask(__name__)
    app.json = FiniteJSONProvider(app)
    # Bodies over the limit are refused with 413 before they are parsed.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if test_config:
        app.config.update(test_config)
    register_extensions(app, settings)
    register_blueprints(app)
    register_error_handlers(app)
    return app


def register_extensions(app: Flask, settings: Settings) -> None:
    celery = make_celery(settings)
    # A submission waits at most about a second for a broker that is down;
    # the fit is already committed and the reconciler publishes it later.
    celery.conf.task_publish_retry_policy = {
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
    db = Database.from_settings(settings)
    app.extensions["calib"] = Services(
        settings,
        db,
        celery,
        Waits(db, *settings.wait_slots(), broker=settings.broker),
        ParseBudget(settings.parse_memory_bytes),
        PendingMark(settings.broker),
    )
    app.extensions["calib-budgets"] = Budgets.from_settings(settings)


def register_blueprints(app: Flask) -> None:
    telemetry.install(app)  # first: every request gets its id and its log line, a refused one too
    app.before_request(refuse_control_characters)
    app.before_request(authenticate)
    app.register_blueprint(fits.bp)
    app.register_blueprint(fits.preflight_bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(instruments.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(ui.bp)
