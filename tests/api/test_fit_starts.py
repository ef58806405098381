"""Where the fits of a JSON batch begin, found in its bytes as they arrive (services/api/fit_starts.py):
against Python's own parse of generated bodies, cut into pieces anywhere, strings holding every
byte that matters to the scan (quotes, backslashes, brackets, commas, colons)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.fit_starts import FitStarts, Marks

_TRICKY = st.text(alphabet=st.sampled_from(list('ab"\\[]{},: \n\u00e9\u2028')), max_size=12)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), _TRICKY)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TRICKY, inner, max_size=4)),
    max_leaves=12,
)
_FIT = st.fixed_dictionaries(
    {"t_u": st.lists(st.floats(allow_nan=False), max_size=6), "t_c": st.lists(st.floats(), max_size=6)},
    optional={"labels": st.dictionaries(_TRICKY, _TRICKY, max_size=3), "notes": _VALUES},
)
_FITS = st.lists(st.one_of(_FIT, _VALUES), max_size=8)
# Keys without escapes (a key with one is counted as fits: the second test), with brackets and commas.
_PLAIN_KEYS = st.text(alphabet=st.sampled_from(list("abfits[]{},: ")), max_size=8).filter(lambda key: key != "fits")
_OTHERS = st.dictionaries(_PLAIN_KEYS, _VALUES, max_size=3)


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({0, len(body), *(cut % (len(body) + 1) for cut in cuts)})
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False)]


def _found(pieces: list[bytes]) -> tuple[int, list[int]]:
    starts, at = FitStarts(), 0
    positions: list[int] = []
    for piece in pieces:
        positions += [at + int(p) for p in starts.of(piece, Marks(piece))]
        at += len(piece)
    return starts.fits, positions


def _dumped(body: dict[str, Any], spaced: bool, ascii_only: bool) -> bytes:
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(body, separators=separators, ensure_ascii=ascii_only).encode()


@settings(max_examples=300, deadline=None)
@given(
    fits=_FITS,
    before=_OTHERS,
    after=_OTHERS,
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
    spaced=st.booleans(),
    ascii_only=st.booleans(),
)
def test_every_fit_is_found_where_it_begins_however_the_body_is_cut(
    fits: list[Any], before: dict[str, Any], after: dict[str, Any], cuts: list[int], spaced: bool, ascii_only: bool
) -> None:
    body = _dumped({**before, "fits": fits, **after}, spaced, ascii_only)
    count, positions = _found(_pieces(body, cuts))
    # An empty fits array counts as one: a bound, never below what the parse finds.
    assert count == max(len(fits), 1)
    # Each position is where an element begins: the `[` of the array, then each comma after an element.
    opening = body.index(b'"fits"' + (b": [" if spaced else b":[")) + len(b'"fits"') + (2 if spaced else 1)
    assert positions[0] == opening
    for position in positions[1:]:
        assert body[position : position + 1] == b","
    # Parsing the fits array from each start onwards finds each element in order.
    decoder = json.JSONDecoder()
    for index, position in enumerate(positions[: len(fits)]):
        at = len(body[: position + 1].decode()) + (1 if spaced and index else 0)
        element, _ = decoder.raw_decode(body.decode(), at)
        assert json.dumps(element) == json.dumps(fits[index])  # NaN is not equal to itself


@settings(max_examples=100, deadline=None)
@given(fits=_FITS, cuts=st.lists(st.integers(0, 10**6), max_size=6))
def test_a_key_that_cannot_be_read_back_counts_its_array_as_fits(fits: list[Any], cuts: list[int]) -> None:
    # `fi\u0074s` is `fits` to a parser; an escaped key is never read, its array always counted.
    escaped = b'{"fi\\u0074s": ' + json.dumps(fits).encode() + b', "other": [1, 2, 3]}'
    assert _found(_pieces(escaped, cuts))[0] == max(len(fits), 1)
    # Whitespace past the bytes kept before a key: counted as fits too, a bound the parse then makes exact.
    far = b'{"notes"' + b" " * 300 + b": [1, 2, 3, 4], " + b'"fits": ' + json.dumps(fits).encode() + b"}"
    assert _found(_pieces(far, cuts))[0] == max(len(fits), 1) + 4
