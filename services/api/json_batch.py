"""A JSON batch read a fit at a time, its readings into float64 arrays.

The body waits in its spool (a temporary file past 1 MiB). msgspec reads its top level (strict
JSON, every byte checked, `fits` kept as the raw bytes it is); ijson's C parser then builds the fits
one at a time from those bytes, and each fit's t_u and t_c become arrays before the next is built.
Every limit is checked as the fits arrive: the fits (`max_fits_per_batch`), the points of each array
(`max_points_per_fit`) and of all (twice `max_points_per_batch`, one per reading), and the values the
fits hold in all (counted by their separators, so a fit is refused before it is built past what a
fit may hold). Nothing of the body is ever a Python object in whole.

A body that is not strict JSON (NaN or Infinity, which Python's parser takes and validation names
as a 422, or a malformed one, a 400) is read as earlier versions read every body: counted value by
value (services/api/bodies.py), then parsed whole, within the parse budget grown to what that costs.
Errors name the same fields either way (tests/api/test_batch_readers.py).
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import ijson
import msgspec
import numpy as np
from ijson.utils import sendable_list
from pydantic import ValidationError

from services.api.admission import Ask, ask_of
from services.api.bodies import JsonCounter, spool, too_large
from services.api.memory import TEXT_EXPANSION_PARSED_WHOLE, grown
from services.api.problems import Problem, from_validation, invalid_fields
from shared.schemas import BatchCreate, BatchFit
from shared.settings import Settings

# What a top-level field other than `fits` may take (defaults, callback_url): far more than any needs.
_FIELD_BYTES = 1 << 20
# Bytes of `fits` given to the parser at a time: the granularity of the per-fit value check.
_PIECE = 64 << 10
# Values a fit may carry besides its readings and its validation indices (options, labels...): generous.
_VALUES_PER_FIT = 256
_SEPARATORS = (b",", b"[", b"{")


@dataclass
class JsonBatch:
    """The batch as sent: its defaults, its fits (each as a location and a body, readings as arrays
    where every one is a number), its callback_url, what it asks of the quotas, and the problem
    its top level has (raised after the quotas have had their say, as it always was)."""

    defaults: dict[str, Any]
    fits: list[tuple[list[Any], dict[str, Any]]]
    callback_url: str | None
    ask: Ask
    problem: Problem | None = None


def read(settings: Settings) -> JsonBatch:
    with spool(lambda piece: None, settings) as body:
        with _buffer(body) as buffer:
            top: dict[str, msgspec.Raw] | None = None
            try:
                top = msgspec.json.decode(buffer, type=dict[str, msgspec.Raw])
                return _read_strict(top, settings)
            except (msgspec.DecodeError, _NotStrict):
                pass  # and the buffer's views are gone with this frame's exception, before it closes
            finally:
                top = None
        return _read_whole(body, settings)


class _NotStrict(Exception):
    """The fits hold what msgspec reads but ijson does not (an integer past 64 bits)."""


@contextmanager
def _buffer(body: IO[bytes]) -> Iterator[Any]:
    """The spooled body as one buffer: mapped from its file when it went to disk, never copied."""
    if not getattr(body, "_rolled", False):  # a SpooledTemporaryFile has a file once it passed 1 MiB
        yield body.read()
        body.seek(0)
        return
    size = body.seek(0, 2)
    body.seek(0)
    mapped = mmap.mmap(body.fileno(), size, access=mmap.ACCESS_READ)
    try:
        yield mapped
    finally:
        mapped.close()


def _read_strict(top: dict[str, msgspec.Raw], settings: Settings) -> JsonBatch:
    others: dict[str, Any] = {}
    for name, raw in top.items():
        if name == "fits":
            continue
        if len(raw) > _FIELD_BYTES:
            raise too_large([name], f"{name}: more than {_FIELD_BYTES:,} bytes")
        others[name] = json.loads(bytes(raw))
    given = others.get("defaults")
    defaults = given if isinstance(given, dict) else {}
    raw_fits = top.get("fits")
    reader = _FitsReader(settings, defaults)
    if raw_fits is not None and bytes(memoryview(raw_fits)[:1]) == b"[":
        reader.read(memoryview(raw_fits))
        placeholder: Any = [{"t_u": [], "t_c": []}] if reader.fits else []
    else:
        placeholder = _placeholder(raw_fits)
    # The top level checked as a whole with one stand-in fit; each fit was checked as it came.
    errors: list[dict[str, Any]] = []
    callback_url = None
    try:
        skeleton = {**others, **({} if raw_fits is None else {"fits": placeholder})}
        checked = BatchCreate.model_validate(skeleton, context={"settings": settings})
        callback_url = checked.callback_url
    except ValidationError as exc:
        errors = from_validation(exc).errors or []
    problem = None
    if errors or reader.errors:
        # In the order pydantic names them for a whole body: defaults, fits, then the rest.
        first = [e for e in errors if e["loc"][:1] == ["defaults"]]
        fits = [e for e in errors if e["loc"][:1] == ["fits"]]
        rest = [e for e in errors if e["loc"][:1] not in (["defaults"], ["fits"])]
        problem = invalid_fields([*first, *fits, *reader.errors, *rest])
    return JsonBatch(defaults, reader.fits, callback_url, Ask(reader.epochs, reader.loss_bytes), problem)


def _placeholder(raw: msgspec.Raw | None) -> Any:
    """`fits` when it is not an array: itself if small (its error names its type), else an object."""
    if raw is not None and len(raw) <= _FIELD_BYTES:
        return json.loads(bytes(raw))
    return {}


class _FitsReader:
    """The elements of `fits`, one at a time, each checked against the limits as it is built."""

    def __init__(self, settings: Settings, defaults: dict[str, Any]) -> None:
        self.settings = settings
        self.defaults = defaults
        self.fits: list[tuple[list[Any], dict[str, Any]]] = []
        self.errors: list[dict[str, Any]] = []
        self.epochs = self.loss_bytes = 0
        self.points_left = 2 * settings.max_points_per_batch
        # As many values as a request of the largest allowed size holds, and one fit of the largest size.
        self.values_left = 2 * settings.max_points_per_batch + _VALUES_PER_FIT * settings.max_fits_per_batch + (1 << 16)
        self.values_per_fit = 3 * settings.max_points_per_fit + _VALUES_PER_FIT + _PIECE

    def read(self, raw: memoryview) -> None:
        built = sendable_list()
        parser = ijson.items_coro(built, "item", use_float=True)
        since_last_fit = 0
        for start in range(0, len(raw), _PIECE):
            piece = bytes(raw[start : start + _PIECE])
            values = sum(piece.count(mark) for mark in _SEPARATORS)
            self.values_left -= values
            if self.values_left < 0:
                raise too_large(["body"], "the body holds more values than a request of the largest allowed size")
            try:
                parser.send(piece)
            except ijson.JSONError as exc:
                raise _NotStrict from exc
            since_last_fit = values if built else since_last_fit + values
            if since_last_fit > self.values_per_fit:
                raise too_large(
                    ["fits", len(self.fits) + len(built)], "one fit holds more values than a fit of the largest size"
                )
            for fit in built:
                self._take(fit)
            del built[:]
        parser.close()
        for fit in built:
            self._take(fit)

    def _take(self, fit: Any) -> None:
        index = len(self.fits)
        if index + 1 > self.settings.max_fits_per_batch:
            raise too_large(["fits"], f"more than {self.settings.max_fits_per_batch:,} fits in one batch")
        if isinstance(fit, dict):
            for name in ("t_u", "t_c"):
                values = fit.get(name)
                if isinstance(values, list):
                    self._count(name, len(values))
            epochs = ask_of([fit], self.defaults, self.settings.max_epochs)
            self.epochs += epochs.fit_epochs
            self.loss_bytes += epochs.loss_bytes
        if not _fits_a_batch(fit, index, self.errors) or self.errors:
            # A batch with a malformed fit is refused whole: later fits are checked, not kept.
            self.fits.append((["fits", index], {}))
            return
        fit["t_u"], fit["t_c"] = _as_array(fit["t_u"]), _as_array(fit["t_c"])
        self.fits.append((["fits", index], fit))

    def _count(self, name: str, points: int) -> None:
        if points > self.settings.max_points_per_fit:
            raise too_large([name], f"more than {self.settings.max_points_per_fit:,} points in one fit")
        self.points_left -= points
        if self.points_left < 0:
            raise too_large(["fits"], "more points in all than one request may carry")


def _fits_a_batch(fit: Any, index: int, errors: list[dict[str, Any]]) -> bool:
    """BatchFit's check of one fit, its errors added to `errors` located in the batch."""
    try:
        BatchFit.model_validate(fit)
    except ValidationError as exc:
        errors += from_validation(exc, prefix=["fits", index]).errors or []
        return False
    return True


def _as_array(values: list[Any]) -> Any:
    """A fit's readings as a float64 array where every one is a number (not a bool, which Python
    counts as one); else the list as sent, for validation to name what is wrong."""
    if not set(map(type, values)) <= {float, int}:
        return values
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an integer past float64: the list path names it
        return values


def _read_whole(body: IO[bytes], settings: Settings) -> JsonBatch:
    """A body that is not strict JSON, read as earlier versions read every JSON body."""
    counter = JsonCounter(settings)
    size = 0
    body.seek(0)
    while piece := body.read(1 << 20):
        size += len(piece)
        counter(piece)
    counter.close()
    if not size:
        raise Problem(400, "the request body is empty; send a JSON object", slug="malformed")
    grown(size * TEXT_EXPANSION_PARSED_WHOLE)
    body.seek(0)
    try:
        raw = json.loads(body.read())
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", slug="malformed") from exc
    fits = raw.get("fits") if isinstance(raw, dict) else None
    given = raw.get("defaults") if isinstance(raw, dict) else None
    defaults = given if isinstance(given, dict) else {}
    ask = ask_of(fits, defaults, settings.max_epochs) if isinstance(fits, list) else Ask(0, 0)
    try:
        batch = BatchCreate.model_validate(raw, context={"settings": settings})
    except ValidationError as exc:
        return JsonBatch(defaults, [], None, ask, from_validation(exc))
    listed = [(["fits", i], fit.model_dump()) for i, fit in enumerate(batch.fits)]
    return JsonBatch(batch.defaults, listed, batch.callback_url, ask)
