"""A batch of more fits than one slice is stored a slice at a time: checked whole first (every error
named), then its specs kept for the insert, or, past _KEPT_FITS fits, validated again a slice at a
time as it is stored, never all held. Both backends, both ways."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api import batches
from services.api.batches import _ROWS_AT_A_TIME
from shared.store.models import Batch, Fit

SERIES = _ROWS_AT_A_TIME + 904  # two slices


def _csv(offset: float) -> str:
    lines = ["series,t_u,t_c,instrument"]
    for i in range(SERIES):
        lines += [f"s{i},{u},{0.5 * u - 17 + offset + i / 1000},I{i % 7}" for u in (20, 40, 60, 80)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kept", [True, False], ids=["specs-kept", "validated-again"])
def test_a_batch_of_two_slices_is_stored_whole_and_replayed_by_its_key(
    client: FlaskClient, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not kept:
        # A batch too large to keep its checked specs (the bound lowered, as for 16,385 fits).
        monkeypatch.setattr(batches, "_KEPT_FITS", 100)
    body = _csv(0.0)
    headers = {"Idempotency-Key": "two-slices"}
    first = client.post("/v1/batches?epochs=5", data=body, content_type="text/csv", headers=headers)
    assert first.status_code == 202 and first.get_json()["count"] == SERIES
    batch_id = first.get_json()["id"]
    stored: dict[str, str] = {}
    link: str | None = f"/v1/batches/{batch_id}/fits?limit=1000"
    while link:
        page = client.get(link).get_json()
        stored.update({fit["labels"]["series"]: fit["id"] for fit in page["items"]})
        link = page["next"]
    assert len(stored) == SERIES
    for i in (0, _ROWS_AT_A_TIME - 1, _ROWS_AT_A_TIME, SERIES - 1):  # each side of the slices' seam
        data = client.get(f"/v1/fits/{stored[f's{i}']}/data").get_json()
        assert data["t_u"] == [20, 40, 60, 80]
        assert np.allclose(data["t_c"], [0.5 * u - 17 + i / 1000 for u in (20, 40, 60, 80)], rtol=0, atol=1e-12)
        assert client.get(f"/v1/fits/{stored[f's{i}']}").get_json()["instrument"] == f"I{i % 7}"
    # The same request again is the same batch; another under the key is a conflict.
    again = client.post("/v1/batches?epochs=5", data=body, content_type="text/csv", headers=headers)
    assert again.status_code == 200 and again.get_json()["id"] == batch_id
    other = client.post("/v1/batches?epochs=5", data=_csv(0.5), content_type="text/csv", headers=headers)
    assert other.status_code == 409


def test_errors_anywhere_in_a_batch_of_two_slices_store_nothing(client: FlaskClient) -> None:
    # The last series, in the second slice, has one reading: too few for a line.
    lines = _csv(0.0).splitlines()
    body = "\n".join(lines[:-3]) + "\n"
    refused = client.post("/v1/batches?epochs=5", data=body, content_type="text/csv")
    assert refused.status_code == 422, refused.get_json()
    assert refused.get_json()["errors"][0]["loc"][:2] == ["series", f"s{SERIES - 1}"]
    with client.application.extensions["calib"].db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Fit)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0
