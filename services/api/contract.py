"""Each route's part of the HTTP contract, declared on its view: `@operation(...)` names the
operation, its query model, its request body, its responses and the problems it answers. The
paths of /openapi.json are read off the app's URL map (services/api/openapi.py), so a route and
its document are written once, in one place; a route without a declaration is not in the document
(the dashboard, /openapi.json and /docs themselves).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask

from shared.contract.queries import ID_PATTERN, Query
from shared.contract.schemas import INSTRUMENT_PATTERN

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

# The service's limits that descriptions quote (services/api/openapi.document fills them).
Limits = dict[str, int]
View = TypeVar("View", bound=Callable[..., Any])


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": ref(name)}}


def problems(*codes: str) -> dict[str, Any]:
    return {
        code: {"description": PROBLEM_CODES[code], "content": {"application/problem+json": {"schema": ref("Problem")}}}
        for code in codes
    }


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
CSV_TEXT = {"text/csv": {"schema": {"type": "string"}}}
# A number in the patterns of CSV bodies: a plain decimal (the API also reads exponents, which a
# pattern would make unreadable).
NUMBER = r"-?(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?"
PARQUET = {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}


def _path_parameter(name: str) -> dict[str, Any]:
    """A path parameter by its name in the rule: ids of fits and batches, or an instrument's name."""
    if name == "instrument_id":
        schema = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": INSTRUMENT_PATTERN}
    else:
        schema = {"type": "string", "pattern": ID_PATTERN}
    return {"name": name, "in": "path", "required": True, "schema": schema}


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


@dataclass(frozen=True)
class Operation:
    """One operation of the document. `description` may depend on the service's limits;
    `responses` are the answers of its own, to which `problems` adds the problem+json ones."""

    id: str
    summary: str
    responses: dict[str, Any]
    description: str | Callable[[Limits], str] = ""
    query: type[Query] | None = None
    body: dict[str, Any] | None = None  # the request body's content, by media type
    headers: tuple[dict[str, Any], ...] = ()
    problems: tuple[str, ...] = ()

    def spec(self, path_parameters: list[str], limits: Limits) -> dict[str, Any]:
        out: dict[str, Any] = {"operationId": self.id, "summary": self.summary}
        description = self.description(limits) if callable(self.description) else self.description
        if description:
            out["description"] = description
        parameters = [
            *(_path_parameter(name) for name in path_parameters),
            *(query_parameters(self.query) if self.query else []),
            *self.headers,
        ]
        if parameters:
            out["parameters"] = parameters
        if self.body is not None:
            out["requestBody"] = {"required": True, "content": copy.deepcopy(self.body)}
        out["responses"] = {**copy.deepcopy(self.responses), **problems(*self.problems)}
        return out


def operation(
    id: str,  # noqa: A002  (OpenAPI's word)
    summary: str,
    responses: dict[str, Any],
    *,
    description: str | Callable[[Limits], str] = "",
    query: type[Query] | None = None,
    body: dict[str, Any] | None = None,
    headers: tuple[dict[str, Any], ...] = (),
    problems: tuple[str, ...] = (),
) -> Callable[[View], View]:
    """Declare the view's operation (put it under the route's decorator)."""
    declared = Operation(id, summary, responses, description, query, body, headers, problems)

    def mark(view: View) -> View:
        view.operation = declared  # type: ignore[attr-defined]
        return view

    return mark


def declared(view: Callable[..., Any]) -> Operation | None:
    found = getattr(view, "operation", None)
    return found if isinstance(found, Operation) else None


_CONVERTED = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def paths(app: Flask, limits: Limits) -> dict[str, Any]:
    """The document's paths: every rule of the app whose view declares its operation."""
    out: dict[str, Any] = {}
    for rule in app.url_map.iter_rules():
        found = declared(app.view_functions[rule.endpoint])
        if found is None:
            continue
        names = _CONVERTED.findall(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.setdefault(_CONVERTED.sub(r"{\1}", rule.rule), {})[method.lower()] = found.spec(names, limits)
    return out
