"""Typed settings read from CALIB_* environment variables, one object for every process."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    # One fixed place per user, so `calib up` and `calib demo` agree whatever the cwd.
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "calib"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALIB_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Empty means the embedded default: SQLite files under data_dir.
    database_url: str = ""
    # Set when database_url is a connection pooler in transaction mode (PgBouncer, `calib stack
    # --pooler`): the database itself, for what needs a session of its own (LISTEN, migrations).
    # Through the pooler no statement is prepared on the server (the next transaction may run on
    # another server connection).
    direct_database_url: str = ""
    broker_url: str = ""
    # Where fits' per-epoch losses are kept, by scheme (shared/store/loss_store.py): `database:`,
    # the default, keeps them in the database above.
    loss_store_url: str = "database:"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    api_url: str = "http://127.0.0.1:8000"
    # Where users reach the service (e.g. https://calib.example.org behind a proxy): the
    # dashboard's cookie is Secure when this is https, and its forms accept this origin.
    public_url: str = ""
    # The CLI's bearer token; empty means the local token `calib up` writes to data_dir.
    token: str = ""
    # Each tenant's request budget, shared by every route (the `limits` package's syntax);
    # Redis holds the counters when the broker is Redis, so every API process shares them.
    rate_limit: str = "100/second;3000/minute"

    # Limits (documented in docs/reliability.md and the OpenAPI document).
    max_points_per_fit: int = 1_000_000
    max_epochs: int = 1_000_000
    max_fits_per_batch: int = 100_000
    max_points_per_batch: int = 20_000_000
    max_body_bytes: int = 256 * 1024 * 1024
    # What is left of a refused body is read and discarded, up to this much or this long, so that
    # a client that sends its whole body before reading still reads its 413 (services/api/bodies.py).
    # Each API process's budget for request bodies being parsed (services/api/memory.py): past it a
    # submission waits up to 2 s, then gets 503 with Retry-After. About ten times a text body's size.
    parse_memory_bytes: int = 2 * 1024 * 1024 * 1024
    # A Parquet batch's known columns (series, t_u, t_c, instrument) decoded: at most this many
    # bytes, read from the footer before decoding and counted again as they decode.
    max_parquet_decoded_bytes: int = 1024 * 1024 * 1024
    drain_refused_bytes: int = 1024 * 1024 * 1024
    drain_refused_seconds: float = 30.0
    # How long a dashboard login lasts (its session ends sooner at logout or token revocation).
    ui_session_hours: float = Field(12.0, gt=0)
    # Requests waiting with ?wait= that one API process holds: per tenant, and in all. Past either,
    # a wait answers at once with the state now. Unset, by backend: the embedded API's processes
    # have 16 threads (8 per tenant, 12 in all, leaving threads for other requests); on PostgreSQL
    # its gevent processes hold 1000 connections (200 per tenant, 800 in all).
    max_waits_per_tenant: int | None = Field(None, ge=0)
    max_waits: int | None = Field(None, ge=0)
    max_labels: int = 32

    # Quotas (docs/reliability.md; refusals name the quota). One request may ask
    # for 500 million fit-epochs: at 4 bytes per epoch that stores at most 2 GB of losses, 4 GB
    # with a validation split. A tenant's queued and running fits may hold 2 billion epochs not
    # yet run, and it may store 50 GiB of losses; an operator sets other figures per tenant.
    max_fit_epochs_per_request: int = 500_000_000
    max_in_flight_fit_epochs: int = 2_000_000_000
    max_stored_loss_bytes: int = 50 * 1024**3
    # The whole service: past this many queued fits (or messages in the broker's queue),
    # submissions get 503 with Retry-After instead of piling up.
    max_queued_fits: int = 1_000_000
    max_queued_messages: int = 100_000
    # How stale the API's reading of those two (and /metrics' fits by status) may be.
    queue_snapshot_seconds: float = 2.0
    # Retention: the reconciler prunes the losses of fits finished longer ago than this
    # (days; 0 keeps them for ever). `calib prune --older-than` does it by hand.
    retention_days: float = 0.0
    # Addresses (or networks) of proxies whose X-Forwarded-For is believed, comma-separated;
    # empty: the client is whoever connected.
    trusted_proxies: str = ""
    # Requests without a valid token share their client address's budget, smaller than a tenant's.
    anonymous_rate_limit: str = "20/second;300/minute"
    # A calibration is flagged as drifted when the p-value of its change from the previous one
    # (shared/store/drift.py) is below this.
    drift_threshold: float = Field(0.01, gt=0, lt=1)
    # Webhooks (docs/instruments.md, "Webhooks"): the callback URLs allowed, comma-separated entries
    # `[http://]HOST[:PORT]` (shared/contract/callbacks.py): names ("hooks.example.com"), "*.example.com",
    # "*" (any name), addresses or networks ("127.0.0.1", "10.0.0.0/8"); the scheme's default port
    # unless one is named (or "*"); https only unless the entry starts with http://. Empty:
    # callbacks are refused. Whatever the name, a delivery connects only to public addresses
    # unless the address itself is listed.
    webhook_allowed_hosts: str = ""
    # The key webhook secrets are sealed with in the database (a Fernet key; shared/runtime/sealed.py).
    # Empty: on the embedded default a key file in the data directory; elsewhere, unsealed.
    secrets_key: str = ""
    # One attempt's wall-clock deadline, resolving, connecting, sending and reading the answer
    # (at most 64 KiB of it) all included; retries start this many seconds apart and double up to
    # the maximum; a delivery is given up this long after it was created (at least an hour, API.md).
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=60)
    # Attempts one delivery worker makes at once (threads: they mostly wait on receivers).
    webhook_concurrency: int = Field(8, ge=1, le=64)
    # A host whose attempts failed this many times in a row is not tried again (no attempt is
    # made or counted) until its circuit reopens, 30 s later, doubling up to retry_max_seconds.
    webhook_breaker_failures: int = Field(3, ge=1)
    # Deliveries a tenant may have pending (neither delivered nor given up): past it, a
    # submission with a callback_url is 429 (quota pending_webhooks).
    webhook_max_pending_per_tenant: int = Field(10_000, ge=1)
    webhook_retry_seconds: float = 5.0
    webhook_retry_max_seconds: float = 600.0
    webhook_give_up_seconds: float = Field(86_400.0, ge=3600)

    # Worker behaviour.
    # Fits per chunk (one task, one engine call, one write per block). 2048: the 10,000-fit batch
    # spreads over two workers in five chunks and completes in 5.0 s here, against 7.7 s in three
    # chunks of 4096 and 5.4 s in ten of 1024 (benchmarks/README.md, session 7).
    chunk_size: int = 2048
    loss_block_epochs: int = 65_536
    lease_seconds: float = 60.0
    max_attempts: int = 3
    # A transient database error (connection lost, serialization failure, SQLite busy) is
    # retried this long with backoff before a chunk gives its fits back to the queue.
    transient_retry_seconds: float = 120.0
    # A chunk that has run this long yields to other queued work at its next block: its
    # unfinished fits go back to the queue with their checkpoints (fair share inside long work).
    time_slice_seconds: float = 30.0
    # A worker whose engine wrote nothing for this long stops renewing its lease (stuck).
    stall_seconds: float = 300.0
    # SQLite's wait for the write lock before "database is locked" (then retried as transient).
    sqlite_busy_timeout_seconds: float = 60.0
    # The reconciler publishes a fit never published this long after its commit (the
    # API crashed between the two, or the broker refused), and publishes again one
    # published but unclaimed this long (a message the broker lost).
    undispatched_after_seconds: float = 3.0
    redispatch_after_seconds: float = 15.0
    reconcile_every_seconds: float = 5.0
    # Torch's threads per worker process (0: torch's default, one per core). One: a host's cores are
    # shared by processes (Celery's pool, several workers), and two processes each running a
    # parallel op on two threads over two cores left threads waiting for a core at every op: a
    # 2048-fit chunk's convergence search took 165-440 ms, against 12-15 ms on one thread each
    # (benchmarks/README.md, twenty-second sitting).
    torch_threads: int = 1
    # Celery task events, for Flower (docker-compose's monitoring profile); off by default.
    task_events: bool = False
    # Longer than the longest chunk can run, or Redis hands the message to a
    # second worker while the first still computes (the claim makes that harmless).
    visibility_timeout_seconds: int = 3600

    def wait_slots(self) -> tuple[int, int]:
        """(per tenant, in all) waiting requests one API process holds."""
        per_tenant, total = (8, 12) if self.embedded else (200, 800)
        return (
            per_tenant if self.max_waits_per_tenant is None else self.max_waits_per_tenant,
            total if self.max_waits is None else self.max_waits,
        )

    def ensure_data_dir(self) -> Path:
        """The embedded default's directory, the owner's only (0700): it holds the databases, the
        broker's messages and the local token. Files already in it are made 0600 too."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        # SQLite makes a database's -wal and -shm files with the database file's own mode, so
        # making the (empty, valid) database files first makes all of them the owner's only.
        for name in ("calib.db", "broker.db"):
            (self.data_dir / name).touch(mode=0o600)
        for found in self.data_dir.iterdir():
            if found.is_file():
                found.chmod(0o600)
        return self.data_dir

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'calib.db'}"

    @property
    def direct_database(self) -> str:
        """The database itself, past any pooler: for migrations and LISTEN."""
        return self.direct_database_url or self.database

    @property
    def token_file(self) -> Path:
        return self.data_dir / "token"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
