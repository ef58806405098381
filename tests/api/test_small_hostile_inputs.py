"""The smaller hostile inputs of issue 22, each with its fix: label keys that no JSON path can hold,
the anonymous budget of a whole IPv6 /64, the embedded data directory readable by its owner only,
and CSV cells that a spreadsheet would run as formulas."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api.limits import budget_key
from shared.runtime.settings import Settings
from shared.store.db import Database

GOOD = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0]}


def test_any_label_key_filters_without_an_error(client: FlaskClient) -> None:
    weird = client.post("/v1/fits", json={**GOOD, "labels": {'we"ird': "v", "plain": "x"}}).get_json()["id"]
    for label in ('x":1', 'we"ird:w', "a.b[0]:c", "$:1"):
        answer = client.get("/v1/fits", query_string={"label": label})
        assert answer.status_code == 200 and answer.get_json()["items"] == [], (label, answer.get_data(as_text=True))
    found = client.get("/v1/fits", query_string={"label": 'we"ird:v'}).get_json()["items"]
    assert [fit["id"] for fit in found] == [weird]
    assert [f["id"] for f in client.get("/v1/fits", query_string={"label": "plain:x"}).get_json()["items"]] == [weird]


def test_the_anonymous_budget_is_per_ipv6_64(make_client: Callable[..., FlaskClient]) -> None:
    assert budget_key("2001:db8:1:2:aaaa::1") == budget_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert budget_key("2001:db8:1:3::1") != budget_key("2001:db8:1:2::1")
    assert budget_key("198.51.100.7") == "198.51.100.7" == budget_key("::ffff:198.51.100.7")
    client = make_client(anonymous_rate_limit="3/minute")
    client.environ_base.pop("HTTP_AUTHORIZATION")
    # A /64 of its own per run: on Redis the counters outlive the test's app.
    prefix = f"2001:db8:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"
    statuses = [
        client.get("/v1/fits", environ_base={"REMOTE_ADDR": f"{prefix}::{i + 1:x}"}).status_code for i in range(5)
    ]
    assert statuses == [401, 401, 401, 429, 429]  # five addresses of one /64, one budget


def test_the_embedded_data_directory_is_the_owners_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "calib")
    db = Database.from_settings(settings)
    with db.session(write=True) as session:
        session.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    db.dispose()
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    for found in settings.data_dir.iterdir():
        assert stat.S_IMODE(found.stat().st_mode) == 0o600, found


def test_csv_results_never_carry_a_formula(client: FlaskClient) -> None:
    import csv
    import io

    rows = "".join(
        f"{name},{u},{c}\n" for name in ("=HYPERLINK(1)", "@SUM(A1)", "-2+3", "ok") for u, c in ((1, 2), (2, 3))
    )
    batch = client.post("/v1/batches", data="series,t_u,t_c\n" + rows, content_type="text/csv").get_json()
    answer = client.get(f"/v1/batches/{batch['id']}/fits?format=csv")
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    series = sorted(row["series"] for row in csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert series == ["'-2+3", "'=HYPERLINK(1)", "'@SUM(A1)", "ok"]


def test_applied_rows_never_carry_a_formula(client: FlaskClient) -> None:
    """An instrument named like a formula comes back from POST /v1/apply as text."""
    import csv
    import io

    from tests.in_process import run_batch

    names = ("=HYPERLINK(1)", "@SUM(A1)", "-2+3", "ok")
    rows = "".join(f"{name},{u},{2 * u + 1}\n" for name in names for u in (1, 2, 3))
    batch = client.post(
        "/v1/batches?epochs=auto&learning_rate=auto&normalize=standardize",
        data="series,t_u,t_c\n" + rows,
        content_type="text/csv",
    ).get_json()
    run_batch(client, batch["id"])
    readings = "instrument,t_u\n" + "".join(f"{name},1.5\n" for name in names)
    answer = client.post("/v1/apply", data=readings, content_type="text/csv")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    applied = sorted(row["instrument"] for row in csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert applied == ["'-2+3", "'=HYPERLINK(1)", "'@SUM(A1)", "ok"]


def test_a_csv_batch_whose_header_holds_a_lone_carriage_return_is_a_400(client: FlaskClient) -> None:
    # Found by schemathesis: the header line is read up to its \n, and a \r alone inside it made the
    # csv module raise (a 500).
    body = b"ser\ries,t_u,t_c\nA,1,2\nA,2,3\n"
    r = client.post("/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and r.get_json()["type"].endswith("malformed"), r.get_json()
    assert "header line" in r.get_json()["detail"]
