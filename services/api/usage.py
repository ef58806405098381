"""/v1/usage: a tenant's fits, stored loss bytes and work in flight, against its quotas."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from services.api.contract import json_content, operation
from services.api.extensions import current_services
from services.api.tenancy import current_tenant
from shared.contract.responses import serve
from shared.contract.schemas import Usage
from shared.store import quotas

bp = Blueprint("usage", __name__, url_prefix="/v1/usage")


@bp.get("")
@operation(
    "getUsage",
    "The tenant's fits, stored loss bytes and fit-epochs in flight, with its quotas",
    {"200": {"description": "Usage", "content": json_content("Usage")}},
)
def get_usage() -> dict[str, Any]:
    svc = current_services()
    with svc.db.session() as session:
        found = quotas.usage(session, svc.settings, current_tenant())
    return serve(
        Usage,
        {
            "tenant": found.tenant,
            "fits": found.fits,
            "stored_loss_bytes": found.stored_loss_bytes,
            "in_flight_fit_epochs": found.in_flight_fit_epochs,
            "quotas": {
                "fit_epochs_per_request": found.quotas.fit_epochs_per_request,
                "in_flight_fit_epochs": found.quotas.in_flight_fit_epochs,
                "stored_loss_bytes": found.quotas.stored_loss_bytes,
            },
        },
    )
