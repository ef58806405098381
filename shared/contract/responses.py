"""Bodies as their response models serialize them: the models of shared/contract/schemas.py make both
/openapi.json and every JSON body served, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.contract.schemas import Served


def serve(model: type[Served], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` validated by `model` and dumped as JSON: a field the model does not declare, or a
    value of another type, fails here (a 500 and a failing test), never in a client. Fields left
    out stay out (exclude_unset), as the document's optional fields are."""
    return model.model_validate(fields).model_dump(mode="json", exclude_unset=True)
