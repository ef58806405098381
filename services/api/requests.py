"""Reading request bodies and query parameters into typed values, or a problem naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from services.api.bodies import json_within_limits
from services.api.problems import Problem, from_validation, invalid_field
from shared.contract.queries import Query
from shared.contract.schemas import has_control_characters

M = TypeVar("M", bound=BaseModel)


def json_body() -> Any:
    """The JSON body, read within the service's limits (services.api.bodies)."""
    if not request.mimetype or request.mimetype != "application/json":
        raise Problem(415, f"send application/json, not {request.mimetype or 'no Content-Type'}")
    return json_within_limits(current_app.extensions["calib"].settings)


def parse(model: type[M], data: Any, context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise from_validation(exc) from exc


Q = TypeVar("Q", bound=Query)


def query(model: type[Q], args: Mapping[str, str] | None = None) -> Q:
    """This request's query parameters (or `args`) as `model` says; a 422 naming the first bad
    one (`query.limit`). The same model lists them in the OpenAPI document."""
    try:
        return model.model_validate(request.args.to_dict() if args is None else dict(args))
    except ValidationError as exc:
        raise from_validation(exc, prefix=["query"]) from exc


def refuse_control_characters() -> None:
    """Before every request: a path or query parameter holding NUL or another control character
    is a 422 naming it. (PostgreSQL refuses NUL in any text, so such an id would otherwise
    reach the database as an error; no id, status, cursor or label this API reads has one.)"""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and has_control_characters(value):
            raise invalid_field(["path", name], "holds a control character")
    for name, value in request.args.items(multi=True):
        if has_control_characters(name) or has_control_characters(value):
            raise invalid_field(["query", name], "holds a control character")
