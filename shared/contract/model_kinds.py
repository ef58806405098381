"""The function a fit fits: `"model": {"kind": …}` (shared/design/API.md, "Models beyond a line").

One class per kind, `kind` the discriminator a client generator reads. The line is the default and
the book's t_c = w·t_u + b, unchanged in every field; a polynomial of degree d fits
t_c = a0 + a1·t_u + … + ad·t_u^d (degree 2 is the chapter's exercise, w2·t_u² + w1·t_u + b).
The engine's side of each kind is services/worker/engine/models.py; its parameters are named in the
engine's order, each feature's coefficient first and the constant last.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.contract.numbers import whole


class LineModel(BaseModel):
    """The book's line, t_c = w·t_u + b: parameters w (slope) and b (intercept)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"kind": "line"}})
    kind: Literal["line"] = Field(json_schema_extra={"example": "line"})

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return ("w", "b")

    def stored(self) -> dict[str, Any] | None:
        """The fit's `model` column: null for the line, so every row from before models reads the same."""
        return None


class PolynomialModel(BaseModel):
    """t_c = a0 + a1·t_u + … + ad·t_u^d: parameters a1 … ad, then a0."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"kind": "polynomial", "degree": 2}})
    kind: Literal["polynomial"] = Field(json_schema_extra={"example": "polynomial"})
    degree: Annotated[int, Field(strict=True, ge=1, le=5), BeforeValidator(whole)] = Field(
        json_schema_extra={"example": 2}, description="1 to 5; the fit needs at least degree + 1 training points"
    )

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return (*(f"a{k}" for k in range(1, self.degree + 1)), "a0")

    def stored(self) -> dict[str, Any] | None:
        return {"kind": "polynomial", "degree": self.degree}


ModelSpec = Annotated[LineModel | PolynomialModel, Field(discriminator="kind")]

LINE_MODEL = LineModel(kind="line")


def model_from_stored(stored: dict[str, Any] | None) -> LineModel | PolynomialModel:
    """The spec back from a fit's `model` column (null: the line)."""
    if stored is None:
        return LINE_MODEL
    return PolynomialModel(kind="polynomial", degree=int(stored["degree"]))
