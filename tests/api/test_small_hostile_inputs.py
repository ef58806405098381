"""The smaller hostile inputs of issue 22, each with its fix: label keys that no JSON path can hold,
the anonymous budget of a whole IPv6 /64, the embedded data directory readable by its owner only,
CSV cells that a spreadsheet would run as formulas, and legal values past a float's square."""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api.limits import budget_key
from services.api.ui import histogram
from shared.runtime.settings import Settings
from shared.store.db import Database
from tests.in_process import run_batch, run_fit

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
    # Found by schemathesis: a \r alone inside the header made the csv module raise (a 500). A \r
    # alone ends a line, as the csv module reads it: this header names "ser" only.
    body = b"ser\ries,t_u,t_c\nA,1,2\nA,2,3\n"
    r = client.post("/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and r.get_json()["type"].endswith("malformed"), r.get_json()
    assert r.get_json()["detail"] == "the CSV header must name the columns series,t_u,t_c"


def test_a_csv_batch_whose_lines_end_in_a_carriage_return_alone_is_read(client: FlaskClient) -> None:
    # Found by the CSV reader's fuzzer: classic Mac line breaks (still written by some spreadsheets)
    # were a 400 ("the CSV's header line cannot be read": the header was read up to a \n). The rows
    # are counted as they arrive (the table's room and the rows' limit) by the same line breaks.
    rows = "".join(f"A,{u},{2 * u + 1}\r" for u in range(10)) + "B,1,2\rB,2,3"
    r = client.post("/v1/batches", data="series,t_u,t_c\r" + rows, headers={"Content-Type": "text/csv"})
    assert r.status_code == 202, r.get_json()
    fits = client.get(f"/v1/batches/{r.get_json()['id']}/fits").get_json()["items"]
    points = {fit["labels"]["series"]: client.get(f"/v1/fits/{fit['id']}/data").get_json() for fit in fits}
    assert points["A"]["t_c"] == [2.0 * u + 1 for u in range(10)] and points["B"]["t_u"] == [1.0, 2.0]


def test_a_csv_batch_of_a_header_alone_has_no_data_rows(client: FlaskClient) -> None:
    # Found by the CSV reader's fuzzer: without a final line break Arrow's words came back ("Empty CSV
    # file or block: cannot infer number of columns"); with one, calib's.
    for body in (b"series,t_u,t_c", b"\xef\xbb\xbfseries,t_u,t_c", b"series,t_u,t_c\n", b"series,t_u,t_c\r"):
        r = client.post("/v1/batches", data=body, headers={"Content-Type": "text/csv"})
        assert (r.status_code, r.get_json()["detail"]) == (400, "the CSV has no data rows"), body


def test_a_csv_header_naming_a_column_twice_is_a_400_naming_it(client: FlaskClient) -> None:
    # Found by the CSV reader's fuzzer: Arrow read the first of two `series` columns, the row-by-row
    # reader of earlier versions the last; which one is meant is the client's to say.
    for body, column in (
        ("series,t_u,t_c,series\nA,1,2,B\nA,2,3,B\n", "series"),
        ("instrument,series,t_u,t_c,instrument\nI,A,1,2,J\nI,A,2,3,J\n", "instrument"),
    ):
        r = client.post("/v1/batches", data=body, headers={"Content-Type": "text/csv"})
        assert r.status_code == 400, r.get_json()
        assert r.get_json()["errors"] == [{"loc": ["columns", column], "msg": "named more than once"}]
    body = "series,t_u,t_c,note,note\nA,1,2,x,y\nA,2,3,x,y\n"
    notes = client.post("/v1/batches", data=body, headers={"Content-Type": "text/csv"})
    assert notes.status_code == 202, notes.get_json()  # a column calib does not read may repeat


# Bodies whose strings are not UTF-8, or escape a lone surrogate (valid JSON, no valid string):
# ijson's C parser and Python's json module refused them with a UnicodeDecodeError, which nothing
# caught: a 500 for seven pairs of route and body, on five routes, before this test.
NOT_TEXT = [
    b'{"x": "\xff"}',
    b'{"x": "\\udc80"}',
    b'{"fits": "\xff"}',
    b'{"t_u": [1, 2], "t_c": [1, 2], "labels": {"\xff": "a"}}',
    b"\xff\xfe",
]


def test_a_body_that_is_not_text_is_never_a_5xx_on_any_api_route(client: FlaskClient) -> None:
    fit_id = client.post("/v1/fits", json={**GOOD, "instrument": "I1"}).get_json()["id"]
    app = client.application
    routes = [(rule.rule, method) for rule in app.url_map.iter_rules() for method in rule.methods or ()]
    # The API's routes (the dashboard's are forms and redirects).
    taking = sorted(
        (rule, method) for rule, method in routes if method in ("POST", "PUT", "PATCH") and rule.startswith("/v1/")
    )
    assert ("/v1/batches", "POST") in taking and ("/v1/fits", "POST") in taking
    for rule, method in taking:
        path = rule.replace("<fit_id>", fit_id).replace("<instrument_id>", "I1")
        for body in NOT_TEXT:
            answer = client.open(path, method=method, data=body, content_type="application/json")
            # A route that reads no body (cancel) does its work; every other answers a problem.
            assert answer.status_code < 500, (method, path, body, answer.get_data(as_text=True))
            assert answer.status_code < 300 or answer.mimetype == "application/problem+json", (method, path, body)


def test_a_string_that_is_not_text_is_named(client: FlaskClient) -> None:
    lone = client.post(
        "/v1/fits",
        data=b'{"t_u": [1, 2, 3], "t_c": [1, 2, 3.5], "instrument": "\\udc80"}',
        content_type="application/json",
    )
    assert lone.status_code == 422 and lone.get_json()["errors"][0]["loc"] == ["instrument"], lone.get_json()
    for body in (b'{"fits": [], "defaults": {"labels": {"a": "\xff"}}}', b'{"fits": "\xff"}'):
        answer = client.post("/v1/batches", data=body, content_type="application/json")
        assert answer.status_code == 400 and "not valid JSON" in answer.get_json()["detail"], answer.get_json()


def test_a_label_key_that_is_not_text_is_named(client: FlaskClient) -> None:
    # A value's str check refused a lone surrogate; a key went on to the JSON column and was a 500.
    fit = b'"t_u": [1, 2, 3], "t_c": [1, 2, 3.5], "labels": {"k\\ud800": "v"}'
    one = client.post("/v1/fits", data=b"{" + fit + b"}", content_type="application/json")
    assert one.status_code == 422 and one.get_json()["errors"][0]["loc"][0] == "labels", one.get_json()
    batch = client.post("/v1/batches", data=b'{"fits": [{' + fit + b"}]}", content_type="application/json")
    assert batch.status_code == 422 and batch.get_json()["errors"][0]["loc"][:3] == ["fits", 0, "labels"], (
        batch.get_json()
    )


@pytest.mark.parametrize("model", [{"kind": "line"}, {"kind": "polynomial", "degree": 2}])
@pytest.mark.parametrize("epochs", ["auto", 100])
def test_a_convergence_tolerance_past_floats_square_converges(
    client: FlaskClient, model: dict[str, object], epochs: object
) -> None:
    # Legal (any finite tolerance > 0), its square is past float's range: Python's ** raised
    # OverflowError in the worker, and the fit ended failed/internal (schemathesis, seed 11).
    body = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "normalize": "standardize"}
    created = client.post("/v1/fits", json=body | {"model": model, "epochs": epochs, "convergence_tolerance": 1e200})
    assert created.status_code == 202, created.get_json()
    run_fit(client, created.get_json()["id"])
    done = client.get(f"/v1/fits/{created.get_json()['id']}").get_json()
    assert done["status"] == "succeeded" and done["result"]["converged"] is True, done


def test_legal_readings_past_floats_square_end_the_fit_and_its_requests_answer(client: FlaskClient) -> None:
    # Found by fuzzing legal requests run in process: each was a fit failed as internal, or a 500.
    # sgd, "auto": each block's verdict squared an offset past float's range (OverflowError).
    tiny_t_u = [-5e-5, -3e-4, 8e-5, -2e-4, 1e-4]
    huge = {
        "t_u": tiny_t_u,
        "t_c": [-1.7e299, 9.7e299, -1.8e299, 7.4e299, 6.9e298],
        "epochs": "auto",
        "optimizer": "sgd",
    }
    created = client.post("/v1/fits", json=huge).get_json()["id"]
    run_fit(client, created)
    assert client.get(f"/v1/fits/{created}").get_json()["status"] == "diverged"
    # Not converged with an excess loss past float's range (stored as null): the 409 formatted None.
    body = {
        "t_u": [-3.77e299, -1.8e298],
        "t_c": [4.6e-301, 2.2e-301],
        "input_scale": -8.4e-301,
        "learning_rate": "auto",
    }
    fit = client.post("/v1/fits", json=body).get_json()["id"]
    run_fit(client, fit)
    done = client.get(f"/v1/fits/{fit}").get_json()
    assert done["result"]["converged"] is False and done["result"]["convergence"]["excess_loss"] is None, done
    refused = client.post(f"/v1/fits/{fit}/inverse", json={"t_c": [1.0]})
    assert refused.status_code == 409 and "past float64's range" in refused.get_json()["detail"], refused.get_json()


def test_a_presented_parameter_past_floats_range_is_served_as_null(client: FlaskClient) -> None:
    # Callendar–Van Dusen's A, B, C are coefficients over R0; here R0 is 0, so they are not finite
    # and are stored null. The result's schema said a parameter is a number: GET of the fit, the
    # fits listing and the batch's were a 500 (found by fuzzing legal batches).
    readings = {"t_u": [1000.0, 1e6, 1e6, 1000.0, 1000.001], "t_c": [-3e-161, 3e-161, 2e-161, 5e-161, -1e-162]}
    body = readings | {"model": {"kind": "callendar_van_dusen"}, "learning_rate": "auto"}
    fit = client.post("/v1/fits", json=body).get_json()["id"]
    run_fit(client, fit)
    done = client.get(f"/v1/fits/{fit}")
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json()["result"]["parameters"] == {"A": None, "B": None, "C": None, "R0": 0.0}
    assert client.get("/v1/fits").status_code == 200


def test_a_batch_page_whose_slopes_span_past_floats_range_renders(client: FlaskClient) -> None:
    # Slopes of +1e308 and -1e308 (input_scale 1e308 on readings near 1e-308): numpy's histogram
    # refused their range, and the batch's dashboard page was a 500 (found by fuzzing batches).
    up = {"t_u": [1e-308, 2e-308, 3e-308], "t_c": [1.0, 2.0, 3.0], "input_scale": 1e308, "epochs": 2000}
    down = up | {"t_c": [3.0, 2.0, 1.0]}
    batch = client.post("/v1/batches", json={"fits": [up, down]}).get_json()["id"]
    run_batch(client, batch)
    slopes = [fit["result"]["w_raw"] for fit in client.get(f"/v1/batches/{batch}/fits").get_json()["items"]]
    assert min(slopes) < -9e307 and max(slopes) > 9e307, slopes  # their difference is past float64
    page = client.get(f"/ui/batches/{batch}")
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    assert "w_raw (slope) of the 2 succeeded fits" in page.get_data(as_text=True)
    # And a range narrower than the floats between its ends allow 24 bins of: one bar, not a 500.
    narrow = histogram("w", np.array([1e300, 1e300 * (1 + 2e-16)]))
    assert [bar["count"] for bar in narrow["bars"]] == [2] and narrow["low"] < narrow["high"]
