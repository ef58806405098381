"""A one-line progress bar on stderr (redrawn in place on a terminal, one line per update otherwise)."""

from __future__ import annotations

import sys


class Bar:
    def __init__(self, total: int, label: str, width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 1), label, width
        self.tty = sys.stderr.isatty()
        self.shown: tuple[int, str] | None = None

    def show(self, done: int, note: str = "") -> None:
        if self.shown == (done, note):
            return
        self.shown = (done, note)
        filled = int(self.width * min(done, self.total) / self.total)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {note}"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
