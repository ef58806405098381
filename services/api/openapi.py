"""The OpenAPI 3.1 document of the service, built from the Pydantic schemas, and a /docs page."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from flask import Blueprint, Response, render_template

from services.api.examples import fill_property_examples
from services.api.extensions import current_services
from shared.callbacks import ANY_PORT, DEFAULT_PORTS, AllowedHosts, Rule
from shared.presenters import RESULT_COLUMNS
from shared.queries import (
    CSV_BATCH_DEFAULTS,
    ID_PATTERN,
    ApplyQuery,
    AtQuery,
    BatchFitsQuery,
    DeliveryListQuery,
    FitListQuery,
    InstrumentListQuery,
    InstrumentQuery,
    LossesQuery,
    Query,
    WaitQuery,
)
from shared.schemas import INSTRUMENT_PATTERN, SCHEMAS
from shared.settings import Settings

bp = Blueprint("openapi", __name__, template_folder="templates")

PROBLEM_CODES = {
    "400": "Malformed JSON or CSV",
    "404": "Unknown id, or another tenant's",
    "409": "Conflict: the fit's or batch's state, or an Idempotency-Key reused with another body",
    "410": "Gone: retention pruned this fit's losses (its result is kept)",
    "413": "Body or data over a limit, or the request's fit-epochs over `fit_epochs_per_request` (`quota` names it)",
    "415": "Unsupported media type",
    "401": "No bearer token, or an unknown or revoked one",
    "422": "Invalid field; `errors[].loc` names it",
    "429": "Over the tenant's (or, without a valid token, the address's) request budget, or the tenant's "
    "in-flight fit-epochs over its quota (`quota` names it); see Retry-After",
    "503": "A dependency (database, broker) is down, the service's queue is past its threshold, or the "
    "API process is parsing as many bodies as its memory budget holds (`quota` names it: queued_fits, "
    "queued_messages, parse_memory_bytes); see Retry-After",
    "507": "The tenant's stored loss bytes would pass its quota (`quota`: stored_loss_bytes); prune old "
    "losses or ask an operator for more",
}


# A CSV batch as the API reads it: the header, then each series' rows together (at least two,
# since a fit needs two points), a series never starting again further down. Numbers here are
# plain decimals; the API also reads exponents, which a pattern would make unreadable.
_NUMBER = r"-?(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?"
_ROW_REST = rf",{_NUMBER},{_NUMBER}\r?\n"
CSV_PATTERN = rf"^series,t_u,t_c\r?\n(?:([A-Za-z0-9_.-]{{1,32}}){_ROW_REST}(?:\1{_ROW_REST})+(?!\1,)(?![\s\S]*\n\1,))+$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _problems(*codes: str) -> dict[str, Any]:
    return {
        code: {"description": PROBLEM_CODES[code], "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for code in codes
    }


def _id_param(name: str = "fit_id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}


def query_parameters(model: type[Query]) -> list[dict[str, Any]]:
    """The query parameters of a route, from the model the route parses them with."""
    schema = model.model_json_schema()
    out = []
    for name, prop in schema["properties"].items():
        description = prop.pop("description", "")
        prop.pop("title", None)
        # An optional parameter is one a client leaves out: its schema is the value's, not "or null".
        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
        if variants:
            prop.update(variants[0] if len(variants) == 1 else {"anyOf": variants})
        description = description or prop.pop("description", "")
        if prop.get("default", 0) is None:
            del prop["default"]
        for variant in prop.get("anyOf", [prop]):
            variant.pop("title", None)
        out.append({"name": name, "in": "query", "required": False, "schema": prop, "description": description})
    return out


def _paths(limits: dict[str, int]) -> dict[str, Any]:
    fit_ok = {"description": "The fit", "content": _json("FitPublic")}
    return {
        "/v1/fits": {
            "post": {
                "operationId": "createFit",
                "summary": "Submit a fit; it is queued and runs on a worker",
                "description": (
                    "Commits the fit, then wakes a worker; the answer never waits for the fit. "
                    f"Limits: 2 to {limits['points']} points, 1 to {limits['epochs']} epochs, "
                    f"{limits['labels']} labels, a body of at most {limits['body']} bytes. "
                    "With an `Idempotency-Key`, the same key and body answer 200 with the "
                    "original fit; the same key with another body is 409."
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "requestBody": {"required": True, "content": _json("FitCreate")},
                "responses": {
                    "202": {
                        **fit_ok,
                        "description": "Accepted and queued",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "200": {**fit_ok, "description": "An idempotent replay: the original fit"},
                    **_problems("400", "409", "413", "415", "422", "503", "507"),
                },
            },
            "get": {
                "operationId": "listFits",
                "summary": "List fits, newest first",
                "parameters": query_parameters(FitListQuery),
                "responses": {
                    "200": {"description": "A page of fits", "content": _json("FitList")},
                    **_problems("422"),
                },
            },
        },
        "/v1/preflight": {
            "post": {
                "operationId": "preflightFit",
                "summary": "Check a fit before submitting it: will its learning rate diverge?",
                "description": "Takes the body of `POST /v1/fits` and stores nothing. Answers the learning "
                "rate the fit would run with, the data's stable limit `lr_max` and condition number, whether "
                "plain gradient descent (gd, sgd) stays stable at that rate, the warnings the fit would carry, "
                "and, when it would diverge, the options that converge (`learning_rate` and `epochs` "
                '`"auto"`, `normalize` `"standardize"`). The CLI and the Python client ask it before '
                "each fit.",
                "requestBody": {"required": True, "content": _json("FitCreate")},
                "responses": {
                    "200": {"description": "The pre-flight", "content": _json("FitPreflight")},
                    **_problems("400", "413", "415", "422"),
                },
            },
        },
        "/v1/fits/{fit_id}": {
            "get": {
                "operationId": "getFit",
                "summary": "A fit, with its progress and result",
                "description": "With `?wait=S` the answer waits until the fit has ended (or S seconds): "
                "a client learns of the end at once without polling. Another tenant's id is 404 at once.",
                "parameters": [_id_param(), *query_parameters(WaitQuery)],
                "responses": {"200": fit_ok, **_problems("404")},
            },
        },
        "/v1/fits/{fit_id}/losses": {
            "get": {
                "operationId": "getFitLosses",
                "summary": "The loss of every epoch recorded so far",
                "description": "`loss[i]` is the loss of epoch `start + i`, taken before that epoch's update "
                "(the book's order: epoch 1's is the loss of the initial parameters, and the last epoch's is "
                "the result's `last_epoch_loss`, not its `loss`). `?format=csv` or "
                "`Accept: text/csv` streams the whole series as `epoch,loss`. "
                "`?points=N` (with `start`, `end`) returns at most N consecutive "
                "buckets covering every epoch of the range instead, each with its "
                "first and last epoch and the min, max and last loss. A fit with a "
                "validation split also has `val_loss` (same indexing; a `val_loss` "
                "CSV column; `val_min`, `val_max`, `val_last` per bucket).",
                "parameters": [_id_param(), *query_parameters(LossesQuery)],
                "responses": {
                    "200": {
                        "description": "A page of losses, or with `points` the buckets",
                        "content": {
                            "application/json": {"schema": {"oneOf": [_ref("LossPage"), _ref("LossBuckets")]}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_problems("404", "410", "422"),
                },
            },
        },
        "/v1/fits/{fit_id}/data": {
            "get": {
                "operationId": "getFitData",
                "summary": "The readings the fit was given (t_u, t_c) and the indices held out for validation",
                "parameters": [_id_param()],
                "responses": {
                    "200": {"description": "The fit's data", "content": _json("FitData")},
                    **_problems("404"),
                },
            },
        },
        "/v1/fits/{fit_id}/cancel": {
            "post": {
                "operationId": "cancelFit",
                "summary": "Cancel a queued or running fit (a running one stops at its "
                "next checkpoint; its losses so far stay readable)",
                "parameters": [_id_param()],
                "responses": {"202": fit_ok, **_problems("404", "409")},
            },
        },
        "/v1/fits/{fit_id}/predict": {
            "post": {
                "operationId": "predict",
                "summary": "t_c = w_raw * t_u + b_raw",
                "description": (
                    "With `interval` (e.g. 0.95), also `lower` and `upper`: the "
                    "least-squares prediction interval for a new reading, centred on "
                    "the fit's line (Student's t, n - 2 degrees of freedom). A reading whose "
                    "prediction or interval on this fit's line would pass float64's range is 409 "
                    "(`prediction-out-of-range`) naming it (`t_u[3]`). Every answer carries the fit's `converged`. "
                    "An `interval` on a fit that has not converged is 409 (the interval belongs "
                    "to the least-squares line, not to this one) unless `allow_unconverged` is "
                    "true: then `lower` and `upper` span the least-squares prediction's interval "
                    "and the fit's own prediction widened by the same half-width, so the gap "
                    "between the two lines is inside them (`bounds_include_gap`: true). An `interval` on "
                    "a fit with fewer than 3 points, or with t_u all equal, is 409 (`no-interval`): its data "
                    "do not determine one."
                ),
                "parameters": [_id_param()],
                "requestBody": {"required": True, "content": _json("PredictRequest")},
                "responses": {
                    "200": {"description": "Calibrated values", "content": _json("Prediction")},
                    **_problems("400", "404", "409", "415", "422"),
                },
            },
        },
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "Submit many fits; validated whole, nothing stored if one is invalid",
                "description": (
                    "JSON: `{defaults, fits: [...]}`, each fit overriding any default; each fit merged "
                    "with the defaults must itself be a valid fit (422 naming `fits[i]` otherwise). CSV "
                    "(`Content-Type: text/csv`), or Parquet (`application/vnd.apache.parquet`), the same columns: long "
                    "format `series,t_u,t_c`, one fit per series (its label `series`, and its `instrument` unless an "
                    "`instrument` column names another), defaults and `callback_url` as query parameters "
                    f"({', '.join(CSV_BATCH_DEFAULTS)}). At most "
                    f"{limits['batch_fits']} fits and {limits['batch_points']} points (413 over). "
                    "Every limit is checked as the body is read: a series (or a JSON array) past the points "
                    "of one fit is refused at the rows that pass it (413 naming the series, or `fits[i]`); a "
                    "JSON field other than `fits` takes at most 1 MiB. A CSV row with more cells than the "
                    "header is 400 naming its line. Each batch has a share of its API process's parse budget, "
                    "growing as it is read (24 bytes per reading, 4 KiB per fit; 503 with Retry-After, "
                    "`quota: parse_memory_bytes`, past it). "
                    "`Idempotency-Key` works as for fits."
                ),
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        **_json("BatchCreate"),
                        "text/csv": {
                            "schema": {"type": "string", "pattern": CSV_PATTERN},
                            "example": "series,t_u,t_c\nA17,35.7,0.5\nA17,55.9,14.0\n",
                        },
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "202": {"description": "Accepted", "content": _json("BatchPublic")},
                    "200": {"description": "An idempotent replay", "content": _json("BatchPublic")},
                    **_problems("400", "409", "413", "415", "422", "503", "507"),
                },
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "operationId": "getBatch",
                "summary": "A batch's status and its fits' counts per status",
                "description": "With `?wait=S` the answer waits until the batch is completed or cancelled "
                "(or S seconds). Another tenant's id is 404 at once.",
                "parameters": [_id_param("batch_id"), *query_parameters(WaitQuery)],
                "responses": {"200": {"description": "The batch", "content": _json("BatchPublic")}, **_problems("404")},
            },
        },
        "/v1/batches/{batch_id}/fits": {
            "get": {
                "operationId": "getBatchFits",
                "summary": "The batch's fits, paginated; ?format=csv streams one result line per fit",
                "description": "CSV (and Parquet) columns: " + ",".join(RESULT_COLUMNS) + ". `drift_p_value`, "
                "`drift_flagged` and `as_found_rms` compare a succeeded fit naming an instrument with that "
                "instrument's calibration before it (empty for its first).",
                "parameters": [_id_param("batch_id"), *query_parameters(BatchFitsQuery)],
                "responses": {
                    "200": {
                        "description": "Fits",
                        "content": {
                            **_json("FitList"),
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **_problems("404", "422"),
                },
            },
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": {
                "operationId": "cancelBatch",
                "summary": "Cancel every queued or running fit of the batch",
                "parameters": [_id_param("batch_id")],
                "responses": {
                    "202": {"description": "The batch", "content": _json("BatchPublic")},
                    **_problems("404", "409"),
                },
            },
        },
        "/v1/usage": {
            "get": {
                "operationId": "getUsage",
                "summary": "The tenant's fits, stored loss bytes and fit-epochs in flight, with its quotas",
                "responses": {"200": {"description": "Usage", "content": _json("Usage")}},
            },
        },
        **_instrument_paths(),
        "/v1/webhooks/deliveries": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "Webhook deliveries, newest first, each with its attempts and their status codes",
                "description": "A fit or batch with a `callback_url` owes one delivery when it ends: its final JSON "
                'POSTed with `Calib-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the '
                "tenant's secret>` (`calib webhooks secret --tenant NAME` prints it), `Calib-Delivery` (this id) and "
                "`Calib-Event`. Any answer but 2xx, or none within the timeout, is retried with doubling delays "
                "(README: Webhooks) until CALIB_WEBHOOK_GIVE_UP_SECONDS (a day; at least an hour); redirects are not "
                "followed. Only hosts in CALIB_WEBHOOK_ALLOWED_HOSTS are accepted (422 otherwise), and a delivery "
                "connects only to public addresses unless the operator listed the address.",
                "parameters": query_parameters(DeliveryListQuery),
                "responses": {
                    "200": {"description": "A page", "content": _json("WebhookDeliveryList")},
                    **_problems("422"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "200 while the process serves",
                "responses": {"200": {"description": "Alive"}},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text: requests by route and status, fits by status, queue "
                "depth, the workers' chunk and fit durations (README: Operators)",
                "responses": {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "200 when the database and the broker answer",
                "responses": {"200": {"description": "Ready"}, **_problems("503")},
            }
        },
    }


def _instrument_param() -> dict[str, Any]:
    return {
        "name": "instrument_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": INSTRUMENT_PATTERN},
    }


# A readings CSV as POST /v1/apply reads it: the header, then instrument,t_u rows (numbers written
# plainly here; the API also reads exponents).
APPLY_PATTERN = rf"^instrument,t_u\r?\n(?:[A-Za-z0-9_.-]{{1,32}},{_NUMBER}\r?\n)+$"


def _instrument_paths() -> dict[str, Any]:
    instrument_ok = {"description": "The instrument", "content": _json("InstrumentPublic")}
    return {
        "/v1/instruments": {
            "get": {
                "operationId": "listInstruments",
                "summary": "The tenant's instruments by id, each with its current calibration",
                "description": "An instrument exists from the first fit that names it. `drifted=true`: only "
                "those whose current calibration is flagged (its drift p-value below the service's threshold).",
                "parameters": query_parameters(InstrumentListQuery),
                "responses": {"200": {"description": "A page", "content": _json("InstrumentList")}, **_problems("422")},
            }
        },
        "/v1/instruments/{instrument_id}": {
            "get": {
                "operationId": "getInstrument",
                "summary": "An instrument's calibrations, newest first, each with its drift from the one before",
                "description": "A calibration is a succeeded fit naming the instrument, in the order the fits "
                "were submitted (`calibrated_at`). chi2 and p_value: (Δw_raw, Δb_raw) under the sum of the "
                "two covariances, 2 degrees of freedom; as_found_rms: the previous line on the new data; "
                "as_left_rms: the new line on it (both over the points the line was fitted to). The history "
                "comes in pages of `history_limit` (100), newest first; `history_next` links the next.",
                "parameters": [_instrument_param(), *query_parameters(InstrumentQuery)],
                "responses": {"200": instrument_ok, **_problems("404", "422")},
            },
            "put": {
                "operationId": "updateInstrument",
                "summary": "Set the instrument's tolerance (largest acceptable as-found RMS)",
                "parameters": [_instrument_param()],
                "requestBody": {"required": True, "content": _json("InstrumentUpdate")},
                "responses": {"200": instrument_ok, **_problems("400", "404", "415", "422")},
            },
        },
        "/v1/instruments/{instrument_id}/predict": {
            "post": {
                "operationId": "predictInstrument",
                "summary": "Calibrated values on the instrument's current calibration (or the one current `at`)",
                "description": "As POST /v1/fits/{fit_id}/predict on that calibration's fit; `fit_id` says "
                "which. 409 (`no-calibration`) when it had none at that time.",
                "parameters": [_instrument_param(), *query_parameters(AtQuery)],
                "requestBody": {"required": True, "content": _json("PredictRequest")},
                "responses": {
                    "200": {"description": "Calibrated values", "content": _json("Prediction")},
                    **_problems("400", "404", "409", "415", "422"),
                },
            }
        },
        "/v1/apply": {
            "post": {
                "operationId": "apply",
                "summary": "Calibrate readings: CSV instrument,t_u in, instrument,t_u,t_c,lower,upper,fit_id out",
                "description": "Each reading on its instrument's current calibration, streamed in blocks "
                "(millions of rows in constant memory). Every row is checked before the first byte of the "
                "answer: an instrument unknown to the tenant (or not yet calibrated) is 422 naming its `row` "
                "(row 1 is the first reading); with `interval`, a calibration that has not converged or "
                "cannot give bounds is 409 naming the row. Without `interval`, lower and upper are empty. "
                "At most `max_fits_per_batch` instruments in one request (413); each apply has a share of "
                "its API process's parse budget while it reads (503 with Retry-After past it).",
                "parameters": query_parameters(ApplyQuery),
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/csv": {
                            "schema": {"type": "string", "pattern": APPLY_PATTERN},
                            "example": "instrument,t_u\nTT-101,35.7\nTT-101,55.9\n",
                        }
                    },
                },
                "responses": {
                    "200": {"description": "Calibrated rows", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    **_problems("400", "409", "413", "415", "422", "503"),
                },
            }
        },
    }


_REQUESTS = {"FitOptions", "FitCreate", "BatchCreate", "PredictRequest"}


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
        "description": "POSTed the final JSON, signed, when it ends (README: Webhooks); only the schemes, "
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
    paths = _paths(limits)
    _link_created_objects(paths)
    for path, item in paths.items():
        if path.startswith("/v1/"):
            for operation in item.values():
                operation["security"] = [{"bearer": []}]
                # Any /v1 route: a parameter holding a control character is a 422 naming it.
                operation["responses"].update(_problems("401", "422", "429"))
                # gunicorn refuses a request line past its limit (limit_request_line, 4094 bytes)
                # before the app sees it, in its own plain form.
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


@bp.get("/openapi.json")
def openapi_json() -> dict[str, Any]:
    return document()


@bp.get("/docs")
def docs() -> Response:
    # A page of its own (services/api/templates/docs.html) that renders /openapi.json in the browser.
    return Response(render_template("docs.html"), mimetype="text/html")
