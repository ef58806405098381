"""The Celery app as both sides see it: the API publishes by task name, the worker registers the tasks.

The broker only wakes workers up; the database is the truth (a fit's status,
attempt and lease), so no result backend is used and a lost or doubled message
costs at most a short delay, never a fit.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from celery import Celery

from shared.runtime.settings import Settings

log = logging.getLogger("calib.queue")

RUN_CHUNK = "calib.run_chunk"
RECONCILE = "calib.reconcile"
DELIVER_WEBHOOKS = "calib.deliver_webhooks"
QUEUE = "calib"
CONTROL_QUEUE = "calib-control"
# Webhook deliveries: consumed only by `calib worker --deliveries`, never by the fit workers.
DELIVERY_QUEUE = "calib-deliveries"


def make_celery(settings: Settings) -> Celery:
    if settings.embedded:
        settings.ensure_data_dir()
    broker = settings.broker
    transport_options: dict[str, Any] = {}
    scheme, _, rest = broker.partition("+")
    sqla = scheme in ("sqla", "sqlalchemy") and "://" in rest
    app = Celery("calib", broker=rest if sqla else broker, set_as_current=False)
    if sqla:
        # The same SQLAlchemy transport, polling faster (see shared/runtime/sqla_broker.py).
        app.conf.broker_transport = "shared.runtime.sqla_broker:Transport"
    if settings.broker.startswith("redis"):
        vt = settings.visibility_timeout_seconds
        transport_options["visibility_timeout"] = vt
        # Sweep for messages past their visibility timeout every vt/4 (at most 10 s),
        # rather than kombu's default of about every 100 s.
        transport_options["unacked_restore_interval"] = max(1, min(10, vt // 4))
        transport_options["unacked_restore_throttle"] = 1
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A task is acknowledged only after it ran, and handed back if its
        # worker process dies; safe because every claim is conditional.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # After a pool process dies, Celery waits this long for a result it might have sent
        # before handing the message back; we keep no results, and at the default 10 s a
        # single-process worker takes no new work meanwhile.
        worker_lost_wait=1.0,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        # Reconciling and webhook deliveries never wait behind a backlog of chunks.
        task_routes={RECONCILE: {"queue": CONTROL_QUEUE}, DELIVER_WEBHOOKS: {"queue": DELIVERY_QUEUE}},
        # Beat keeps its schedule in memory: every worker runs one, and a shared
        # schedule file in the working directory would be contended for.
        beat_scheduler="celery.beat:Scheduler",
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,
    )
    return app


def queue_depth(app: Celery) -> int | None:
    """Messages waiting in the chunk queue (any kombu transport), or None if the broker does not say."""
    try:
        # A connection of the app's pool, whose channel stays open between reads: a new connection
        # was a new broker client, its connect and its PING, each time the API or the reconciler asked.
        # The publishers share the pool: with every connection out, the depth is unknown after 2 s.
        with app.pool.acquire(block=True, timeout=2) as conn:
            # The stubs type the pool's connection as a Producer, and its channel as StdChannel,
            # which leaves out queue_declare.
            channel = cast(Any, conn).default_channel
            return int(channel.queue_declare(queue=QUEUE, passive=True).message_count)
    except Exception as exc:
        # kombu's virtual transports (Redis) answer NOT_FOUND for a queue that holds nothing
        # and that no consumer has bound yet: no messages.
        if "NOT_FOUND" in str(exc):
            return 0
        log.warning("queue depth unknown: %s", exc)
        return None
