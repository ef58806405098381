"""Pages of fits, newest first, with the filters of GET /v1/fits and a batch's fits (the dashboard
lists them the same way); cursors are `<created_at in microseconds>.<id>` (shared.contract.queries.Cursor)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import request

from services.api.extensions import current_services
from services.api.tenancy import current_tenant
from shared.contract.queries import BatchFitsQuery, FitListQuery
from shared.store.models import Fit, UTCDateTime

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_cursor(created_at: dt.datetime, object_id: str) -> str:
    micros = (created_at.astimezone(dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}.{object_id}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    micros, fit_id = cursor.split(".", 1)  # the pattern of shared.contract.queries.Cursor holds
    return _EPOCH + dt.timedelta(microseconds=int(micros)), fit_id


def list_fits_query(params: FitListQuery | BatchFitsQuery, batch_id: str | None = None) -> tuple[list[Fit], str | None]:
    """Newest first, cursor-paginated, filtered by status, batch, id prefix and label."""
    query = sa.select(Fit).where(Fit.tenant == current_tenant())
    if isinstance(params, FitListQuery):
        batch_id = batch_id or params.batch_id
        if params.id_prefix:
            query = query.where(Fit.id.startswith(params.id_prefix.lower(), autoescape=True))
        if params.label:
            key, _, value = params.label.partition(":")
            query = query.where(_has_label(key, value))
    if batch_id:
        query = query.where(Fit.batch_id == batch_id)
    if params.status:
        query = query.where(Fit.status == params.status)
    if params.cursor:
        created, fit_id = decode_cursor(params.cursor)
        query = query.where(
            sa.tuple_(Fit.created_at, Fit.id) < sa.tuple_(sa.literal(created, UTCDateTime()), sa.literal(fit_id))
        )
    limit = params.limit
    query = query.order_by(Fit.created_at.desc(), Fit.id.desc()).limit(limit + 1)
    with current_services().db.session() as session:
        fits = list(session.scalars(query))
    next_cursor = encode_cursor(fits[limit - 1].created_at, fits[limit - 1].id) if len(fits) > limit else None
    return fits[:limit], next_cursor


def _has_label(key: str, value: str) -> sa.ColumnElement[bool]:
    """labels[key] == value for any key. SQLite's JSON path cannot quote every key (`x":1` broke
    the path and the query), so there the labels are walked with json_each, key and value bound."""
    if current_services().db.engine.dialect.name != "sqlite":
        same: sa.ColumnElement[bool] = Fit.labels[key].as_string() == value
        return same
    pairs = sa.func.json_each(Fit.labels).table_valued("key", "value").alias("label_pairs")
    return sa.exists(sa.select(1).select_from(pairs).where(pairs.c.key == key, pairs.c.value == value))


def query_with(**changes: Any) -> str:
    """This request's query string with some parameters replaced (for `next` links)."""
    args = request.args.to_dict()
    args.update({k: str(v) for k, v in changes.items()})
    return urlencode(args)
