"""The one exception the client raises for anything the service answered with an error."""

from __future__ import annotations

from typing import Any


class CalibError(Exception):
    """An error answer of the service (its problem+json), or no answer at all (status 0).

    `problem` is the body as the service sent it: `type`, `title`, `status`, `detail`, and
    for invalid fields `errors`, each with the `loc` of the field and a `msg`.
    """

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status}: {self.detail}" if status else self.detail)

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or self.problem)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.problem.get("errors") or [])


class WouldDiverge(CalibError):
    """Raised before submitting, by `Client.fit`: the service's pre-flight says gradient descent at
    this learning rate diverges on this data. `suggestion` holds options that converge; pass
    `allow_divergence=True` to submit anyway (the book's own divergent run, say)."""

    def __init__(self, preflight: dict[str, Any]) -> None:
        self.preflight = preflight
        self.suggestion: dict[str, Any] = dict(preflight.get("suggestion") or {})
        detail = (
            f"learning_rate {preflight['learning_rate']:g} exceeds the stable limit {preflight['lr_max']:.2g} "
            f"of this data: the fit would diverge. These options converge: {self.suggestion}"
        )
        super().__init__(0, {"title": "would diverge", "detail": detail})
