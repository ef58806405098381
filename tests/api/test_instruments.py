"""Instruments (API.md "Instruments"), on both backends: two nights of one plant's thermometers,
drift verdicts, histories, tolerances, predictions at a time, and the statistics against scipy
and statsmodels computed here from the readings."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.csv as pa_csv
import pytest
import statsmodels.api as sm
from flask.testing import FlaskClient
from scipy import stats

from tests.in_process import run_batch, run_fit

INSTRUMENTS = [f"TT-{100 + i}" for i in range(50)]
DRIFTED = {"TT-103", "TT-117", "TT-128", "TT-136", "TT-149"}
POINTS = np.linspace(0.0, 100.0, 20)
FIT_OPTIONS = "epochs=auto&max_epochs=20000&normalize=standardize&learning_rate=auto"


def night(seed: int, drifted: set[str]) -> str:
    """One night's CSV: each thermometer read at 20 reference temperatures. Its error is a fixed,
    repeatable nonlinearity (the same every night, SD 0.05) plus a small fresh noise (SD 0.002):
    an instrument that did not change gives nearly the same line, far inside its uncertainty.
    A drifted one reads 0.4 degrees higher, and 1% steeper: many standard errors away."""
    fresh = np.random.default_rng(seed)
    lines = ["series,t_u,t_c"]
    for i, name in enumerate(INSTRUMENTS):
        own = np.random.default_rng(1000 + i)
        w, b = 0.5 + own.normal(0, 0.01), -17.0 + own.normal(0, 0.5)
        pattern = own.normal(0, 0.05, POINTS.size)
        t_c = POINTS
        t_u = (t_c - b) / w + (pattern + fresh.normal(0, 0.002, POINTS.size)) / w
        if name in drifted:
            t_u = (t_c - (b + 0.4)) / (w * 1.01) + pattern / w
        lines += [f"{name},{float(u)!r},{float(c)!r}" for u, c in zip(t_u, t_c, strict=True)]
    return "\n".join(lines) + "\n"


def submit_night(client: FlaskClient, seed: int, drifted: set[str]) -> str:
    r = client.post(f"/v1/batches?{FIT_OPTIONS}", data=night(seed, drifted), content_type="text/csv")
    assert r.status_code == 202, r.get_json()
    batch_id: str = r.get_json()["id"]
    assert run_batch(client, batch_id) == len(INSTRUMENTS)
    return batch_id


def test_two_nights_flag_exactly_the_drifted_instruments(client: FlaskClient) -> None:
    first = submit_night(client, 1, set())
    second = submit_night(client, 2, DRIFTED)

    assert client.get(f"/v1/batches/{first}").get_json()["drifted"] == 0
    assert client.get(f"/v1/batches/{second}").get_json()["drifted"] == 5
    second_fits = {
        fit["instrument"]: fit["id"] for fit in client.get(f"/v1/batches/{second}/fits?limit=100").get_json()["items"]
    }
    flagged = set()
    for name in INSTRUMENTS:
        body = client.get(f"/v1/instruments/{name}").get_json()
        assert body["calibrations"] == 2 and len(body["history"]) == 2
        assert body["current"] == body["history"][0]
        assert body["current"]["fit_id"] == second_fits[name]
        assert body["history"][1]["drift"] is None  # the first calibration has nothing to drift from
        drift = body["current"]["drift"]
        if drift["flagged"]:
            flagged.add(name)
            assert drift["p_value"] < 1e-6
        else:
            assert drift["p_value"] > 0.5  # unambiguous: far from the threshold either way
    assert flagged == DRIFTED

    listed = client.get("/v1/instruments?drifted=true").get_json()
    assert [item["id"] for item in listed["items"]] == sorted(DRIFTED) and listed["next"] is None
    everything = client.get("/v1/instruments?limit=20").get_json()
    pages = [item["id"] for item in everything["items"]]
    while everything["next"]:
        everything = client.get(everything["next"]).get_json()
        pages += [item["id"] for item in everything["items"]]
    assert pages == sorted(INSTRUMENTS)

    csv_text = client.get(f"/v1/batches/{second}/fits?format=csv").get_data(as_text=True)
    rows = list(__import__("csv").DictReader(io.StringIO(csv_text)))
    assert {row["instrument"] for row in rows if row["drift_flagged"] == "true"} == DRIFTED
    assert all(row["drift_flagged"] == "false" for row in rows if row["instrument"] not in DRIFTED)
    assert all(float(row["as_found_rms"]) > 0 for row in rows)


def _fit_of(client: FlaskClient, t_u: np.ndarray, t_c: np.ndarray, instrument: str) -> dict[str, Any]:
    body = {
        "t_u": t_u.tolist(),
        "t_c": t_c.tolist(),
        "instrument": instrument,
        "epochs": "auto",
        "normalize": "standardize",
        "learning_rate": "auto",
    }
    fit_id = client.post("/v1/fits", json=body).get_json()["id"]
    run_fit(client, fit_id)
    fit: dict[str, Any] = client.get(f"/v1/fits/{fit_id}").get_json()
    assert fit["status"] == "succeeded" and fit["instrument"] == instrument
    return fit


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_drift_statistics_match_scipy_and_statsmodels(client: FlaskClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n1, n2 = rng.integers(5, 40, size=2)
    u1, u2 = rng.uniform(-20, 80, n1), rng.uniform(-20, 80, n2)
    c1 = 0.55 * u1 - 17 + rng.normal(0, 1.5, n1)
    c2 = 0.56 * u2 - 16.5 + rng.normal(0, 1.5, n2)
    fits = [_fit_of(client, u1, c1, "TT-1"), _fit_of(client, u2, c2, "TT-1")]
    body = client.get("/v1/instruments/TT-1").get_json()
    drift = body["current"]["drift"]

    models = [sm.OLS(c, sm.add_constant(u)).fit() for u, c in ((u1, c1), (u2, c2))]
    # statsmodels orders (const, slope); the service's covariance is (w, b).
    covariances = [np.array(model.cov_params())[::-1, ::-1] for model in models]
    lines = [(fit["result"]["w_raw"], fit["result"]["b_raw"]) for fit in fits]
    delta = np.subtract(lines[1], lines[0])
    chi2 = float(delta @ np.linalg.solve(covariances[0] + covariances[1], delta))
    assert drift["chi2"] == pytest.approx(chi2, rel=1e-9)
    assert drift["p_value"] == pytest.approx(stats.chi2.sf(chi2, 2), rel=1e-9)
    assert drift["flagged"] == (stats.chi2.sf(chi2, 2) < 0.01)
    as_found = math.sqrt(np.mean((c2 - (lines[0][0] * u2 + lines[0][1])) ** 2))
    as_left = math.sqrt(np.mean((c2 - (lines[1][0] * u2 + lines[1][1])) ** 2))
    assert drift["as_found_rms"] == pytest.approx(as_found, rel=1e-9)
    assert drift["as_left_rms"] == pytest.approx(as_left, rel=1e-9)
    cal = body["current"]
    assert (cal["se_w"], cal["se_b"]) == pytest.approx(tuple(np.sqrt(np.diag(covariances[1]))), rel=1e-9)
    assert cal["cov_wb"] == pytest.approx(covariances[1][0, 1], rel=1e-9)

    # Prediction bounds: statsmodels' observation interval, around the fitted line.
    new = rng.uniform(-20, 80, 7)
    answer = client.post("/v1/instruments/TT-1/predict", json={"t_u": new.tolist(), "interval": 0.9}).get_json()
    frame = models[1].get_prediction(sm.add_constant(new, has_constant="add")).summary_frame(alpha=0.1)
    half = (frame["obs_ci_upper"] - frame["obs_ci_lower"]).to_numpy() / 2
    assert np.subtract(answer["upper"], answer["lower"]) / 2 == pytest.approx(half, rel=1e-9)
    assert answer["t_c"] == pytest.approx(lines[1][0] * new + lines[1][1], rel=1e-12)
    assert answer["fit_id"] == fits[1]["id"]


def test_tolerance_and_next_due_follow_the_as_found_trend(client: FlaskClient) -> None:
    u = np.linspace(0, 100, 12)
    rng = np.random.default_rng(7)
    for k in range(4):  # the slope creeps up night after night
        _fit_of(client, u, (0.5 + 0.002 * k) * u - 17 + rng.normal(0, 0.05, u.size), "TT-9")
    body = client.get("/v1/instruments/TT-9").get_json()
    assert body["tolerance"] is None and body["next_due"] is None
    put = client.put("/v1/instruments/TT-9", json={"tolerance": 5.0})
    assert put.status_code == 200 and put.get_json()["tolerance"] == 5.0
    history = put.get_json()["history"][::-1]
    times = np.array(
        [
            np.datetime64(h["calibrated_at"].rstrip("Z")).astype("datetime64[us]").astype(float) / 1e6
            for h in history[1:]
        ]
    )
    found = np.array([h["drift"]["as_found_rms"] for h in history[1:]])
    slope, intercept = np.polyfit(times, found, 1)
    expected = np.datetime64(int((5.0 - intercept) / slope), "s").astype("datetime64[D]")
    assert put.get_json()["next_due"] == str(expected)
    assert client.put("/v1/instruments/TT-9", json={"tolerance": -1}).status_code == 422
    # An instrument exists from the first fit naming it, calibrated or not yet.
    assert client.put("/v1/instruments/TT-new", json={"tolerance": 1.0}).status_code == 404
    client.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [1.0, 2.0], "instrument": "TT-new"})
    created = client.put("/v1/instruments/TT-new", json={"tolerance": 1.0}).get_json()
    assert created["calibrations"] == 0 and created["current"] is None and created["next_due"] is None


def test_predict_at_a_time_uses_the_calibration_current_then(client: FlaskClient) -> None:
    u = np.linspace(0, 100, 10)
    old = _fit_of(client, u, 0.5 * u - 17, "TT-5")
    new = _fit_of(client, u, 0.6 * u - 17, "TT-5")
    now = client.post("/v1/instruments/TT-5/predict", json={"t_u": [10.0]}).get_json()
    assert now["fit_id"] == new["id"]
    at = client.post(f"/v1/instruments/TT-5/predict?at={old['created_at']}", json={"t_u": [10.0]}).get_json()
    assert at["fit_id"] == old["id"] and at["t_c"] == pytest.approx(
        [old["result"]["w_raw"] * 10 + old["result"]["b_raw"]]
    )
    before = client.post("/v1/instruments/TT-5/predict?at=2000-01-01T00:00:00Z", json={"t_u": [10.0]})
    assert before.status_code == 409
    assert client.post("/v1/instruments/TT-6/predict", json={"t_u": [1.0]}).status_code == 404


def test_instruments_are_the_tenants_own(make_client: Callable[..., FlaskClient]) -> None:
    a, b = make_client("tenant-a"), make_client("tenant-b")
    _fit_of(a, np.linspace(0, 10, 5), np.linspace(0, 10, 5) * 2 + 1, "SHARED-NAME")
    assert a.get("/v1/instruments/SHARED-NAME").status_code == 200
    assert b.get("/v1/instruments/SHARED-NAME").status_code == 404
    assert b.get("/v1/instruments").get_json()["items"] == []
    assert b.post("/v1/instruments/SHARED-NAME/predict", json={"t_u": [1.0]}).status_code == 404


def _calibrate_fleet(client: FlaskClient, count: int) -> dict[str, tuple[float, float]]:
    """`count` instruments calibrated in one CSV batch; each one's (w_raw, b_raw)."""
    rng = np.random.default_rng(11)
    lines = ["series,t_u,t_c"]
    for i in range(count):
        w, b = rng.uniform(0.4, 0.6), rng.uniform(-20, -10)
        u = np.linspace(0, 100, 5)
        lines += [
            f"I{i:04d},{x!r},{y!r}"
            for x, y in zip(u.tolist(), (w * u + b + rng.normal(0, 0.1, 5)).tolist(), strict=True)
        ]
    r = client.post(f"/v1/batches?{FIT_OPTIONS}", data="\n".join(lines) + "\n", content_type="text/csv")
    assert run_batch(client, r.get_json()["id"]) == count
    fits = {}
    page = client.get(f"/v1/batches/{r.get_json()['id']}/fits?limit=1000").get_json()
    for fit in page["items"]:
        fits[fit["instrument"]] = (fit["result"]["w_raw"], fit["result"]["b_raw"])
    return fits


def test_apply_calibrates_a_million_readings_of_a_thousand_instruments(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client()
    lines = _calibrate_fleet(client, 1000)
    rng = np.random.default_rng(12)
    names = np.array(sorted(lines))
    which = rng.integers(0, names.size, 1_000_000)
    t_u = rng.uniform(-50, 150, which.size).round(3)
    body = "instrument,t_u\n" + "".join(f"{names[i]},{u!r}\n" for i, u in zip(which, t_u.tolist(), strict=True))
    r = client.post("/v1/apply", data=body, content_type="text/csv")
    assert r.status_code == 200, r.get_json()
    # Read back with Arrow's CSV reader (correctly rounded, like float()): numpy's genfromtxt took
    # 10 s of the test's 11 on this million-row body.
    out = pa_csv.read_csv(io.BytesIO(r.get_data()))
    assert out.num_rows == 1_000_000
    assert out.column_names == ["instrument", "t_u", "t_c", "lower", "upper", "fit_id"]
    assert np.array_equal(out["instrument"].to_numpy(zero_copy_only=False).astype(str), names[which])
    assert np.array_equal(out["t_u"].to_numpy(), t_u)
    w = np.array([lines[name][0] for name in names])[which]
    b = np.array([lines[name][1] for name in names])[which]
    assert np.array_equal(out["t_c"].to_numpy(), w * t_u + b)  # the same float64 arithmetic, printed to round-trip

    # With bounds: the instrument's own prediction interval, row for row.
    sample = "instrument,t_u\nI0007,12.5\nI0999,-3\nI0007,80\n"
    bounded = client.post("/v1/apply?interval=0.95", data=sample, content_type="text/csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(bounded)))
    for row in rows:
        own = client.post(
            f"/v1/instruments/{row['instrument']}/predict", json={"t_u": [float(row["t_u"])], "interval": 0.95}
        ).get_json()
        assert (float(row["t_c"]), float(row["lower"]), float(row["upper"])) == (
            own["t_c"][0],
            own["lower"][0],
            own["upper"][0],
        )
        assert row["fit_id"] == own["fit_id"]

    unknown = client.post("/v1/apply", data="instrument,t_u\nI0001,1\nI0002,2\nNOPE,3\n", content_type="text/csv")
    assert unknown.status_code == 422
    assert unknown.get_json()["errors"][0]["loc"] == ["row", 3] and "NOPE" in unknown.get_json()["detail"]
    # Another tenant's instruments are unknown to this one, row for row.
    other = make_client("tenant-b").post("/v1/apply", data="instrument,t_u\nI0001,1\n", content_type="text/csv")
    assert other.status_code == 422 and other.get_json()["errors"][0]["loc"] == ["row", 1]
    bad = client.post("/v1/apply", data="instrument,t_u\nI0001,1\nI0001,warm\n", content_type="text/csv")
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["loc"] == ["row", 2]
    assert client.post("/v1/apply", data="t_u\n1\n", content_type="text/csv").status_code == 400
    assert client.post("/v1/apply", json={"t_u": [1]}).status_code == 415


def test_apply_reads_a_csv_as_a_batch_does(client: FlaskClient) -> None:
    # The readings CSV as spreadsheets write it, read as a batch's CSV is: before, a byte-order mark,
    # quoted names in the header and lines ending in a carriage return alone were each a 400 naming
    # no column, a t_u of "1_0" (a number to float(), and in a batch) a 400 in Arrow's words, and
    # of a header naming a column twice the first was read without a word.
    lines = _calibrate_fleet(client, 2)
    w, b = lines["I0001"]
    for body in (
        b"\xef\xbb\xbfinstrument,t_u\nI0001,10\n",
        b'"instrument","t_u"\nI0001,10\n',
        b"instrument,t_u\rI0001,10\r",
        b"t_u,instrument,note\r\n 10,I0001,x\r\n",
        b"instrument,t_u\nI0001,1_0",
    ):
        r = client.post("/v1/apply", data=body, content_type="text/csv")
        assert r.status_code == 200, (body, r.get_json())
        row = next(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
        assert (row["instrument"], float(row["t_u"]), float(row["t_c"])) == ("I0001", 10.0, w * 10 + b), body
    refused = {
        b"instrument,t_u": (400, None),  # a header alone: Arrow's "Empty CSV file" before
        b"instrument,t_u,instrument\nI0001,10,I0000\n": (400, ["columns", "instrument"]),
        b"instrument,t_u\nI0001,10\nI0001,10,5\n": (400, ["row", 2]),  # Arrow's "Expected 2 columns" before
        b"instrument,t_u\nI0001,10\nI0001,\n": (422, ["row", 2]),
    }
    for body, (status, loc) in refused.items():
        r = client.post("/v1/apply", data=body, content_type="text/csv")
        assert (r.status_code, r.get_json().get("errors", [{"loc": None}])[0]["loc"]) == (status, loc), r.get_json()


def test_many_fits_of_one_instrument_in_one_chunk_are_each_paired_with_the_one_before(client: FlaskClient) -> None:
    """A batch of 40 calibrations of one instrument (one chunk, one created_at), between single fits
    of it submitted before and after, and a cancelled one that is no calibration: every stored
    verdict is against the calibration before it in submission order."""
    u = [20.0, 40.0, 60.0, 80.0]
    one = {"t_u": u, "t_c": [0.5 * x - 17 for x in u], "epochs": 20, "input_scale": 0.1, "instrument": "TT-9"}
    first = client.post("/v1/fits", json=one).get_json()["id"]
    run_fit(client, first)
    fits = [{**one, "t_c": [0.5 * x - 17 + 0.01 * i + 0.001 * (x % 3) for x in u]} for i in range(40)]
    batch = client.post("/v1/batches", json={"fits": fits}).get_json()["id"]
    cancelled = client.post("/v1/fits", json=one).get_json()["id"]
    client.post(f"/v1/fits/{cancelled}/cancel")
    run_batch(client, batch)
    last = client.post("/v1/fits", json=one).get_json()["id"]
    run_fit(client, last)
    reference = _history_verdicts(client, "TT-9")
    assert len(reference) == 41  # 42 calibrations (the cancelled fit is none): all but the first
    assert _stored_verdicts(client) == reference


def test_an_instruments_history_comes_in_pages(client: FlaskClient) -> None:
    """250 calibrations: three pages of 100, 100 and 50, newest first, each calibration once, and
    each with the drift from the one before it (on the next page for a page's last)."""
    u = [20.0, 40.0, 60.0, 80.0]
    fits = [
        {
            "t_u": u,
            "t_c": [0.5 * x - 17 + 0.3 * (i % 2) for x in u],
            "epochs": 20,
            "input_scale": 0.1,
            "instrument": "TT-P",
        }
        for i in range(250)
    ]
    run_batch(client, client.post("/v1/batches", json={"fits": fits}).get_json()["id"])
    whole: list[dict[str, Any]] = []
    link: str | None = "/v1/instruments/TT-P"
    pages = []
    while link:
        body = client.get(link).get_json()
        assert body["calibrations"] == 250
        pages.append(len(body["history"]))
        whole += body["history"]
        link = body["history_next"]
    assert pages == [100, 100, 50]
    ids = [cal["fit_id"] for cal in whole]
    assert len(set(ids)) == 250
    assert [cal["drift"] is not None for cal in whole] == [True] * 249 + [False]  # the oldest has none before it
    small = client.get("/v1/instruments/TT-P?history_limit=7").get_json()
    assert [cal["fit_id"] for cal in small["history"]] == ids[:7]
    assert client.get("/v1/instruments/TT-P?history_limit=0").status_code == 422


def _history_verdicts(client: FlaskClient, name: str) -> dict[str, tuple[str, Any]]:
    """Each calibration's drift against the one before it along the instrument's whole history in
    submission order, computed here (the reference for what the workers store)."""
    import dataclasses

    import sqlalchemy as sa

    from shared.store import calibrations
    from shared.store.drift import Calibration, drift
    from shared.store.models import SUCCEEDED, Fit

    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        rows = session.execute(
            sa.select(*calibrations.CALIBRATION_COLUMNS)
            .where(Fit.instrument == name, Fit.status == SUCCEEDED)
            .order_by(Fit.created_at, Fit.id)
        ).all()
    threshold = svc.settings.drift_threshold
    return {
        after.id: (before.id, dataclasses.asdict(drift(Calibration.of(before), Calibration.of(after), threshold)))
        for before, after in zip(rows, rows[1:], strict=False)
    }


def _stored_verdicts(client: FlaskClient) -> dict[str, tuple[str, Any]]:
    import dataclasses

    import sqlalchemy as sa

    from shared.store import calibrations
    from shared.store.models import DriftVerdict

    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        ids = list(session.scalars(sa.select(DriftVerdict.fit_id)))
        stored = calibrations.stored_drift_of(session, ids, svc.settings.drift_threshold)
    return {fit_id: (found.previous_id, dataclasses.asdict(found.drift)) for fit_id, found in stored.items()}


def test_verdicts_stored_by_the_workers_are_the_historys_when_fits_end_out_of_order(client: FlaskClient) -> None:
    """Fits of one instrument submitted in one order and finished in another (a single fit between
    two batches finishing last, a batch of 12 finishing before single fits submitted before it): each
    stored verdict is made against the calibration before it by submission, as the history pairs
    them, whatever order the workers finished in; a fit that fails stores none, and the batch's
    `drifted` count reads the stored verdicts."""
    u = [20.0, 40.0, 60.0, 80.0]

    def fit(i: int) -> dict[str, Any]:
        # Every third calibration reads far off the line before it: flagged both ways.
        return {"t_u": u, "t_c": [0.5 * x - 17 + (0.5 if i % 3 == 0 else 0.01 * i) for x in u], "instrument": "TT-O"}

    options = {"epochs": 30, "input_scale": 0.1}
    singles = [client.post("/v1/fits", json={**fit(i), **options}).get_json()["id"] for i in range(3)]
    batch = client.post("/v1/batches", json={"fits": [fit(i) for i in range(3, 15)], "defaults": options})
    batch_id = batch.get_json()["id"]
    between = client.post("/v1/fits", json={**fit(15), **options}).get_json()["id"]
    failing = client.post("/v1/fits", json={**fit(16), "t_c": [1e300] * 4, "epochs": 30}).get_json()["id"]
    later = client.post("/v1/batches", json={"fits": [fit(i) for i in range(17, 20)], "defaults": options})
    run_batch(client, later.get_json()["id"])
    run_batch(client, batch_id)
    run_fit(client, failing)
    for fit_id in (singles[2], singles[0], between, singles[1]):
        run_fit(client, fit_id)
    reference = _history_verdicts(client, "TT-O")
    assert len(reference) == 18  # 19 calibrations: the failed fit is none
    assert client.get(f"/v1/fits/{failing}").get_json()["status"] != "succeeded"
    assert _stored_verdicts(client) == reference
    flagged = {fit_id for fit_id, (_, found) in reference.items() if found["flagged"]}
    assert flagged and len(flagged) < len(reference)
    in_batch = {fit["id"] for fit in client.get(f"/v1/batches/{batch_id}/fits?limit=100").get_json()["items"]}
    assert len(in_batch) == 12
    assert client.get(f"/v1/batches/{batch_id}").get_json()["drifted"] == len(flagged & in_batch) > 0


def test_a_batch_is_read_without_pairing_calibrations(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a batch of 40 calibrations of one instrument (its body, its fits as CSV, its page,
    a fit's report) never pair calibrations: their cost is the page's, not the instrument's."""
    from shared.store import calibrations

    u = [20.0, 40.0, 60.0, 80.0]
    fits = [
        {"t_u": u, "t_c": [0.5 * x - 17 + 0.3 * (i % 2) + 0.01 * (x % 3) for x in u], "instrument": "TT-R"}
        for i in range(40)
    ]
    batch_id = client.post("/v1/batches", json={"fits": fits, "defaults": {"epochs": 20, "input_scale": 0.1}})
    batch_id = batch_id.get_json()["id"]
    run_batch(client, batch_id)
    reference = _history_verdicts(client, "TT-R")

    def refused(*args: Any) -> Any:
        raise AssertionError("a read paired calibrations")

    monkeypatch.setattr(calibrations, "_adjacent", refused)
    body = client.get(f"/v1/batches/{batch_id}").get_json()
    flagged = {fit_id for fit_id, (_, found) in reference.items() if found["flagged"]}
    assert body["counts"]["succeeded"] == 40 and len(reference) == 39 and flagged
    assert body["drifted"] == len(flagged)  # calibrations; the page names the one instrument once
    rows = list(
        csv.DictReader(io.StringIO(client.get(f"/v1/batches/{batch_id}/fits?format=csv").get_data(as_text=True)))
    )
    assert {row["fit_id"]: row["drift_flagged"] for row in rows} == {
        row["fit_id"]: ("" if row["fit_id"] not in reference else "true" if row["fit_id"] in flagged else "false")
        for row in rows
    }
    page = client.get(f"/ui/batches/{batch_id}").get_data(as_text=True)
    assert "1 instrument drifted" in page and page.count('href="/ui/instruments/TT-R"') == 1
    fit_id = client.get(f"/v1/batches/{batch_id}/fits?limit=1").get_json()["items"][0]["id"]
    assert client.get(f"/ui/fits/{fit_id}/report").status_code == 200


def test_the_migration_stores_the_verdicts_the_workers_would(client: FlaskClient) -> None:
    """Calibrations stored before verdicts were (schema 0013) get theirs from the migration that
    adds them, the same as the workers store: the workers' verdicts, dropped with the table and
    migrated again, come back equal."""
    from alembic import command

    from migrations.apply import alembic_config

    u = [20.0, 40.0, 60.0, 80.0]
    for name in ("TT-M1", "TT-M2"):
        fits = [
            {"t_u": u, "t_c": [0.5 * x - 17 + 0.2 * (i % 3) + 0.01 * (x % 3) for x in u], "instrument": name}
            for i in range(12)
        ]
        batch = client.post("/v1/batches", json={"fits": fits, "defaults": {"epochs": 20, "input_scale": 0.1}})
        run_batch(client, batch.get_json()["id"])
    stored = _stored_verdicts(client)
    assert len(stored) == 22
    config = alembic_config(client.application.extensions["calib"].settings.database)
    command.downgrade(config, "0013")
    command.upgrade(config, "head")
    assert _stored_verdicts(client) == stored


def test_two_workers_finishing_fits_of_one_instrument_at_once_pair_them_in_order(client: FlaskClient) -> None:
    """Fits A, B, C of one instrument; B and C finish at the same moment in two transactions: B's
    holds its write open while C's is made. C's verdict is against B, not A: C's transaction waits
    for B's (the instruments' row lock on PostgreSQL, the write lock on SQLite) and then sees it."""
    import threading
    import time

    import sqlalchemy as sa

    from shared.store import calibrations
    from shared.store.models import RUNNING, SUCCEEDED, DriftVerdict, Fit

    u = [20.0, 40.0, 60.0, 80.0]
    ids = []
    for i in range(3):
        body = {"t_u": u, "t_c": [0.5 * x - 17 + 0.2 * i + 0.01 * (x % 3) for x in u], "instrument": "TT-W"}
        ids.append(client.post("/v1/fits", json={**body, "epochs": 20, "input_scale": 0.1}).get_json()["id"])
        run_fit(client, ids[-1])
    a, b, c = ids
    db = client.application.extensions["calib"].db
    with db.session(write=True) as session:  # B and C not finished yet, as far as anyone can see
        session.execute(sa.update(Fit).where(Fit.id.in_([b, c])).values(status=RUNNING))
        session.execute(sa.delete(DriftVerdict))
        calibrations.record_drifts(session, [a])
    b_recorded = threading.Event()

    def finish_b() -> None:
        with db.session(write=True) as session:
            session.execute(sa.update(Fit).where(Fit.id == b).values(status=SUCCEEDED))
            calibrations.record_drifts(session, [b])
            b_recorded.set()
            time.sleep(1.0)  # C's transaction starts meanwhile

    first = threading.Thread(target=finish_b)
    first.start()
    assert b_recorded.wait(30)
    with db.session(write=True) as session:
        session.execute(sa.update(Fit).where(Fit.id == c).values(status=SUCCEEDED))
        calibrations.record_drifts(session, [c])
    first.join()
    assert {fit_id: previous for fit_id, (previous, _) in _stored_verdicts(client).items()} == {b: a, c: b}
    assert _stored_verdicts(client) == _history_verdicts(client, "TT-W")
