"""Quotas on the running stack (both backends): an operator sets a tenant's in-flight quota with
`calib tenants set-quota`; at it, that tenant gets 429 while another tenant's fit is accepted and
runs; what ran is counted in `calib usage`, and `calib prune` frees it."""

from __future__ import annotations

import subprocess

import httpx

from services.cli import processes
from shared.domain.packing import pack_f32_compact
from tests.stack import Stack

# Its own stack (tests/e2e/conftest.py): it sets quotas and leaves another tenant's fits running.
OWN_STACK = True
# The other tenant's fit takes the one worker from the quota tenant's long Adam chunk when that chunk
# yields its time slice: 3 s, not the default 30 (it took 34 s on each backend in one CI run, the
# worker computing the long fit all along).
OWN_STACK_ENV = {"CALIB_TIME_SLICE_SECONDS": "3"}

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def _calib(stack: Stack, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "CALIB_API_URL": stack.url, **({"CALIB_TOKEN": token} if token else {})}
    return subprocess.run(processes.resolve(["calib", *args]), env=env, capture_output=True, text=True, timeout=60)


def test_a_tenant_at_its_quota_waits_while_another_runs(stack: Stack) -> None:
    tenant_a = stack.create_token("quota-a")
    set_quota = _calib(stack, "tenants", "set-quota", "quota-a", "--in-flight-fit-epochs", "2000000")
    assert set_quota.returncode == 0 and "2,000,000" in set_quota.stdout
    a = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {tenant_a}"}, timeout=30)
    long = {"t_u": T_U, "t_c": T_C, "epochs": 1_000_000, "optimizer": "adam", "learning_rate": 0.1, "input_scale": 0.1}
    first = a.post("/v1/fits", json=long)
    second = a.post("/v1/fits", json=long)
    refused = a.post("/v1/fits", json=long)
    assert (first.status_code, second.status_code, refused.status_code) == (202, 202, 429), refused.text
    assert refused.json()["quota"] == "in_flight_fit_epochs" and int(refused.headers["Retry-After"]) > 0
    # Another tenant is not held back by the first one's quota.
    other = stack.wait(stack.submit({"t_u": T_U, "t_c": T_C, "epochs": 5000, "input_scale": 0.1})["id"], timeout=60)
    assert other["status"] == "succeeded"
    usage = _calib(stack, "usage", token=tenant_a)
    assert usage.returncode == 0 and "2,000,000" in usage.stdout, usage.stdout + usage.stderr
    for fit in (first.json(), second.json()):
        assert a.post(f"/v1/fits/{fit['id']}/cancel").status_code in (202, 409)
    mine = stack.http.get("/v1/usage").json()
    # At least what the other fit's 5000 losses take, packed as they are stored (one block).
    curve = stack.http.get(f"/v1/fits/{other['id']}/losses").json()["loss"]
    assert len(curve) == 5000
    assert mine["stored_loss_bytes"] >= len(pack_f32_compact(curve)) and mine["in_flight_fit_epochs"] == 0
    a.close()
