"""Where each fit of a JSON batch begins, found in the body's bytes as they arrive, in numpy.

A JSON batch is `{"fits": [fit, fit, ...], ...}`: a fit begins at the `[` of a top-level array
under the key `fits` and after every comma directly inside it. Finding those needs only the
body's containers and strings, not its values: the quotes that open and close strings (a quote
after an odd run of backslashes is inside one), the brackets and braces outside strings (their
depth by a cumulative sum), and the commas at depth 2 inside a `fits` array. Each piece costs a
few passes of numpy over its bytes and a Python step per top-level array, so the fits of a body
are counted, and each fit's share of the body bounded, as it is received, at a fraction of what
parsing it costs (json_batch.py parses each fit once the whole body has passed these checks).

The count is an upper bound, never below what the parse will find, for any body: a top-level
array whose key cannot be read back from the bytes before it (an escape in the key, whitespace
past the bytes kept) is counted as `fits`, and an empty `fits` array as holding one fit. A body
that is not JSON is followed all the same and refused by the parse.
"""

from __future__ import annotations

import re

import numpy as np

# Each byte that matters, by kind (bytes.translate and one nonzero: ~1.5 ms a MiB); 0 for the rest.
COMMA, OPEN_ARRAY, OPEN_OBJECT, CLOSE_ARRAY, CLOSE_OBJECT, QUOTE, COLON, BACKSLASH = range(1, 9)
_KINDS = bytearray(256)
for _byte, _kind in zip(b',[{]}":\\', range(1, 9), strict=True):
    _KINDS[_byte] = _kind
_TABLE = bytes(_KINDS)
# The key before a container: a string without escapes, a colon, whitespace, the end of the bytes.
_KEY = re.compile(rb'"([^"\\]*)"[ \t\r\n]*:[ \t\r\n]*\Z')
_TAIL = 256  # bytes of the previous pieces kept to read a key that a piece's edge cuts
# Top-level arrays whose key is read; past this many (a legal batch has one) every one counts as fits
# (json_batch.py refuses such a body: a batch's top level has one array, `fits`).
KEYS_READ = 1000


class Marks:
    """A piece's commas, and its other bytes that matter (brackets, braces, quotes, colons,
    backslashes) with their kinds and the number of commas before each."""

    def __init__(self, piece: bytes) -> None:
        kinds = np.frombuffer(piece.translate(_TABLE), dtype=np.uint8)
        at = np.flatnonzero(kinds.view(bool))
        of = kinds[at]
        is_comma = of == COMMA
        self.commas = at[is_comma]
        others = np.flatnonzero(~is_comma)
        self.positions = at[others]
        self.kinds = of[others]
        self.commas_before = others - np.arange(len(others))
        # The brackets and braces that open (strings' included), separators like the commas.
        self.opens = self.positions[(self.kinds == OPEN_ARRAY) | (self.kinds == OPEN_OBJECT)]

    @property
    def separators(self) -> int:
        """The values the piece can hold at most: its commas, and its brackets and braces that open."""
        return len(self.commas) + len(self.opens)


class FitStarts:
    """Follows a JSON body piece by piece; `fits` is how many fits have begun so far."""

    def __init__(self) -> None:
        self.fits = 0
        self.depth = 0
        self.in_string = 0
        self.backslashes = 0  # the run of backslashes that ended the last piece
        self.in_fits = False  # the container open at depth 2 is a `fits` array
        self.tail = b""
        self.keys_read = 0  # top-level arrays opened so far (their keys read, up to KEYS_READ)

    def of(self, piece: bytes, marks: Marks) -> np.ndarray:
        """The positions in `piece` where a fit begins, in order; `fits` counts them."""
        quotes = self._quotes(piece, marks)
        is_bracket = (marks.kinds >= OPEN_ARRAY) & (marks.kinds <= CLOSE_OBJECT)
        is_bracket &= self._outside(quotes, marks.positions)
        brackets = marks.positions[is_bracket]
        starts = self._starts(piece, marks, brackets, marks.kinds[is_bracket], marks.commas_before[is_bracket], quotes)
        self.in_string = (self.in_string + len(quotes)) & 1
        self.tail = (self.tail + piece[-_TAIL:])[-_TAIL:]
        self.fits += len(starts)
        return starts

    def _quotes(self, piece: bytes, marks: Marks) -> np.ndarray:
        """The quotes that open or close a string: those after an even run of backslashes."""
        quotes: np.ndarray = marks.positions[marks.kinds == QUOTE]
        carried = self.backslashes
        if not carried and not np.any(marks.kinds == BACKSLASH):
            return quotes
        data = np.frombuffer(piece, dtype=np.uint8)
        n = len(data)
        at = np.arange(n)
        last_other = np.maximum.accumulate(np.where(data == ord("\\"), -1, at))  # the last byte that is not one
        if len(quotes):
            before = np.maximum(quotes - 1, 0)
            run = np.where(last_other[before] < 0, quotes + carried, before - last_other[before])
            run = np.where(quotes == 0, carried, run)
            quotes = quotes[run % 2 == 0]
        self.backslashes = n - 1 - int(last_other[-1]) + (carried if last_other[-1] < 0 else 0) if n else carried
        return quotes

    def _outside(self, quotes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Which of `positions` (none of them a quote) lie outside every string."""
        outside: np.ndarray = ((self.in_string + np.searchsorted(quotes, positions)) & 1) == 0
        return outside

    def _starts(
        self,
        piece: bytes,
        marks: Marks,
        brackets: np.ndarray,
        kinds: np.ndarray,
        commas_before: np.ndarray,
        quotes: np.ndarray,
    ) -> np.ndarray:
        opens = ((kinds == OPEN_ARRAY) | (kinds == OPEN_OBJECT)).astype(np.int64)
        step = 2 * opens - 1
        after = self.depth + np.cumsum(step)
        before = after - step
        start_depth, start_in_fits = self.depth, self.in_fits
        if len(after):
            self.depth = int(after[-1])
        # The containers opened and closed at depth 2: each array opened under the key `fits` is one.
        top_level = np.flatnonzero(((opens == 1) & (before == 1)) | ((opens == 0) & (after == 1)))
        flags = np.zeros(len(top_level), dtype=bool)
        fits_opened = []
        for i, k in enumerate(top_level.tolist()):
            position = int(brackets[k])
            if kinds[k] == OPEN_ARRAY and self._is_fits(piece, position):
                flags[i] = True
                fits_opened.append(position)
        if len(flags):
            self.in_fits = bool(flags[-1])
        # Commas directly inside a fits array: in a stretch between brackets, at depth 2, under fits.
        edges = np.concatenate(([0], commas_before, [len(marks.commas)]))
        depths = np.concatenate(([start_depth], after))
        under_fits = np.concatenate(([start_in_fits], flags))[np.searchsorted(top_level, np.arange(len(after) + 1))]
        stretches = np.flatnonzero((depths == 2) & under_fits & (edges[1:] > edges[:-1]))
        found = [marks.commas[edges[s] : edges[s + 1]] for s in stretches.tolist()]
        between = np.concatenate(found) if found else marks.commas[:0]
        between = between[self._outside(quotes, between)]
        starts: np.ndarray = np.sort(np.concatenate((np.asarray(fits_opened, dtype=np.int64), between)))
        return starts

    def _is_fits(self, piece: bytes, position: int) -> bool:
        """Whether the top-level array opening at `position` is `fits`: unless its key reads as
        another string, it is counted as one."""
        self.keys_read += 1
        if self.keys_read > KEYS_READ:
            return True
        before = piece[max(0, position - _TAIL) : position]
        if len(before) < _TAIL:
            before = self.tail[len(before) - _TAIL :] + before
        key = _KEY.search(before)
        return key is None or key.group(1) == b"fits"
