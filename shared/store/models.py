"""The database schema: fits, batches, and each fit's losses packed in blocks of epochs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.domain.calibration import Spread
from shared.domain.predictions import line_covariance
from shared.domain.splits import held_out_indices
from shared.domain.statuses import (
    ACTIVE,
    CANCELLED,
    DIVERGED,
    FAILED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    TERMINAL,
)
from shared.runtime import failpoints

# The statuses are the domain's (shared/domain/statuses.py); the rows' code imports them from here.
__all__ = ["ACTIVE", "CANCELLED", "DIVERGED", "FAILED", "QUEUED", "RUNNING", "STATUSES", "SUCCEEDED", "TERMINAL"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    # UUID4: unguessable, so an id alone never grants access to another tenant's fit.
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    """This process's clock, for stamps people read. Leases use the database's clock (shared.store.dbclock)."""
    return dt.datetime.now(dt.UTC) + failpoints.clock_offset()


def raw_line(
    status: str, w: float | None, b: float | None, input_scale: float, input_shift: float | None
) -> tuple[float, float] | None:
    """A succeeded fit's line in the user's units, t_c = w_raw * t_u + b_raw, from the model's (w, b)
    on x = (t_u - input_shift) * input_scale; None before it succeeded. For Fit and for rows of its columns."""
    if status != SUCCEEDED or w is None or b is None:
        return None
    w_raw = w * input_scale
    return w_raw, b - w_raw * (input_shift or 0.0)


def training_points(n_points: int, validation: dict[str, object] | None) -> int:
    """The points a fit's line was fitted to: all but the held-out ones."""
    return n_points - len(held_out_indices(validation))


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC on the way out, on SQLite too (which stores naive times)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class Batch(Base):
    __tablename__ = "batches"

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant: so.Mapped[str] = so.mapped_column(sa.String(64), default="default")
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    count: so.Mapped[int] = so.mapped_column(sa.Integer)
    cancelled: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False)
    idempotency_key: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    request_digest: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    # Webhooks (shared/store/deliveries.py): where to POST the batch when it ends, and whether that
    # delivery is still to be created (true from submission until the batch ends).
    callback_url: so.Mapped[str | None] = so.mapped_column(sa.Text)
    callback_pending: so.Mapped[bool] = so.mapped_column(
        sa.Boolean, default=False, server_default=sa.false(), index=True
    )
    # The parameters of the batch's models, each once, in the order of its results' parameter
    # columns: written at submission so that the results file starts without a pass over the
    # batch's fits. Null on a batch from before migration 0021: its fits' models are read instead.
    parameter_names: so.Mapped[list[str] | None] = so.mapped_column(sa.JSON(none_as_null=True))

    __table_args__ = (
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_batches_tenant_idempotency_key"),
        sa.Index("ix_batches_tenant_created", "tenant", "created_at"),
    )


class Fit(Base):
    __tablename__ = "fits"

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant: so.Mapped[str] = so.mapped_column(sa.String(64), default="default")
    batch_id: so.Mapped[str | None] = so.mapped_column(sa.ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    # The unit of work a worker claims: one fit alone, or a slice of a batch.
    chunk_id: so.Mapped[str] = so.mapped_column(sa.String(36), index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=QUEUED)
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    started_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    finished_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    # The outbox: null until the wake-up message is published; the reconciler
    # publishes again for fits that stay queued too long after it.
    dispatched_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    lease_expires_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    # Incremented by every claim; writes are guarded by it (a fencing token).
    attempt: so.Mapped[int] = so.mapped_column(sa.Integer, default=0)
    # The engine's state at the end of the last block written (services/worker/engine): a fit
    # that yields its worker, or whose worker is lost, goes on from there. Null: from epoch 1.
    checkpoint: so.Mapped[dict[str, object] | None] = so.mapped_column(sa.JSON)
    # Times the worker running this fit alone was lost (a fit lost in a larger chunk is retried
    # in halves first, so only a fit that kills its worker by itself is counted and failed).
    worker_losses: so.Mapped[int] = so.mapped_column(sa.Integer, default=0, server_default="0")
    # host:pid of the worker process holding the current attempt (for operators, and
    # for the fault-injection tests that kill it).
    claimed_by: so.Mapped[str | None] = so.mapped_column(sa.String(200))

    epochs: so.Mapped[int] = so.mapped_column(sa.Integer)
    epochs_done: so.Mapped[int] = so.mapped_column(sa.Integer, default=0)
    n_points: so.Mapped[int] = so.mapped_column(sa.Integer)
    learning_rate: so.Mapped[float] = so.mapped_column(sa.Float)
    init_w: so.Mapped[float] = so.mapped_column(sa.Float)
    init_b: so.Mapped[float] = so.mapped_column(sa.Float)
    # The model sees x = (t_u - input_shift) * input_scale: normalize "scale" sets only the
    # scale, "standardize" both (the training data's mean and 1/SD), "none" neither.
    input_scale: so.Mapped[float] = so.mapped_column(sa.Float)
    input_shift: so.Mapped[float] = so.mapped_column(sa.Float, default=0.0, server_default="0")
    normalize: so.Mapped[str] = so.mapped_column(sa.String(16), default="scale", server_default="scale")
    optimizer: so.Mapped[str] = so.mapped_column(sa.String(16))
    # Its options resolved to the values used, as shared/contract/optimizers.py declares them (gd's
    # gradient and delta, momentum, adam's betas and eps, ...): one object, so a new optimizer
    # or option needs no column.
    optimizer_options: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    # The held-out points as {"fraction", "seed", "indices"} (indices always, resolved at
    # submission), and the early-stopping rule {"monitor", "min_delta", "patience"}.
    validation: so.Mapped[dict[str, object] | None] = so.mapped_column(sa.JSON)
    early_stopping: so.Mapped[dict[str, object] | None] = so.mapped_column(sa.JSON)
    labels: so.Mapped[dict[str, str]] = so.mapped_column(sa.JSON, default=dict)
    # The instrument this fit calibrates (API.md "Instruments"): each succeeded fit naming it is
    # one calibration of it, in the order of their created_at.
    instrument: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    # Where to POST the fit when it ends (a fit of its own; a batch's fits have none).
    callback_url: so.Mapped[str | None] = so.mapped_column(sa.Text)
    # Inputs packed as float64 blobs; deferred so listing fits never loads them.
    t_u: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary, deferred=True)
    t_c: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary, deferred=True)
    # The stated standard uncertainty of each t_c (weights 1/u²), packed like t_c; null: none stated
    # (ordinary least squares). With it, the weighted fit's χ² test, computed at submission.
    u_t_c: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary, deferred=True)
    # With u_t_c, the stated standard uncertainty of each reading (float64 blob), or null: a line is
    # then fitted by generalized distance regression (ISO/TS 28037 clause 7).
    u_t_u: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary, deferred=True)
    chi2: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON(none_as_null=True))

    # The function fitted (shared/contract/model_kinds.py): null for the book's line, whose figures
    # are the line columns here; for any other kind {"kind", its options}. Such a fit keeps its exact
    # least squares in `solution` ({"names", "parameters_opt", "covariance", "gram"}, raw units,
    # computed at submission) and, once it ends, its fitted raw-unit `parameters` ({"values",
    # "gap_se"}, in the names' order); its line columns stay null.
    model: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON(none_as_null=True))
    solution: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON(none_as_null=True))
    parameters: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON(none_as_null=True))

    w: so.Mapped[float | None] = so.mapped_column(sa.Float)
    b: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # The training (and validation) loss at the returned line w, b (API.md "The loss of a result").
    loss: so.Mapped[float | None] = so.mapped_column(sa.Float)
    val_loss: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # The per-epoch series' last values: each epoch's loss is taken before its update (the book's
    # order), so these are the losses of the line one update before the returned one.
    last_epoch_loss: so.Mapped[float | None] = so.mapped_column(sa.Float)
    last_epoch_val_loss: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # "completed" or "early_stopped" once the fit succeeded.
    stop_reason: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    diverged_at_epoch: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    error_type: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    error_detail: so.Mapped[str | None] = so.mapped_column(sa.Text)

    idempotency_key: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    request_digest: so.Mapped[str | None] = so.mapped_column(sa.String(64))

    # What the data says before any epoch runs (shared/domain/calibration.py), computed at
    # submission: the stability pre-flight (model space) and the exact least-squares
    # line with its uncertainty (raw units). None where the data does not determine them.
    lr_max: so.Mapped[float | None] = so.mapped_column(sa.Float)
    condition_number: so.Mapped[float | None] = so.mapped_column(sa.Float)
    w_opt: so.Mapped[float | None] = so.mapped_column(sa.Float)
    b_opt: so.Mapped[float | None] = so.mapped_column(sa.Float)
    se_w: so.Mapped[float | None] = so.mapped_column(sa.Float)
    se_b: so.Mapped[float | None] = so.mapped_column(sa.Float)
    cov_wb: so.Mapped[float | None] = so.mapped_column(sa.Float)
    r2: so.Mapped[float | None] = so.mapped_column(sa.Float)
    residual_sd: so.Mapped[float | None] = so.mapped_column(sa.Float)
    t_u_mean: so.Mapped[float | None] = so.mapped_column(sa.Float)
    t_u_sxx: so.Mapped[float | None] = so.mapped_column(sa.Float)
    warnings: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list, server_default="[]")
    # Var(t_c) of the training points: the scale of the convergence rule where the standard
    # errors are 0 or undefined (shared/domain/convergence.py).
    t_c_var: so.Mapped[float | None] = so.mapped_column(sa.Float)

    # Convergence (API.md "Convergence"): what the request asked, and the verdict at the end.
    convergence_tolerance: so.Mapped[float] = so.mapped_column(sa.Float, default=0.01, server_default="0.01")
    epochs_auto: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False, server_default=sa.false())
    converged: so.Mapped[bool | None] = so.mapped_column(sa.Boolean)
    gap_se_w: so.Mapped[float | None] = so.mapped_column(sa.Float)
    gap_se_b: so.Mapped[float | None] = so.mapped_column(sa.Float)
    excess_loss: so.Mapped[float | None] = so.mapped_column(sa.Float)
    epochs_needed: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    # Retention (`calib prune`) deleted this fit's losses; its result stays.
    losses_pruned: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False, server_default=sa.false())

    def held_out(self) -> list[int]:
        return held_out_indices(self.validation)

    @property
    def n_train(self) -> int:
        """The points the line was fitted to (the statistics and intervals are theirs)."""
        return training_points(self.n_points, self.validation)

    def raw_params(self) -> tuple[float, float] | None:
        """(w_raw, b_raw): the fitted line in the user's units, t_c = w_raw * t_u + b_raw."""
        return raw_line(self.status, self.w, self.b, self.input_scale, self.input_shift)

    def covariance(self) -> np.ndarray | None:
        """The line's parameters' covariance in raw units, (w, b) order; None where the data do not
        determine it (fewer than 3 points, or t_u all equal)."""
        if self.se_w is None or self.se_b is None or self.cov_wb is None:
            return None
        return line_covariance(self.se_w, self.se_b, self.cov_wb)

    def model_covariance(self) -> np.ndarray | None:
        """A model other than the line: its coefficients' least-squares covariance (its `solution`), or
        None where the data do not determine it."""
        given = (self.solution or {}).get("covariance")
        if not given or any(v is None for row in given for v in row):
            return None
        return np.array(given, dtype=np.float64)

    @property
    def weighted(self) -> bool:
        """Fitted by stated uncertainties (u_t_c): its χ² test was computed at submission. Such a fit
        gives no interval for a new observation, whose own uncertainty calib does not know."""
        return self.chi2 is not None

    def prediction_spread(self) -> Spread | None:
        """What a prediction interval needs of the training points; None where the data does
        not determine it (fewer than 3 points, or t_u all equal)."""
        if self.residual_sd is None or not self.t_u_sxx or self.t_u_mean is None:
            return None
        return Spread(self.n_train, self.residual_sd, self.t_u_mean, self.t_u_sxx)

    __table_args__ = (
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_fits_tenant_idempotency_key"),
        sa.Index("ix_fits_tenant_created", "tenant", "created_at", "id"),
        sa.Index("ix_fits_status_dispatched", "status", "dispatched_at"),
        # Fair share between tenants (services/worker/fairness.py).
        sa.Index("ix_fits_status_tenant_created", "status", "tenant", "created_at"),
        sa.Index("ix_fits_tenant_instrument", "tenant", "instrument", "status", "created_at", "id"),
    )


class LossBlock(Base):
    """Consecutive epochs of one fit's losses, float32 packed (compressed where shorter:
    shared/domain/packing.py): a few rows per fit, never one per epoch."""

    __tablename__ = "loss_blocks"

    fit_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("fits.id", ondelete="CASCADE"), primary_key=True)
    first_epoch: so.Mapped[int] = so.mapped_column(sa.Integer, primary_key=True)
    count: so.Mapped[int] = so.mapped_column(sa.Integer)
    loss: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary)
    # The same epochs' validation losses, for fits with a validation split; else null.
    val_loss: so.Mapped[bytes | None] = so.mapped_column(sa.LargeBinary)
    # The UTC day the block was written, set by the database. On PostgreSQL the table is partitioned
    # by it (shared/store/loss_partitions.py) and its primary key holds it too.
    written_on: so.Mapped[dt.date] = so.mapped_column(sa.Date, server_default=sa.text("(CURRENT_DATE)"))


class DriftVerdict(Base):
    """A calibration against the one before it (shared/drift.drift), stored when the worker writes
    it and rewritten when an earlier-submitted fit of the instrument succeeds later, so reads never
    pair calibrations: a batch's `drifted` count is one indexed join whatever its size. Flagged is
    not stored: it is `p_value < CALIB_DRIFT_THRESHOLD`, read with the threshold of the moment.
    A calibration with none before it has no row."""

    __tablename__ = "drift_verdicts"

    fit_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("fits.id", ondelete="CASCADE"), primary_key=True)
    # The calibration before it when the verdict was made; not a foreign key: retention may delete
    # it, and the verdict made against it stays what it was.
    previous_id: so.Mapped[str] = so.mapped_column(sa.String(36))
    chi2: so.Mapped[float | None] = so.mapped_column(sa.Float)
    p_value: so.Mapped[float | None] = so.mapped_column(sa.Float)
    as_found_rms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    as_left_rms: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # Where the instrument has limits: the previous calibration judged as found at this one's points
    # ({"points", "verdict"}, shared/domain/conformity.py), and its verdict alone (?verdict= lists).
    decision: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON(none_as_null=True))
    verdict: so.Mapped[str | None] = so.mapped_column(sa.String(20))


class Instrument(Base):
    """An instrument a tenant calibrates: created by the first fit that names it (or a PUT), with
    the tolerance its as-found error is held to. Its calibrations are its succeeded fits."""

    __tablename__ = "instruments"

    tenant: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    id: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    tolerance: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # Conformity (API.md "Conformity decisions"): the acceptable error [lower, upper] in t_c units, the
    # decision rule ("simple" | "guard_band") and the guard band's coverage factor k. No limits: no decisions.
    limit_lower: so.Mapped[float | None] = so.mapped_column(sa.Float)
    limit_upper: so.Mapped[float | None] = so.mapped_column(sa.Float)
    decision_rule: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    coverage_factor: so.Mapped[float | None] = so.mapped_column(sa.Float)

    def conformity(self) -> tuple[float, float, Literal["simple", "guard_band"], float] | None:
        """(lower, upper, rule, k), or None without limits."""
        if self.limit_lower is None or self.limit_upper is None:
            return None
        rule: Literal["simple", "guard_band"] = "guard_band" if self.decision_rule == "guard_band" else "simple"
        return self.limit_lower, self.limit_upper, rule, self.coverage_factor or 2.0


class ApiToken(Base):
    """A bearer token of a tenant. Only its SHA-256 digest and a display prefix are kept."""

    __tablename__ = "api_tokens"

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant: so.Mapped[str] = so.mapped_column(sa.String(64))
    prefix: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    digest: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    revoked_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)


class UiSession(Base):
    """A dashboard login: the browser's cookie holds a random id, of which only the SHA-256 digest
    is kept. It ends at logout, at its expiry, or when the token it was opened with is revoked."""

    __tablename__ = "ui_sessions"

    digest: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    token_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    tenant: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    expires_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime)


class Tenant(Base):
    """A tenant's quotas (None: the service's defaults) and the loss bytes it stores, kept as a
    running count: the workers add what they write, retries and retention subtract what they
    delete, each in the same transaction, so no quota check scans the loss blocks."""

    __tablename__ = "tenants"

    name: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    max_in_flight_fit_epochs: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    max_stored_loss_bytes: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    stored_loss_bytes: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0, server_default="0")
    # The key its webhooks are signed with (Standard Webhooks: "whsec_" + base64), made on first use.
    # Sealed (shared/runtime/sealed.py): "sealed:" and a Fernet token, about 170 characters.
    webhook_secret: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    # After a rotation, the secret before it, still signing beside the new one until the overlap
    # ends, so that receivers can switch secrets without missing a delivery.
    webhook_secret_previous: so.Mapped[str | None] = so.mapped_column(sa.String(512))
    webhook_secret_previous_until: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)


class TenantTurn(Base):
    """When each tenant last had a chunk claimed: the round robin of fair share
    (services/worker/fairness.py). One small row per tenant, upserted per claim."""

    __tablename__ = "tenant_turns"

    tenant: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    served_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime)


class WorkerCounter(Base):
    """Counters the workers add to after each chunk, served by the API's /metrics: Celery workers
    are separate processes on other machines, and the database is what they all share.
    Histograms are stored as their cumulative buckets (`le`), sum and count."""

    __tablename__ = "worker_counters"

    name: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    # "" or one label as key=value, e.g. "status=succeeded" or "le=0.5".
    label: so.Mapped[str] = so.mapped_column(sa.String(64), primary_key=True)
    value: so.Mapped[float] = so.mapped_column(sa.Float, default=0.0)


class WebhookDelivery(Base):
    """One POST owed to a callback URL: created in the transaction that ends its fit or batch (or by
    the reconciler's sweep), then attempted until a 2xx or until the service gives up. Its body is
    fixed at the first attempt, so every retry sends the same bytes."""

    __tablename__ = "webhook_deliveries"

    id: so.Mapped[str] = so.mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant: so.Mapped[str] = so.mapped_column(sa.String(64))
    # "fit.ended" or "batch.ended"; subject_id is the fit's or the batch's id.
    event: so.Mapped[str] = so.mapped_column(sa.String(32))
    subject_id: so.Mapped[str] = so.mapped_column(sa.String(36))
    url: so.Mapped[str] = so.mapped_column(sa.Text)
    body: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    # Null once delivered or given up: nothing left to do.
    next_attempt_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime, index=True)
    # An attempt in progress holds the delivery until then (a killed worker's lapses).
    leased_until: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    leased_by: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    attempts: so.Mapped[int] = so.mapped_column(sa.Integer, default=0, server_default="0")
    delivered_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)
    gave_up_at: so.Mapped[dt.datetime | None] = so.mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("event", "subject_id", name="uq_webhook_deliveries_event_subject"),
        sa.Index("ix_webhook_deliveries_tenant_created", "tenant", "created_at", "id"),
    )


class WebhookAttempt(Base):
    """One POST of a delivery: written when it starts (a worker killed mid-POST leaves it without a
    status), completed with the answer's status code or the error."""

    __tablename__ = "webhook_attempts"

    delivery_id: so.Mapped[str] = so.mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    number: so.Mapped[int] = so.mapped_column(sa.Integer, primary_key=True)
    started_at: so.Mapped[dt.datetime] = so.mapped_column(UTCDateTime)
    status_code: so.Mapped[int | None] = so.mapped_column(sa.Integer)
    error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    seconds: so.Mapped[float | None] = so.mapped_column(sa.Float)
