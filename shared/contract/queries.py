"""Query parameters of the API's routes, as models: the API parses each request's query string
with them and the OpenAPI document lists their fields, so a bound, a default or a pattern is
declared once (services/api/requests.query, services/api/openapi.query_parameters)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.statuses import STATUSES

Status = Literal[STATUSES]  # type: ignore[valid-type]  # the tuple of shared.domain.statuses, spelled once
# An id is a UUID in its lowercase form, the only one this API gives out.
ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["3f2c9a4e-8d1b-4c57-9e0a-5b7d2f6c1a88"])]
# A page's position: the last item's creation time (microseconds since 1970) and id. Any value of
# this form is a position, so a client may also write one (`0.` is past everything).
CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f-]{0,36}$"
Cursor = Annotated[
    str,
    Field(
        pattern=CURSOR_PATTERN, description="From the previous page's `next`", examples=["1732812000123456.3f2c9a4e"]
    ),
]
Format = Literal["json", "csv"]
BatchFormat = Literal["json", "csv", "parquet"]
LAST_EPOCH = 2**31 - 1
MAX_FITS_PAGE = 1000
MAX_LOSS_PAGE = 100_000
# Buckets of a downsampled loss curve: more than any chart has pixels.
MAX_BUCKETS = 10_000
# The longest a request may wait for a fit or batch to end: shorter than any proxy's idle timeout.
MAX_WAIT_SECONDS = 60


class Query(BaseModel):
    # Parameters a route does not take are ignored, as they always were (the dashboard and
    # older clients send some).
    model_config = ConfigDict(extra="ignore")


class FitListQuery(Query):
    status: Status | None = Field(None, description="Only fits in this status")
    batch_id: Id | None = Field(None, description="Only this batch's fits")
    label: str | None = Field(
        None,
        # No control characters anywhere in a query (services.api.requests.refuse_control_characters).
        pattern=r"^[^:\x00-\x1f\x7f]+:[^\x00-\x1f\x7f]*$",
        description="key:value; only fits with this label",
        examples=["sensor:A17"],
    )
    id_prefix: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F-]{1,36}$",
        description="Only fits whose id starts with this (the 8 characters `calib list` prints)",
        examples=["3f2c9a4e"],
    )
    limit: int = Field(100, ge=1, le=MAX_FITS_PAGE, description="Page size")
    cursor: Cursor | None = None


class WaitQuery(Query):
    wait: float | None = Field(
        None,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for it to end: the answer comes as soon as it is no longer "
        "queued or running, or after this long with its current state (the same body as without `wait`)",
        examples=[30],
    )


class BatchFitsQuery(Query):
    status: Status | None = Field(None, description="Only fits in this status")
    limit: int = Field(100, ge=1, le=MAX_FITS_PAGE, description="Page size (JSON)")
    cursor: Cursor | None = None
    format: BatchFormat = Field(
        "json", description="csv streams one result line per fit; parquet gives the same columns as Parquet"
    )


class LossesQuery(Query):
    start: int = Field(
        1, ge=1, le=LAST_EPOCH, description="First epoch of the page, of the downsampled range, or of the CSV"
    )
    limit: int = Field(10_000, ge=1, le=MAX_LOSS_PAGE, description="Epochs per JSON page (without `points`)")
    points: int | None = Field(
        None, ge=1, le=MAX_BUCKETS, description="Downsample to at most this many buckets covering every epoch"
    )
    end: int | None = Field(
        None,
        ge=1,
        le=LAST_EPOCH,
        description="Last epoch of the downsampled range or of the CSV (default: the last recorded; before "
        "`start`: no buckets, no CSV rows)",
    )
    format: Format | None = Field(None, description="csv streams `epoch,loss`; default: JSON, or CSV by Accept")


class InstrumentListQuery(Query):
    limit: int = Field(100, ge=1, le=MAX_FITS_PAGE, description="Page size")
    cursor: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="From the previous page's `next`: the last instrument of that page (pages go by id)",
    )
    drifted: bool = Field(False, description="Only instruments whose current calibration is flagged as drifted")
    verdict: Literal["pass", "conditional pass", "conditional fail", "fail"] | None = Field(
        None, description="Only instruments whose current calibration's decision has this verdict"
    )


class DeliveryListQuery(Query):
    limit: int = Field(100, ge=1, le=MAX_FITS_PAGE, description="Page size")
    cursor: Cursor | None = None


class InstrumentQuery(Query):
    history_limit: int = Field(
        100, ge=1, le=1000, description="Calibrations of the history on this page, newest first", examples=[100]
    )
    history_cursor: Annotated[str, StringConstraints(pattern=r"^[0-9a-f-]{36}$")] | None = Field(
        None,
        description="The page after this calibration's fit id (the `history_next` link carries it)",
        examples=["3f2c9a4e-8d1b-4c57-9e0a-5b7d2f6c1a88"],
    )


class AtQuery(Query):
    at: AwareDatetime | None = Field(
        None,
        description="The calibration current at this time (ISO 8601 with its offset), not the newest",
        examples=["2026-11-27T23:00:00Z"],
    )


class ApplyQuery(Query):
    interval: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Prediction bounds at this confidence (lower, upper); without it those columns are empty",
        examples=[0.95],
    )


# The defaults a CSV batch takes as query parameters; a nested field's parts are
# prefixed by its name (init_w, validation_fraction, early_stopping_patience, ...).
CSV_BATCH_DEFAULTS = {
    "epochs": int,
    "max_epochs": int,
    "convergence_tolerance": float,
    "learning_rate": float,
    "input_scale": float,
    "optimizer": str,
    "normalize": str,
    "gradient": str,
    "delta": float,
    "momentum": float,
    "eps": float,
    "init_w": float,
    "init_b": float,
    "validation_fraction": float,
    "validation_seed": int,
    "early_stopping_monitor": str,
    "early_stopping_min_delta": float,
    "early_stopping_patience": int,
    # The model's kind and a polynomial's degree: ?model=polynomial&degree=2 (API.md, "Models beyond a line").
    "model": str,
    "degree": int,
}
