"""Batches end to end on real processes: results per fit, CSV in and out, 422 stores nothing, cancel."""

from __future__ import annotations

import numpy as np

from tests.stack import Stack
from tests.tolerance import loss_close

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def test_a_mixed_batch_gives_each_fit_its_own_result(stack: Stack) -> None:
    rng = np.random.default_rng(0)
    fits = [
        {"t_u": T_U, "t_c": (np.asarray(T_C) + rng.normal(0, 0.3, 11)).tolist(), "labels": {"series": f"s{i}"}}
        for i in range(20)
    ]
    fits.append(
        {"t_u": T_U, "t_c": T_C, "input_scale": 1.0, "epochs": 100, "labels": {"series": "raw"}}
    )  # lr 1e-2 on raw input diverges at 11
    fits.append({"t_u": T_U[:5], "t_c": T_C[:5], "epochs": 300, "labels": {"series": "short"}})
    r = stack.http.post("/v1/batches", json={"defaults": {"epochs": 5000, "input_scale": 0.1}, "fits": fits})
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/batches/{r.json()['id']}"
    batch = stack.wait_batch(r.json()["id"])
    assert batch["status"] == "completed" and batch["count"] == 22
    assert batch["counts"]["succeeded"] == 21 and batch["counts"]["diverged"] == 1
    items, path = [], f"/v1/batches/{batch['id']}/fits?limit=7"
    while path:
        page = stack.http.get(path).json()
        items += page["items"]
        path = page["next"]
    by_series = {f["labels"]["series"]: f for f in items}
    assert len(by_series) == 22
    assert by_series["raw"]["status"] == "diverged" and by_series["raw"]["diverged_at_epoch"] == 11
    assert by_series["short"]["epochs_done"] == 300
    assert len(stack.losses(by_series["short"]["id"])) == 300
    # Each fit of the batch equals the same fit submitted alone.
    alone = stack.wait(stack.submit({"t_u": T_U, "t_c": fits[3]["t_c"], "input_scale": 0.1})["id"])
    assert loss_close(by_series["s3"]["result"]["loss"], alone["result"]["loss"])
    csv = stack.http.get(f"/v1/batches/{batch['id']}/fits", params={"format": "csv"}).text
    lines = csv.strip().splitlines()
    assert lines[0] == (
        "fit_id,series,status,w,b,w_raw,b_raw,loss,last_epoch_loss,epochs_done,diverged_at_epoch,converged,w_opt,b_opt,"
        "se_w,se_b,r2,"
        "instrument,drift_p_value,drift_flagged,as_found_rms,chi2_obs,consistent,p_w,p_b,u_w,u_b"
    )
    assert len(lines) == 23 and any(",raw,diverged," in line for line in lines)


def test_csv_batch_in_long_format(stack: Stack) -> None:
    rows = (
        ["series,t_u,t_c"]
        + [f"A,{u},{c}" for u, c in zip(T_U, T_C, strict=True)]
        + [f"B,{u},{c + 1}" for u, c in zip(T_U, T_C, strict=True)]
    )
    r = stack.http.post(
        "/v1/batches?epochs=5000&input_scale=0.1", content="\n".join(rows), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    batch = stack.wait_batch(r.json()["id"])
    assert batch["counts"]["succeeded"] == 2
    fits = stack.http.get(f"/v1/batches/{batch['id']}/fits").json()["items"]
    a = next(f for f in fits if f["labels"]["series"] == "A")
    assert abs(a["result"]["w_raw"] - 0.53671) < 1e-4


def test_one_bad_series_is_422_naming_it_and_nothing_is_stored(stack: Stack) -> None:
    before = _newest_ids(stack)
    fits = [{"t_u": T_U, "t_c": T_C}] * 3 + [{"t_u": T_U, "t_c": T_C[:-1]}]
    r = stack.http.post("/v1/batches", json={"fits": fits})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["loc"] == ["fits", 3, "t_c"]
    rows = "series,t_u,t_c\nA,1,2\nA,2,3\nB,1,nan\nB,2,3\n"
    r = stack.http.post("/v1/batches", content=rows, headers={"Content-Type": "text/csv"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][:2] == ["series", "B"]
    assert _newest_ids(stack) == before


def _newest_ids(stack: Stack) -> list[str]:
    # The ids, newest first: a fit stored since would be first (the stack may be shared, so the
    # tenant may have more fits than a page holds; their statuses may change meanwhile).
    return [f["id"] for f in stack.http.get("/v1/fits?limit=1000").json()["items"]]


def test_cancel_a_batch(stack: Stack) -> None:
    fits = [{"t_u": T_U, "t_c": T_C, "epochs": 1_000_000}] * 3
    r = stack.http.post("/v1/batches", json={"fits": fits, "defaults": {"input_scale": 0.1}})
    batch_id = r.json()["id"]
    c = stack.http.post(f"/v1/batches/{batch_id}/cancel")
    batch = stack.wait_batch(batch_id)
    assert batch["counts"]["queued"] == 0 and batch["counts"]["running"] == 0
    # Fits that had not finished are cancelled; the batch says so. One whose fits all ended
    # before the cancel arrived (the closed form is quick) is 409 and stays completed.
    if c.status_code == 202:
        assert batch["status"] == "cancelled" and batch["counts"]["cancelled"] >= 1
    else:
        assert c.status_code == 409 and batch["status"] == "completed"
    # Nothing left to cancel: 409, and the batch stays as it ended.
    again = stack.http.post(f"/v1/batches/{batch_id}/cancel")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert stack.http.get(f"/v1/batches/{batch_id}").json()["status"] == batch["status"]


def test_batch_idempotency_and_unknown_batch(stack: Stack) -> None:
    body = {"fits": [{"t_u": T_U, "t_c": T_C}]}
    first = stack.http.post("/v1/batches", json=body, headers={"Idempotency-Key": "b-1"})
    again = stack.http.post("/v1/batches", json=body, headers={"Idempotency-Key": "b-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = stack.http.post(
        "/v1/batches", json={"fits": [{"t_u": T_U, "t_c": T_U}]}, headers={"Idempotency-Key": "b-1"}
    )
    assert other.status_code == 409
    assert stack.http.get("/v1/batches/00000000-0000-4000-8000-000000000000").status_code == 404
