"""Accepting fits: commit first, then publish; idempotent under a key.

The fit is committed as `queued` (and stamped as published) before its wake-up message is
published, so a worker never looks for a row that does not exist yet, and a publish that fails
loses nothing: its stamp is cleared and the reconciler publishes it within seconds
(Services.dispatch). One transaction per accepted request, and a publish unless one is on its way
(Services.wake).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence, Set
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from services.api.admission import Ask, admit, require_broker
from services.api.extensions import Services
from services.api.idempotency import insert_or_replay
from services.api.resolved import resolve
from shared.contract.schemas import FitCreate
from shared.domain.packing import pack_f64
from shared.store import calibrations
from shared.store.built_once import core
from shared.store.models import QUEUED, Fit, new_id, utcnow


def digest(request: Any) -> str:
    """The fingerprint an Idempotency-Key is checked against: of the request's canonical form, so
    keys in another order, or 1 written as 1.0, are the same request (and no spurious 409)."""
    return hashlib.sha256(_text(request).encode()).hexdigest()


def fingerprinted(spec: FitCreate, exclude: set[str] | None = None) -> dict[str, Any]:
    """A fit's spec as its fingerprint reads it: the fields added since keys were first stored left out
    where they have their default (the line, no stated uncertainties), so such a key still matches
    the same request sent again."""
    dumped = spec.model_dump(exclude=exclude)
    if dumped.get("model") == {"kind": "line"}:
        del dumped["model"]
    for added in ("u_t_c", "u_t_u"):
        if added in dumped and dumped[added] is None:
            del dumped[added]
    return dumped


def _text(value: Any) -> str:
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


class BatchFingerprint:
    """The fingerprint of a batch, fed a fit at a time as its fits are validated: each fit as
    validated (its batch's defaults merged in, so the same request however it is spelled), its
    readings as float64 bytes (a fit's arrays are never written out as text), then the batch's
    callback_url."""

    # What a fit of a CSV or Parquet batch sets of its own (and most fits of a JSON batch).
    OWN_FIELDS = frozenset({"t_u", "t_c", "labels", "instrument"})

    def __init__(self) -> None:
        self._sha = hashlib.sha256(b"calib batch 2")
        self._template: tuple[str, str, str] | None = None
        self._templated = False

    def add(self, spec: FitCreate, given: Set[str] | None = None) -> None:
        """`given`: the fields the fit's own body set. Where it set none but OWN_FIELDS, every other
        field of its spec is the batch's defaults, validated (validation checks a fit's options
        against its readings but never changes them): the same for each such fit. Its text is then
        the first such fit's with its own instrument and labels put in: the same text, without
        dumping and sorting the whole spec again (a 10,000-series batch: about 0.2 s → 0.05 s)."""
        own_only = given is not None and given <= self.OWN_FIELDS
        if own_only and not self._templated:
            self._template, self._templated = _template(spec), True
        if own_only and self._template is not None:
            before, between, after = self._template
            text = before + _text(spec.instrument) + between + _text(spec.labels) + after
        else:
            text = _text(_without_readings(spec))
        self._sha.update(text.encode())
        for values in (spec.t_u, spec.t_c):
            self._sha.update(len(values).to_bytes(8, "little"))
            self._sha.update(pack_f64(values))

    def hexdigest(self, callback: str | None) -> str:
        sha = self._sha.copy()
        sha.update(_text(callback).encode())
        return sha.hexdigest()


# Stand-ins no spec can hold (a control character is refused in both): where a fit's instrument
# and labels go in its text.
_INSTRUMENT, _LABELS = "\x00instrument\x00", "\x00labels\x00"


def _without_readings(spec: FitCreate) -> dict[str, Any]:
    """A fit's spec as a batch's fingerprint reads it: its readings are hashed apart, as float64."""
    return fingerprinted(spec, exclude={"t_u", "t_c"})


def _template(spec: FitCreate) -> tuple[str, str, str] | None:
    """The text of `spec` as BatchFingerprint reads it, cut where its instrument and its labels
    go (its keys sorted: the instrument first), or None where the stand-ins are not found so."""
    text = _text(_without_readings(spec) | {"instrument": _INSTRUMENT, "labels": _LABELS})
    pieces = text.split(_text(_INSTRUMENT))
    if len(pieces) != 2 or _text(_LABELS) in pieces[0]:
        return None
    rest = pieces[1].split(_text(_LABELS))
    return (pieces[0], rest[0], rest[1]) if len(rest) == 2 else None


def earlier_batch_digest(specs: Iterable[FitCreate], callback: str | None) -> str:
    """The fingerprint batches were stored with before BatchFingerprint (their readings written out
    as JSON text): digest([[spec.model_dump() for spec in specs], callback]). Computed only when
    a key's stored fingerprint is not BatchFingerprint's, so that those keys keep matching."""
    sha = hashlib.sha256(b"[[")
    for i, spec in enumerate(specs):
        sha.update((b"," if i else b"") + _text(fingerprinted(spec)).encode())
    sha.update(b"]," + _text(callback).encode() + b"]")
    return sha.hexdigest()


def _canonical(value: Any) -> Any:
    # The exact scalar types first: a 10,000-fit batch's specs hold 200,000 values.
    kind = type(value)
    if kind is float or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def fit_rows(
    specs: Sequence[FitCreate],
    tenant: str,
    *,
    batch_id: str | None = None,
    chunk_ids: Sequence[str] | None = None,
    max_epochs: int = 1_000_000,
    created_at: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Every column of new queued fits, as dicts for one bulk INSERT or Fit(): each spec resolved
    once (services/api/resolved.py), its data and the least-squares figures beside it."""
    rows = []
    # Stamped as published: the publish follows the commit, and one that fails clears the stamp
    # (Services.dispatch), so the common case costs no second transaction.
    # One instant for the whole request, however many slices it is built in: a batch's fits are
    # ordered among an instrument's calibrations by (created_at, id).
    now = created_at or utcnow()
    for i, fit in enumerate(resolve(specs, max_epochs)):
        fit_id, st = new_id(), fit.stats
        rows.append(
            dict(
                id=fit_id,
                tenant=tenant,
                batch_id=batch_id,
                chunk_id=chunk_ids[i] if chunk_ids else fit_id,
                status=QUEUED,
                created_at=now,
                dispatched_at=now,
                epochs_done=0,
                n_points=len(fit.spec.t_u),
                labels=fit.spec.labels,
                instrument=fit.spec.instrument,
                callback_url=fit.spec.callback_url,
                t_u=pack_f64(fit.spec.t_u),
                t_c=pack_f64(fit.spec.t_c),
                u_t_c=pack_f64(stated) if (stated := fit.spec.stated_u_t_c()) is not None else None,
                u_t_u=pack_f64(readings) if (readings := fit.spec.stated_u_t_u()) is not None else None,
                attempt=0,
                worker_losses=0,
                losses_pruned=False,
                idempotency_key=None,
                request_digest=None,
                lr_max=st.lr_max,
                condition_number=st.condition_number,
                w_opt=st.w_opt,
                b_opt=st.b_opt,
                se_w=st.se_w,
                se_b=st.se_b,
                cov_wb=st.cov_wb,
                r2=st.r2,
                residual_sd=st.residual_sd,
                t_u_mean=st.t_u_mean,
                t_u_sxx=st.t_u_sxx,
                t_c_var=st.t_c_var,
                **fit.columns(),
            )
        )
    return rows


# A single fit's row goes in by a Core INSERT, not the ORM's unit of work: 1-2 ms of API CPU a
# submission less. Its 50 values (the columns left out are null) are as many as psycopg converts
# once and keeps: it parsed the ORM's INSERT, 70 values, anew for each submission.
_INSERT_FIT = sa.insert(Fit)


def insert_fit(session: so.Session, row: dict[str, Any]) -> Fit:
    """Insert one new fit's row in the session's transaction; the fit as the response shows it."""
    core(session).execute(_INSERT_FIT, row)
    return Fit(**row)


def submit_fit(svc: Services, spec: FitCreate, ask: Ask, tenant: str, key: str | None) -> tuple[Fit, bool]:
    """Returns the fit and whether it was created now (False: an idempotent replay)."""
    # Only an Idempotency-Key reads the fingerprint.
    request_digest = None if key is None else digest(fingerprinted(spec))

    ask = Ask(ask.fit_epochs, ask.loss_bytes, 1 if spec.callback_url else 0)

    def admitted(session: so.Session) -> None:
        admit(svc, session, tenant, ask)
        require_broker(svc)

    def insert(session: so.Session) -> Fit:
        row = fit_rows([spec], tenant, max_epochs=svc.settings.max_epochs)[0]
        fit = insert_fit(session, row | {"idempotency_key": key, "request_digest": request_digest})
        calibrations.register(session, tenant, [fit.instrument])
        return fit

    fit, created = insert_or_replay(svc.db, Fit, tenant, key, request_digest, admit=admitted, insert=insert)
    if created:
        svc.wake(fit.chunk_id)
    return fit, created
