"""A JSON batch checked against every limit as it is received, then read a fit at a time.

While the body arrives (spooled to a file past 1 MiB), each piece is looked at in numpy, never
parsed: the values the body holds, counted by their separators (a budget a request of the largest
size needs); the longest run of numbers in an array (`max_points_per_fit`); where each fit begins
(fit_starts.py), so that the fits are counted against `max_fits_per_batch` and each fit's values
bounded as they come. An oversize body is refused where it passes a limit, its rest drained unread
(services/api/bodies.py).

Once the body is in, msgspec reads it strictly (every byte checked) from the mapped spool: its top
level with `fits` left as raw bytes, `fits` split into each fit's bytes, and each fit decoded in
turn, its t_u and t_c made float64 arrays before the next is decoded, the points counted against
`max_points_per_fit` and twice `max_points_per_batch` (one per reading) as they are. Nothing of
the body is ever a Python object in whole.

A body that is not strict JSON (NaN or Infinity, which Python's parser takes and validation names
as a 422, an integer past 64 bits, or a malformed body, a 400) has passed the same checks while it
arrived, and is parsed whole as earlier versions parsed every body, within the parse budget grown
to what that costs. Errors name the same fields either way (tests/e2e/test_batch_readers.py).
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import msgspec
import numpy as np
from pydantic import ValidationError

from services.api.admission import Ask, ask_of
from services.api.bodies import Spooling, too_large
from services.api.fit_starts import BACKSLASH, KEYS_READ, FitStarts, Marks
from services.api.memory import TEXT_EXPANSION_PARSED_WHOLE, grown, holding
from services.api.problems import Problem, from_validation, invalid_fields
from shared.contract.schemas import BatchCreate, BatchFit
from shared.runtime.settings import Settings

# What a top-level field other than `fits` may take (defaults, callback_url): far more than any needs.
_FIELD_BYTES = 1 << 20
# Values a fit may carry besides its readings and its validation indices (options, labels...): generous.
_VALUES_PER_FIT = 256
# What a fit's share of the quotas depends on (admission.ask_of), kept while its defaults may still come.
_ASKED = ("epochs", "max_epochs", "validation")


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
    reader = _FitsReader(settings)
    spooling = Spooling(reader.scan, settings)
    try:
        body = spooling.finish()
    except BaseException as refused:
        spooling.refused(refused)
        raise
    with body:
        read = _read_top_level(body, reader, settings)
        if isinstance(read, Problem):
            raise read
        return read if read is not None else _read_whole(body, settings)


def _read_top_level(body: IO[bytes], reader: _FitsReader, settings: Settings) -> JsonBatch | Problem | None:
    """The top level, read strictly from the mapped body; None where it is not strict JSON. A
    refusal is returned, its traceback dropped: its frames hold views of the mapping, which must close."""
    with _mapped(body) as buffer:
        try:
            return _batch(msgspec.json.decode(buffer, type=dict[str, msgspec.Raw]), reader, settings)
        except msgspec.DecodeError:
            return None
        except Problem as refused:
            refused.__context__ = refused.__cause__ = None
            return refused.with_traceback(None)


@contextmanager
def _mapped(body: IO[bytes]) -> Iterator[Any]:
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


def _batch(top: dict[str, msgspec.Raw], reader: _FitsReader, settings: Settings) -> JsonBatch:
    raw_fits = top.get("fits")
    is_array = raw_fits is not None and bytes(memoryview(raw_fits)[:1]) == b"["
    if raw_fits is not None and is_array:
        reader.take_all(raw_fits)
    others: dict[str, Any] = {}
    for name, raw in top.items():
        if name == "fits":
            continue
        if len(raw) > _FIELD_BYTES:
            raise too_large([name], f"{name}: more than {_FIELD_BYTES:,} bytes")
        # Strictly, as the fits are: a field that is not strict JSON or not UTF-8 (msgspec.DecodeError)
        # sends the body to the whole parse, which names what is wrong.
        others[name] = msgspec.json.decode(raw)
    given = others.get("defaults")
    defaults = given if isinstance(given, dict) else {}
    fits = reader.fits if is_array else []
    errors_of_fits = reader.errors if is_array else []
    placeholder: Any = ([{"t_u": [], "t_c": []}] if fits else []) if is_array else _placeholder(raw_fits)
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
    if errors or errors_of_fits:
        # In the order pydantic names them for a whole body: defaults, fits, then the rest.
        first = [e for e in errors if e["loc"][:1] == ["defaults"]]
        of_fits = [e for e in errors if e["loc"][:1] == ["fits"]]
        rest = [e for e in errors if e["loc"][:1] not in (["defaults"], ["fits"])]
        problem = invalid_fields([*first, *of_fits, *errors_of_fits, *rest])
    ask = ask_of(reader.asked if is_array else [], defaults, settings.max_epochs)
    return JsonBatch(defaults, fits, callback_url, ask, problem)


def _placeholder(raw: msgspec.Raw | None) -> Any:
    """`fits` when it is not an array: itself if small (its error names its type), else an object."""
    if raw is not None and len(raw) <= _FIELD_BYTES:
        return msgspec.json.decode(raw)  # not strict JSON: the whole parse, as for any field
    return {}


class _FitsReader:
    """The fits of `fits`: counted and bounded in the body's bytes as they arrive (scan), then
    decoded one at a time from the whole body, each checked against the limits as it comes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.fits: list[tuple[list[Any], dict[str, Any]]] = []
        self.asked: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.points_left = 2 * settings.max_points_per_batch
        self.readings = 0  # t_u and t_c values: two per point
        # As many values as a request of the largest allowed size holds, and one fit of the largest size.
        self.values_left = 2 * settings.max_points_per_batch + _VALUES_PER_FIT * settings.max_fits_per_batch + (1 << 16)
        self.values_per_fit = 3 * settings.max_points_per_fit + _VALUES_PER_FIT
        self.since_fit_began = 0
        self.values_seen = 0
        self.runs = _NumberRuns()
        self.starts = FitStarts()
        self.decoder = msgspec.json.Decoder()

    def scan(self, piece: bytes) -> None:
        """Each piece as it arrives: no body passes a limit by more than a piece."""
        marks = Marks(piece)
        values = marks.separators
        self.values_left -= values
        if self.values_left < 0:
            raise too_large(["body"], "the body holds more values than a request of the largest allowed size")
        begun = self.starts.fits
        starts = self.starts.of(piece, marks)
        if self.starts.keys_read > KEYS_READ:
            raise too_large(["body"], f"more than {KEYS_READ:,} arrays at the top level: a batch has one, fits")
        limit = self.settings.max_fits_per_batch
        if self.starts.fits > limit:
            raise too_large(["fits"], f"more than {limit:,} fits in one batch")
        self._bound_each_fit(marks, starts, values, begun)
        limit = self.settings.max_points_per_fit
        if self.runs.longest(marks) >= limit:
            at = ["fits", max(0, self.starts.fits - 1)]
            raise too_large(at, f"an array of more than {limit:,} numbers: more than {limit:,} points in one fit")
        # The share grows as the body arrives with what its fits will hold (a reading per value, at
        # most), so that bodies read at once wait for room, or get their 503, before they are parsed.
        self.values_seen += values
        holding(self.values_seen // 2, self.starts.fits)

    def _bound_each_fit(self, marks: Marks, starts: np.ndarray, values: int, begun: int) -> None:
        """The values of each fit, counted from where it began: none past a fit of the largest size."""
        if not len(starts) and self.since_fit_began + values <= self.values_per_fit:
            self.since_fit_began += values
            return
        before = np.searchsorted(marks.commas, starts) + np.searchsorted(marks.opens, starts)
        each = np.diff(np.concatenate(([0], before, [values])))
        each[0] += self.since_fit_began
        self.since_fit_began = int(each[-1])
        over = np.flatnonzero(each > self.values_per_fit)
        if len(over):
            at = ["fits", max(0, begun - 1 + int(over[0]))]
            raise too_large(at, "one fit holds more values than a fit of the largest size")

    def take_all(self, raw_fits: msgspec.Raw) -> None:
        """Each fit decoded from its bytes in turn (msgspec.DecodeError where one is not strict JSON)."""
        for raw in msgspec.json.decode(raw_fits, type=list[msgspec.Raw]):
            self._take(self.decoder.decode(raw))

    def _take(self, fit: Any) -> None:
        index = len(self.fits)
        if index + 1 > self.settings.max_fits_per_batch:
            raise too_large(["fits"], f"more than {self.settings.max_fits_per_batch:,} fits in one batch")
        if isinstance(fit, dict):
            for name in ("t_u", "t_c"):
                values = fit.get(name)
                if isinstance(values, list):
                    self._count(name, len(values))
            self.asked.append({name: fit[name] for name in _ASKED if name in fit})
        if not _fits_a_batch(fit, index, self.errors) or self.errors:
            # A batch with a malformed fit is refused whole: later fits are checked, not kept.
            self.fits.append((["fits", index], {}))
            return
        fit["t_u"], fit["t_c"] = _as_array(fit["t_u"]), _as_array(fit["t_c"])
        self.fits.append((["fits", index], fit))
        holding(self.readings // 2, len(self.fits))

    def _count(self, name: str, points: int) -> None:
        if points > self.settings.max_points_per_fit:
            raise too_large([name], f"more than {self.settings.max_points_per_fit:,} points in one fit")
        self.readings += points
        self.points_left -= points
        if self.points_left < 0:
            raise too_large(["fits"], "more points in all than one request may carry")


class _NumberRuns:
    """The longest run of commas with nothing but numbers between them, across the pieces of a body:
    an array of n numbers is a run of n - 1. Counted over the bytes in numpy, so that a t_u that
    never ends is refused at the limit while the body arrives, not when it ends."""

    def __init__(self) -> None:
        self.open = 0  # commas since the last structural byte, carried into the next piece

    def longest(self, marks: Marks) -> int:
        # Any byte but a comma ends a run of numbers, except a backslash (only ever in a string).
        commas_before = marks.commas_before[marks.kinds != BACKSLASH]
        if not len(commas_before):
            self.open += len(marks.commas)
            return self.open
        first = self.open + int(commas_before[0])
        inner = int(np.diff(commas_before).max()) if len(commas_before) > 1 else 0
        self.open = len(marks.commas) - int(commas_before[-1])
        return max(first, inner, self.open)


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
    """A body that is not strict JSON (counted while it arrived), parsed whole as earlier versions
    parsed every JSON body."""
    size = body.seek(0, 2)
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
