"""The function a fit fits: `"model": {"kind": …}` (shared/design/API.md, "Models beyond a line").

One class per kind, `kind` the discriminator a client generator reads. The line is the default and
the book's t_c = w·t_u + b, unchanged in every field; a polynomial of degree d fits
t_c = a0 + a1·t_u + … + ad·t_u^d (degree 2 is the chapter's exercise, w2·t_u² + w1·t_u + b).
Callendar–Van Dusen (platinum resistance thermometers) and Steinhart–Hart (thermistors) are fitted
after a change of variables (shared/domain/functions.py says how). The engine's side of each kind is
services/worker/engine/models.py; its parameters are named in the engine's order, each feature's
coefficient first and the constant last.
"""

from __future__ import annotations

from collections.abc import Iterable
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

    def needed(self, training_t_c: Iterable[float]) -> int:
        """The fewest training points that determine the parameters."""
        return 2

    def stored(self, training_t_c: Iterable[float] = ()) -> dict[str, Any] | None:
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

    def needed(self, training_t_c: Iterable[float]) -> int:
        return self.degree + 1

    def stored(self, training_t_c: Iterable[float] = ()) -> dict[str, Any] | None:
        return {"kind": "polynomial", "degree": self.degree}


class CallendarVanDusenModel(BaseModel):
    """IEC 60751's R(T) = R0·(1 + A·T + B·T² + C·(T − 100)·T³) (C for T < 0 only), t_u the resistance
    (Ω), t_c the temperature (°C) within −200…850: parameters A, B, C and R0. C is fitted only when a
    training point lies below 0 °C; else it is 0 and not among the fit's parameters."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"kind": "callendar_van_dusen"}})
    kind: Literal["callendar_van_dusen"] = Field(json_schema_extra={"example": "callendar_van_dusen"})

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return ("A", "B", "C", "R0")

    def needed(self, training_t_c: Iterable[float]) -> int:
        return 4 if _below_zero(training_t_c) else 3

    def stored(self, training_t_c: Iterable[float] = ()) -> dict[str, Any] | None:
        return {"kind": "callendar_van_dusen", "below_zero": _below_zero(training_t_c)}


class SteinhartHartModel(BaseModel):
    """1/(t_c + 273.15) = a + b·ln t_u + c·(ln t_u)³, t_u the resistance (Ω, > 0), t_c in °C:
    parameters b, c, a."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"kind": "steinhart_hart"}})
    kind: Literal["steinhart_hart"] = Field(json_schema_extra={"example": "steinhart_hart"})

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return ("b", "c", "a")

    def needed(self, training_t_c: Iterable[float]) -> int:
        return 3

    def stored(self, training_t_c: Iterable[float] = ()) -> dict[str, Any] | None:
        return {"kind": "steinhart_hart"}


def _below_zero(training_t_c: Iterable[float]) -> bool:
    return any(t < 0 for t in training_t_c)


AnyModel = LineModel | PolynomialModel | CallendarVanDusenModel | SteinhartHartModel
ModelSpec = Annotated[AnyModel, Field(discriminator="kind")]
TRANSFORMED = (CallendarVanDusenModel, SteinhartHartModel)

LINE_MODEL = LineModel(kind="line")


def parameters_of_all(names: Iterable[tuple[str, ...]]) -> list[str]:
    """The parameters of several models (each one's `parameter_names`), each once: the models with
    fewer parameters first (ties by name, so the order never depends on the order given), so that a
    mixed batch's columns read w, b, then a polynomial's a1 … a0."""
    merged: list[str] = []
    for of_one in sorted(set(names), key=lambda of: (len(of), of)):
        merged += [name for name in of_one if name not in merged]
    return merged


def model_from_stored(stored: dict[str, Any] | None) -> AnyModel:
    """The spec back from a fit's `model` column (null: the line)."""
    if stored is None:
        return LINE_MODEL
    if stored["kind"] == "callendar_van_dusen":
        return CallendarVanDusenModel(kind="callendar_van_dusen")
    if stored["kind"] == "steinhart_hart":
        return SteinhartHartModel(kind="steinhart_hart")
    return PolynomialModel(kind="polynomial", degree=int(stored["degree"]))
