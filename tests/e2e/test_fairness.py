"""Fair share: while one tenant has 10,000 fits queued, another tenant's single fit starts
within seconds instead of waiting behind them (services/worker/fairness.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.ledger import wait_until
from tests.e2e.stacks import noisy_fits, running


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_another_tenants_fit_starts_within_seconds(kind: str, tmp_path: Path) -> None:
    with running(
        kind,
        tmp_path,
        workers=1,
        CALIB_CHUNK_SIZE="250",
        CALIB_LOSS_BLOCK_EPOCHS="500",
        CALIB_FAILPOINTS="checkpoint_sleep=0.25",
    ) as stack:
        backlog = stack.http.post("/v1/batches", json={"fits": noisy_fits(10_000, 1000)}, timeout=120)
        assert backlog.status_code == 202
        batch_url = f"/v1/batches/{backlog.json()['id']}"
        wait_until(lambda: stack.http.get(batch_url).json()["counts"]["running"] > 0, 30, "the backlog starts")

        other = httpx.Client(
            base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {stack.create_token('tenant-b')}"}
        )
        submitted = time.monotonic()
        fit = other.post("/v1/fits", json=noisy_fits(1, 1000)[0]).json()
        wait_until(
            lambda: other.get(f"/v1/fits/{fit['id']}").json()["status"] == "succeeded",
            10,
            "the other tenant's fit succeeds",
        )
        waited = time.monotonic() - submitted
        counts = stack.http.get(batch_url).json()["counts"]
        print(
            f"\nfair share: the other tenant's fit succeeded {waited:.2f} s after submission, "
            f"with {counts['queued']} of the backlog's fits still queued"
        )
        assert counts["queued"] >= 5000  # it did not just wait the backlog out
        assert waited < 5
        stack.http.post(f"{batch_url}/cancel")
        other.close()
