"""The OpenAPI 3.1 document of the service and a /docs page: its paths read off the routes' own
declarations (services/api/contract.py), its schemas built from the Pydantic models."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from flask import Blueprint, Response, current_app, render_template

from services.api import contract
from services.api.extensions import current_services
from shared.contract.callbacks import ANY_PORT, DEFAULT_PORTS, AllowedHosts, Rule
from shared.contract.schemas import SCHEMAS
from shared.runtime.settings import Settings

bp = Blueprint("openapi", __name__, template_folder="templates")


_REQUESTS = {"FitOptions", "FitCreate", "BatchCreate", "PredictRequest", "InverseRequest"}


def _apply_limits(components: dict[str, Any], s: Settings) -> None:
    """The service's configured limits, where the models' schemas leave them open."""
    for name in ("FitOptions", "FitCreate", "BatchFit"):
        props = components[name]["properties"]
        props["epochs"]["anyOf"][0]["maximum"] = s.max_epochs
        props["max_epochs"]["anyOf"][0]["maximum"] = s.max_epochs
    for name in ("FitCreate", "BatchFit"):
        create = components[name]["properties"]
        create["t_u"]["maxItems"] = create["t_c"]["maxItems"] = s.max_points_per_fit
        create["labels"]["maxProperties"] = s.max_labels
    components["BatchCreate"]["properties"]["fits"]["maxItems"] = s.max_fits_per_batch
    callback = _callback_schema(AllowedHosts.parse(s.webhook_allowed_hosts))
    for name in ("FitCreate", "BatchCreate"):
        prop = components[name]["properties"]["callback_url"]
        if callback is None:
            # Every callback_url is refused: null (none) is all a request may say.
            prop.pop("anyOf")
            prop.update(type="null", description=_NO_HOST_ALLOWED, example=None)
        else:
            prop["anyOf"] = [callback, {"type": "null"}]


# A port urlsplit accepts: 1 to 65535.
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_NAME = r"[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*"  # a name, never an address (those must be listed)


_NO_HOST_ALLOWED = (
    "no host is allowed: this service's operator has set no CALIB_WEBHOOK_ALLOWED_HOSTS, so every "
    "callback_url is refused (422)"
)


def _callback_schema(allowed: AllowedHosts) -> dict[str, Any] | None:
    """callback_url as this service's operator allows it (CALIB_WEBHOOK_ALLOWED_HOSTS): each rule's
    schemes, hosts and ports spelled into the pattern, so the document says what the API accepts;
    None where no host is allowed. Networks wider than one address cannot be spelled as a pattern;
    their addresses are accepted though not shown."""
    shapes = [shape for rule in allowed.rules for shape in _rule_patterns(rule)]
    if not shapes:
        return None
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 2000,
        "pattern": rf"^(?:{'|'.join(shapes)})(?:[/?#][^\x00-\x20\x7f]*)?$",
        "description": "POSTed the final JSON, signed, when it ends (docs/instruments.md: Webhooks); only the schemes, "
        "hosts and ports this service's operator allows",
    }


def _rule_patterns(rule: Rule) -> list[str]:
    if rule.name is not None:
        host = re.escape(rule.name)
    elif rule.suffix is not None:
        host = _NAME + re.escape(rule.suffix)
    elif rule.any_name:
        host = _NAME
    elif rule.network is not None and rule.network.num_addresses == 1:
        address = re.escape(str(rule.network.network_address))
        host = address if rule.network.version == 4 else rf"\[{address}\]"
    else:
        return []
    shapes = []
    for scheme in ("https", "http") if rule.http else ("https",):
        if rule.port == ANY_PORT:
            port = rf"(?::{_PORT})?"
        elif rule.port is None:
            port = f"(?::{DEFAULT_PORTS[scheme]})?"
        else:
            port = f":{rule.port}" if rule.port != DEFAULT_PORTS[scheme] else f"(?::{rule.port})?"
        shapes.append(f"{scheme}://{host}{port}")
    return shapes


def fill_property_examples(components: dict[str, Any]) -> None:
    """Give every property that has no example of its own the value of its schema's example object
    (each model declares one: shared/contract/examples.py)."""
    for schema in components.values():
        example = schema.get("example") or {}
        for prop, spec in schema.get("properties", {}).items():
            if "example" in spec or "examples" in spec:
                continue
            if isinstance(example, dict) and prop in example:
                spec["example"] = example[prop]
            elif "$ref" in spec and "example" in (model := components[spec["$ref"].rsplit("/", 1)[1]]):
                spec["example"] = model["example"]  # a property that is a model: that model's example


@cache
def _schemas() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for model in SCHEMAS:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode="validation" if model.__name__ in _REQUESTS else "serialization",
        )
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    # A batch's defaults and fits are validated loosely at first (so errors can name the
    # fit); what a client may send is exactly FitOptions and FitCreate.
    batch = components["BatchCreate"]["properties"]
    batch["defaults"] = {
        "$ref": "#/components/schemas/FitOptions",
        "description": "Fields every fit takes unless it sets its own",
    }
    batch["fits"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/BatchFit"}}
    fill_property_examples(components)
    # A batch's webhook is the batch's: its fits are FitCreate without callback_url.
    fit_of_batch = copy.deepcopy(components["FitCreate"])
    del fit_of_batch["properties"]["callback_url"]
    fit_of_batch.get("example", {}).pop("callback_url", None)
    # A field a fit leaves out takes the batch's defaults first: no default of its own, or a
    # generated client would send the service's default and override the batch's.
    for spec in fit_of_batch["properties"].values():
        spec.pop("default", None)
    fit_of_batch["title"] = "BatchFit"
    fit_of_batch["description"] = (
        "A fit of a batch: the fields of FitCreate but callback_url (the batch's own). A field left out "
        "takes the batch's defaults, then FitCreate's."
    )
    components["BatchFit"] = fit_of_batch
    return components


def _limited_schemas(s: Settings) -> dict[str, Any]:
    components = copy.deepcopy(_schemas())
    _apply_limits(components, s)
    return components


def _link_created_objects(paths: dict[str, Any]) -> None:
    """OpenAPI links from a created fit or batch to the operations that take its id, so
    clients and stateful test generators (schemathesis) can follow them."""
    for create, prefix, param, status in (
        ("/v1/fits", "/v1/fits/{fit_id}", "fit_id", "202"),
        ("/v1/batches", "/v1/batches/{batch_id}", "batch_id", "202"),
    ):
        links = {}
        for path, item in paths.items():
            if path.startswith(prefix):
                for operation in item.values():
                    links[operation["operationId"]] = {
                        "operationId": operation["operationId"],
                        "parameters": {param: "$response.body#/id"},
                    }
        paths[create]["post"]["responses"][status]["links"] = links


def document() -> dict[str, Any]:
    s = current_services().settings
    limits = {
        "points": s.max_points_per_fit,
        "epochs": s.max_epochs,
        "labels": s.max_labels,
        "body": s.max_body_bytes,
        "batch_fits": s.max_fits_per_batch,
        "batch_points": s.max_points_per_batch,
    }
    paths = contract.paths(current_app, limits)
    _link_created_objects(paths)
    for path, item in paths.items():
        for operation in item.values():
            if path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}]
                # Any /v1 route: a parameter holding a control character is a 422 naming it.
                operation["responses"].update(contract.problems("401", "422", "429"))
            # Any route: gunicorn refuses a request line past its limit (limit_request_line, 4094
            # bytes) before the app sees it, in its own plain form.
            operation["responses"]["414"] = {
                "description": "Request line too long (over 4094 bytes): refused by the HTTP server, "
                "in plain text rather than problem+json"
            }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "calib",
            "version": "1",
            "description": "Linear calibration fits t_c = w*t_u + b by gradient descent. "
            "Every /v1 route needs `Authorization: Bearer <token>`. Each tenant has one "
            f"request budget shared by every route ({s.rate_limit}); requests without a "
            f"valid token share their client address's ({s.anonymous_rate_limit}). Over "
            "budget: 429 with Retry-After. Quotas (GET /v1/usage): a request's fit-epochs "
            f"past {s.max_fit_epochs_per_request:,} → 413; a tenant's fit-epochs in flight "
            "past its quota → 429 with Retry-After; its stored loss bytes past its quota → "
            "507; the service's queue past its threshold → 503 with Retry-After. Each "
            "refusal names the quota, its limit, the amount requested and the amount left.",
        },
        "paths": paths,
        "components": {
            "schemas": _limited_schemas(s),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `calib tokens create --tenant NAME`; "
                    "it sees only its tenant's fits and batches",
                }
            },
        },
    }


# Where an app keeps its served document (app.extensions).
_SERVED = "calib.openapi_json"


@bp.get("/openapi.json")
def openapi_json() -> Response:
    # Built once per app: it reads only the app's routes and settings, both fixed when the app is
    # made, and building it costs ~30 ms of CPU (every schema copied and limited).
    text = current_app.extensions.get(_SERVED)
    if text is None:
        text = current_app.extensions[_SERVED] = current_app.json.dumps(document())
    return Response(text, mimetype="application/json")


@bp.get("/docs")
def docs() -> Response:
    # A page of its own (services/api/templates/docs.html) that renders /openapi.json in the browser.
    return Response(render_template("docs.html"), mimetype="text/html")
