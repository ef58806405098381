"""Every failure as RFC 9457 problem+json: one exception type, one set of handlers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from shared.contract.responses import serve
from shared.contract.schemas import DataTooLarge
from shared.contract.schemas import Problem as ProblemBody

log = logging.getLogger("calib.api")

TITLES = {
    400: "Malformed request",
    401: "Not authenticated",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid field",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    507: "Insufficient storage",
}


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or TITLES.get(status, "error").lower().replace(" ", "-")
        self.errors = list(errors) if errors is not None else None
        self.retry_after = retry_after
        self.extra = extra or {}

    def response(self) -> Response:
        body: dict[str, Any] = {
            "type": f"urn:calib:problem:{self.slug}",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        resp = jsonify(serve(ProblemBody, body))
        resp.status_code = self.status
        resp.mimetype = "application/problem+json"
        if self.retry_after is not None:
            resp.headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="calib"'
        return resp


def invalid_field(loc: Sequence[Any], msg: str, detail: str | None = None) -> Problem:
    """422 naming one field; `detail` defaults to the field, dotted as in every other 422, and msg."""
    return Problem(
        422, detail or f"{_dotted(loc)}: {msg}", slug="invalid-field", errors=[{"loc": list(loc), "msg": msg}]
    )


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _named_field(ctx: dict[str, Any] | None) -> list[str | int]:
    """A check across fields (a model validator) names its field in ctx, dotted
    ("validation.indices.3"): the loc a client expects, list positions as integers."""
    field = (ctx or {}).get("field")
    if not field:
        return []
    return [int(part) if part.isdigit() else part for part in str(field).split(".")]


def from_validation(exc: ValidationError, prefix: Sequence[Any] = ()) -> Problem:
    """422 naming every bad field; 413 when what is wrong is a size limit."""
    errors = []
    too_large = False
    for err in exc.errors(include_url=False, include_input=False):
        own = [*err["loc"], *_named_field(err.get("ctx"))]
        loc = [*prefix, *own]
        errors.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
        too_large |= isinstance((err.get("ctx") or {}).get("error"), DataTooLarge)
    return invalid_fields(errors, too_large)


def invalid_fields(errors: list[dict[str, Any]], too_large: bool = False) -> Problem:
    """422 (413 when what is wrong is a size limit) naming every one of `errors`, the first in its detail."""
    first = errors[0]
    detail = f"{_dotted(first['loc'])}: {first['msg']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    if too_large:
        return Problem(413, detail, slug="data-too-large", errors=errors)
    return Problem(422, detail, slug="invalid-field", errors=errors)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return exc.response()

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        problem = Problem(status, exc.description or TITLES.get(status, "error"))
        resp = problem.response()
        if status == 405 and exc.get_response().headers.get("Allow"):
            resp.headers["Allow"] = exc.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Database or broker trouble is a 503 the client may retry; anything else is our bug.
        from sqlalchemy.exc import DataError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        if isinstance(exc, OperationalError | PoolTimeout):
            log.warning("database unavailable: %s", exc)
            return Problem(
                503, "the database is not answering; retry shortly", slug="dependency-unavailable", retry_after=5
            ).response()
        if isinstance(exc, DataError):
            # A value the database refuses (the checks above it should have named it first).
            log.warning("value refused by the database: %s", exc)
            return Problem(
                422, "a value of this request cannot be stored or searched for", slug="invalid-field"
            ).response()
        log.exception("unhandled error")
        return Problem(500, "internal error").response()
