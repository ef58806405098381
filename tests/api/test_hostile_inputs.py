"""No input gives a 500: NUL, control characters, quotes, huge numbers and long strings in every
path and query parameter of every route (from the app's own URL map), on both backends, with
the API's token and with the dashboard's cookie; and the dashboard renders a fit whatever of
its figures are null."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from services.api.auth import COOKIE
from services.worker import runner
from shared.store.models import Fit

HOSTILE = [
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f",
    "\n",
    '"',
    'a"b:c',
    "k:\x00",
    "\x00:v",
    "%",
    "'; --",
    "9" * 400,
    "-1",
    "1e309",
    "NaN",
    "",
    "x" * 5000,
    "../..",
    "\u202e",
    "00000000-0000-4000-8000-000000000000",
]
# Every query parameter a route of this API reads.
QUERY = [
    "status",
    "batch_id",
    "label",
    "limit",
    "cursor",
    "start",
    "end",
    "points",
    "format",
    "epochs",
    "learning_rate",
    "input_scale",
    "optimizer",
    "validation_fraction",
    "early_stopping_patience",
    "wait",
]


def _routes(client: FlaskClient) -> list[tuple[str, str]]:
    """(method, rule) for every route but static files."""
    return [
        (method, rule.rule)
        for rule in client.application.url_map.iter_rules()
        if "static" not in rule.rule
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]


def _filled(rule: str, value: str) -> str:
    quoted = (
        "".join(ch if ch.isalnum() or ch in "-_" else f"%{ord(ch):02X}" if ord(ch) < 128 else ch for ch in value) or "x"
    )
    return re.sub(r"<[^>]+>", quoted, rule)


def _check(client: FlaskClient, method: str, path: str, query: dict[str, str] | None = None) -> None:
    body = {"t_u": [1.0, 2.0], "t_c": [1.0, 2.0]} if method in ("POST", "PUT") else None
    r = client.open(path, method=method, query_string=query, json=body)
    assert r.status_code < 500, (method, path, query, r.get_data(as_text=True)[:300])


def test_hostile_path_and_query_parameters_never_get_a_5xx(make_client: Callable[..., FlaskClient]) -> None:
    # A budget no test exhausts: a 429 would hide the answer under test.
    client = make_client("tenant-a", rate_limit="1000000/second", anonymous_rate_limit="1000000/second")
    fit_id = client.post("/v1/fits", json={"t_u": [1.0, 2.0, 3.0], "t_c": [1.0, 2.0, 4.0]}).get_json()["id"]
    cookie = make_client("tenant-a", rate_limit="1000000/second", anonymous_rate_limit="1000000/second")
    token = cookie.environ_base.pop("HTTP_AUTHORIZATION").split()[1]
    assert cookie.post("/ui/login", data={"token": token}).status_code == 302  # a dashboard session
    assert cookie.get_cookie(COOKIE) is not None
    for method, rule in _routes(client):
        for value in HOSTILE:  # every path parameter
            _check(client, method, _filled(rule, value))
            if method == "GET":
                _check(cookie, method, _filled(rule, value))
        for name in QUERY:  # every query parameter, on a real fit's id
            for value in HOSTILE[:10]:
                _check(client, method, _filled(rule, fit_id), {name: value})
    # Hostile label keys and values in bodies are refused by name.
    r = client.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [1.0, 2.0], "labels": {"a\x00": "b"}})
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"][0] == "labels"
    r = client.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [1.0, 2.0], "labels": {"k": "v\x00"}})
    assert r.status_code == 422


def test_the_dashboard_renders_a_fit_whose_figures_are_null(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("tenant-a")
    # t_u all equal: no condition number, no R², no standard errors; the fit still runs.
    fit_id = client.post("/v1/fits", json={"t_u": [5.0, 5.0, 5.0], "t_c": [1.0, 2.0, 3.0], "epochs": 50}).get_json()[
        "id"
    ]
    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        chunk_id = session.scalar(sa.select(Fit.chunk_id).where(Fit.id == fit_id))
    runner.run_chunk(svc.db, svc.settings, chunk_id, torch.device("cpu"))
    fit = client.get(f"/v1/fits/{fit_id}").get_json()
    assert fit["status"] == "succeeded" and fit["condition_number"] is None and fit["result"]["r2"] is None
    page = client.get(f"/ui/fits/{fit_id}")
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    assert "—" in page.get_data(as_text=True)
    assert client.get("/ui/").status_code == 200
