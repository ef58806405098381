"""The calib client: one object per service, on httpx, with retries where retrying is safe."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .config import default_token, default_url
from .errors import CalibError, WouldDiverge
from .resources import Batch, Fit

# Answers that say "nothing was done, try again later": a rate limit, or a dependency down.
# Nothing else is retried: a 4xx is the request's fault, and a lost connection may have
# left the request done (submissions carry an Idempotency-Key, so a caller may resend them).
RETRIED = (429, 503)


class Client:
    """calib over HTTP. `Client()` talks to CALIB_API_URL (default http://127.0.0.1:8000) with
    CALIB_TOKEN or the local token; every error answer raises CalibError."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        token = default_token() if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.max_retries, self.backoff = max_retries, backoff

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- transport ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried with backoff on 429 and 503 (waiting at least their Retry-After)."""
        for attempt in range(self.max_retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise CalibError(0, {"detail": f"cannot reach {self.url}: {exc}"}) from exc
            if response.status_code in RETRIED and attempt < self.max_retries:
                time.sleep(self._pause(response, attempt))
                continue
            if response.status_code >= 400:
                raise CalibError(response.status_code, _problem(response))
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, response: httpx.Response, attempt: int) -> float:
        wait = min(30.0, float(self.backoff) * 2.0**attempt)
        try:
            return max(wait, float(response.headers.get("Retry-After") or 0))
        except ValueError:
            return wait

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def ready(self) -> bool:
        try:
            self.http.get("/readyz").raise_for_status()
        except httpx.HTTPError:
            return False
        return True

    # --- fits --------------------------------------------------------------------------

    def fit(
        self,
        t_u: Sequence[float],
        t_c: Sequence[float],
        *,
        idempotency_key: str | None = None,
        allow_divergence: bool = False,
        **options: Any,
    ) -> Fit:
        """Submit one fit; `options` are any fields of POST /v1/fits (epochs, learning_rate,
        init, input_scale, normalize, optimizer, validation, early_stopping, labels, ...).
        The service's pre-flight is asked first: a learning rate that would diverge on this data
        raises WouldDiverge (with the options that converge) unless `allow_divergence`."""
        body = {"t_u": list(map(float, t_u)), "t_c": list(map(float, t_c)), **options}
        if not allow_divergence:
            found = self.json("POST", "/v1/preflight", json=body)
            if found.get("stable") is False:
                raise WouldDiverge(found)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return Fit(self, self.json("POST", "/v1/fits", json=body, headers=headers))

    def preflight(self, t_u: Sequence[float], t_c: Sequence[float], **options: Any) -> dict[str, Any]:
        """What the service says of this fit before it runs (POST /v1/preflight): the learning
        rate it would use, the data's stable limit `lr_max`, `stable`, `warnings`, `suggestion`."""
        body = {"t_u": list(map(float, t_u)), "t_c": list(map(float, t_c)), **options}
        return dict(self.json("POST", "/v1/preflight", json=body))

    def resolve_fit(self, id_or_prefix: str) -> str:
        """The full id of the one fit whose id starts with `id_or_prefix` (the 8 characters `calib list`
        prints); a CalibError (404) when none does, (409) naming the candidates when several do."""
        if len(id_or_prefix) == 36:
            return id_or_prefix
        page = self.json("GET", "/v1/fits", params={"id_prefix": id_or_prefix, "limit": 10})
        ids = [item["id"] for item in page["items"]]
        if len(ids) == 1:
            return str(ids[0])
        detail = (
            f"no fit id starts with {id_or_prefix!r}"
            if not ids
            else f"{id_or_prefix!r} is the start of several fit ids: {', '.join(ids)}"
            + (" and more" if page.get("next") else "")
            + "; give more characters"
        )
        raise CalibError(404 if not ids else 409, {"detail": detail, "errors": [{"loc": ["id"], "msg": detail}]})

    def get_fit(self, fit_id: str) -> Fit:
        return Fit(self, self.json("GET", f"/v1/fits/{fit_id}"))

    def fits(
        self, *, status: str | None = None, batch_id: str | None = None, label: str | None = None, page_size: int = 100
    ) -> Iterator[Fit]:
        """Fits newest first, following the pages; `label` as "key:value"."""
        params = {k: v for k, v in {"status": status, "batch_id": batch_id, "label": label}.items() if v}
        for page in self.pages("/v1/fits", {**params, "limit": page_size}):
            yield from (Fit(self, item) for item in page["items"])

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a paginated answer: the first with `params`, then each `next` link as given."""
        next_path: str | None = path
        while next_path:
            page = self.json("GET", next_path, params=params)
            params = {}  # the next link carries the query already
            yield page
            next_path = page["next"]

    # --- batches -----------------------------------------------------------------------

    def submit_batch(
        self,
        series: Mapping[str, tuple[Sequence[float], Sequence[float]]] | str | Path,
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        **defaults: Any,
    ) -> Batch:
        """Many fits in one request: a mapping series name → (t_u, t_c) (each fit gets the label
        `series`, and calibrates the instrument of that name), or the path of a long-format CSV
        (series,t_u,t_c[,instrument]) or Parquet file (.parquet). `defaults` are any fit fields,
        applied to every fit; `callback_url` is POSTed the batch when it ends."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        if isinstance(series, str | Path):
            path = Path(series)
            parquet = path.suffix.lower() == ".parquet"
            headers["Content-Type"] = "application/vnd.apache.parquet" if parquet else "text/csv"
            params = _query_defaults(defaults) | ({"callback_url": callback_url} if callback_url else {})
            created = self.json("POST", "/v1/batches", content=path.read_bytes(), headers=headers, params=params)
        else:
            fits = [
                {"t_u": list(map(float, u)), "t_c": list(map(float, c)), "labels": {"series": name}, "instrument": name}
                for name, (u, c) in series.items()
            ]
            body: dict[str, Any] = {"defaults": defaults, "fits": fits}
            if callback_url:
                body["callback_url"] = callback_url
            created = self.json("POST", "/v1/batches", json=body, headers=headers)
        return Batch(self, created)

    def usage(self) -> dict[str, Any]:
        """The tenant's fits, stored loss bytes and work in flight, with its quotas."""
        found: dict[str, Any] = self.json("GET", "/v1/usage")
        return found

    def get_batch(self, batch_id: str) -> Batch:
        return Batch(self, self.json("GET", f"/v1/batches/{batch_id}"))

    # --- instruments -------------------------------------------------------------------

    def instruments(self, *, drifted: bool = False, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every instrument, by id, each with its current calibration (only the drifted ones with
        `drifted=True`), following the pages."""
        params: dict[str, Any] = {"limit": page_size} | ({"drifted": "true"} if drifted else {})
        for page in self.pages("/v1/instruments", params):
            yield from page["items"]

    def instrument(self, instrument_id: str) -> dict[str, Any]:
        """An instrument with its current calibration, its history (newest first) and each drift verdict."""
        found: dict[str, Any] = self.json("GET", f"/v1/instruments/{quote(instrument_id, safe='')}")
        return found

    def set_tolerance(self, instrument_id: str, tolerance: float | None) -> dict[str, Any]:
        """The largest as-found RMS the instrument may show (None clears it); the instrument as it is now."""
        found: dict[str, Any] = self.json(
            "PUT", f"/v1/instruments/{quote(instrument_id, safe='')}", json={"tolerance": tolerance}
        )
        return found

    def predict_instrument(
        self, instrument_id: str, t_u: Sequence[float], *, interval: float | None = None, at: str | None = None
    ) -> dict[str, Any]:
        """t_c on the instrument's current calibration (or the one current `at`, an ISO time)."""
        body: dict[str, Any] = {"t_u": list(map(float, t_u))} | ({"interval": interval} if interval else {})
        found: dict[str, Any] = self.json(
            "POST",
            f"/v1/instruments/{quote(instrument_id, safe='')}/predict",
            json=body,
            params={"at": at} if at else None,
        )
        return found

    def apply(self, readings: str | Path, out: str | Path, *, interval: float | None = None) -> int:
        """Calibrate a CSV of `instrument,t_u` readings (a file) into `out`, streamed both ways
        (millions of rows in constant memory); the number of rows written."""
        rows = -1  # the header
        with Path(readings).open("rb") as source, Path(out).open("wb") as sink:
            with self.http.stream(
                "POST",
                "/v1/apply",
                content=iter(lambda: source.read(1 << 20), b""),
                headers={"Content-Type": "text/csv"},
                params={"interval": interval} if interval else None,
                timeout=None,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CalibError(response.status_code, _problem(response))
                for piece in response.iter_bytes():
                    sink.write(piece)
                    rows += piece.count(b"\n")
        return rows

    def webhook_deliveries(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """The tenant's webhook deliveries, newest first, each with its attempts."""
        for page in self.pages("/v1/webhooks/deliveries", {"limit": page_size}):
            yield from page["items"]


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code, "detail": response.text or response.reason_phrase}
    return body if isinstance(body, dict) else {"status": response.status_code, "detail": str(body)}


def _query_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A CSV batch takes its defaults as query parameters, nested fields flattened (init_w, validation_fraction)."""
    params: dict[str, Any] = {}
    for name, value in defaults.items():
        if isinstance(value, Mapping):
            params.update({f"{name}_{key}": inner for key, inner in value.items()})
        else:
            params[name] = value
    return params
