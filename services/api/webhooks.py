"""/v1/webhooks/deliveries: the tenant's webhook deliveries, newest first, each with its attempts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint

from services.api.contract import json_content, operation
from services.api.extensions import current_services
from services.api.listing import decode_cursor, encode_cursor, query_with
from services.api.requests import query
from services.api.tenancy import current_tenant
from shared.contract.queries import DeliveryListQuery
from shared.store.models import UTCDateTime, WebhookAttempt, WebhookDelivery
from shared.store.presenters import delivery_list

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.get("/deliveries")
@operation(
    "listWebhookDeliveries",
    "Webhook deliveries, newest first, each with its attempts and their status codes",
    {"200": {"description": "A page", "content": json_content("WebhookDeliveryList")}},
    description="A fit or batch with a `callback_url` owes one delivery when it ends: its final JSON "
    'POSTed with `Calib-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the '
    "tenant's secret>` (`calib webhooks secret --tenant NAME` prints it), `Calib-Delivery` (this id) and "
    "`Calib-Event`. Any answer but 2xx, or none within the timeout, is retried with doubling delays "
    "(docs/instruments.md: Webhooks) until CALIB_WEBHOOK_GIVE_UP_SECONDS (a day; at least an hour); redirects are not "
    "followed. Only hosts in CALIB_WEBHOOK_ALLOWED_HOSTS are accepted (422 otherwise), and a delivery "
    "connects only to public addresses unless the operator listed the address.",
    query=DeliveryListQuery,
    problems=("422",),
)
def list_deliveries() -> dict[str, Any]:
    params = query(DeliveryListQuery)
    statement = sa.select(WebhookDelivery).where(WebhookDelivery.tenant == current_tenant())
    if params.cursor:
        created, delivery_id = decode_cursor(params.cursor)
        statement = statement.where(
            sa.tuple_(WebhookDelivery.created_at, WebhookDelivery.id)
            < sa.tuple_(sa.literal(created, UTCDateTime()), sa.literal(delivery_id))
        )
    statement = statement.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(params.limit + 1)
    with current_services().db.session() as session:
        deliveries = list(session.scalars(statement))[: params.limit + 1]
        page = deliveries[: params.limit]
        attempts = session.scalars(
            sa.select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in page]))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        ).all()
    last = page[-1] if len(deliveries) > params.limit else None
    next_link = (
        f"/v1/webhooks/deliveries?{query_with(cursor=encode_cursor(last.created_at, last.id))}" if last else None
    )
    return delivery_list(page, list(attempts), next_link)
