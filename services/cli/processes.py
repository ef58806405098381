"""The command lines of the service's processes: one definition for `calib up`, `make stack`
and docker-compose.yml (a test checks that the compose file says the same)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared.runtime.queue import CONTROL_QUEUE, DELIVERY_QUEUE, QUEUE

MIGRATE = ["calib", "db", "upgrade"]


def api_command(bind: str = "0.0.0.0:8000", workers: int = 2, embedded: bool = False) -> list[str]:
    # Keep-alive well above gunicorn's 2 s default: a client that pauses about 2 s between
    # requests otherwise races the server closing its idle connection and gets a
    # "server disconnected" error on a POST it cannot safely resend.
    # On PostgreSQL, gevent: a request waiting for a fit (`?wait=`) is a greenlet, and hundreds
    # of them cost little. Not on SQLite: a write waiting for SQLite's lock sleeps inside the C
    # library, which would stop every request of the process; there, threads, and no more
    # connections than threads: a process whose threads all hold waiting requests then stops
    # accepting, and the kernel hands new connections to a process with a thread free. With
    # more, gunicorn accepts past its threads and queues the request behind the waits (a POST
    # took 57 s behind 24 waits that landed unevenly on two processes of 16 threads). The cost
    # is keep-alive: every answer closes its connection (gunicorn keeps none alive with no more
    # connections than threads, and logs a warning at start saying so). `--keep-alive` still
    # matters: gunicorn (27) gives a new connection whose request has not begun within 5 s back to
    # its poller for that long, and closes it after. At 0, a client slow to send its request head
    # (a loaded machine, a slow network) was cut without an answer: 1 of 8 233 MB uploads at once
    # (benchmarks/bodies.py).
    if embedded:
        concurrency = ["--threads", "16", "--worker-connections", "16", "--keep-alive", "30"]
    else:
        worker = "services.gunicorn_worker.QuickStopGeventWorker"  # gevent; stops without waiting on idle clients
        concurrency = ["--worker-class", worker, "--worker-connections", "1000", "--keep-alive", "65"]
    return [
        "gunicorn",
        "services.api.wsgi:app",
        "--config",
        "python:services.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        str(workers),
        *concurrency,
        "--timeout",
        "120",
    ]


def worker_command(concurrency: int = 1, beat: bool = True) -> list[str]:
    # --beat runs the reconciler's schedule inside every worker, in memory (no
    # schedule file), so killing any one worker leaves the others reconciling;
    # duplicate rounds are harmless. Reconcile tasks have a queue of their own so
    # they never wait behind a backlog of chunks.
    return _celery_worker(concurrency, f"{QUEUE},{CONTROL_QUEUE}") + (["--beat"] if beat else [])


def delivery_worker_command() -> list[str]:
    # Webhooks on a queue and in processes of their own: a receiver that answers slowly holds a
    # delivery thread, never a chunk (services/worker/webhooks.py runs several attempts at once,
    # each within a deadline). No beat: the fit workers' reconciler publishes due deliveries.
    return _celery_worker(1, DELIVERY_QUEUE) + ["--hostname", "deliveries@%h"]


def _celery_worker(concurrency: int, queues: str) -> list[str]:
    # --quiet: no startup banner, which Celery prints past the logging (our lines are JSON).
    return [
        "celery",
        "-A",
        "services.worker.celery_app",
        "--quiet",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "-Q",
        queues,
    ]


def resolve(command: list[str]) -> list[str]:
    """Run the program from this interpreter's environment, whatever PATH says."""
    local = Path(sys.executable).parent / command[0]
    if local.exists():
        return [str(local), *command[1:]]
    found = shutil.which(command[0])
    return [found or command[0], *command[1:]]


def environment(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env


# The production topology, as `calib stack` runs it locally and docker-compose.yml
# runs it in containers (tests/test_topology.py holds the two together).
STACK_SERVICES = {
    "migrate": MIGRATE,
    "api": api_command(),
    "worker": worker_command(),
    "deliveries": delivery_worker_command(),
}
STACK_WORKERS = 2
STACK_ENV = (
    "CALIB_DATABASE_URL",
    "CALIB_DIRECT_DATABASE_URL",
    "CALIB_BROKER_URL",
    "CALIB_DEVICE",
    "CALIB_TASK_EVENTS",
    "CALIB_WEBHOOK_ALLOWED_HOSTS",
    "CALIB_SECRETS_KEY",
)
LOCAL_DEFAULTS = {
    "CALIB_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/calib",
    "CALIB_DIRECT_DATABASE_URL": "",
    "CALIB_BROKER_URL": "redis://127.0.0.1:6379/0",
    "CALIB_DEVICE": "auto",
    "CALIB_TASK_EVENTS": "true",
    "CALIB_WEBHOOK_ALLOWED_HOSTS": "",
    "CALIB_SECRETS_KEY": "",
}


def supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until Ctrl-C, SIGTERM or one child exiting; then stop them all and exit."""

    def stop(*_: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    print("a process of the service exited; stopping", file=sys.stderr)
    stop()
