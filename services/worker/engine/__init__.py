"""The gradient-descent engine: pure functions on tensors, no Celery, no database.

`reference_fit` is the book's per-epoch loop (chapter 5), batched over fits;
`GradientDescent` is the exact fast path for optimizer "gd", which computes
every epoch's loss in closed form from five averages of each fit's data.
"""

from services.worker.engine.closed_form import GradientDescent
from services.worker.engine.device import pick_device
from services.worker.engine.reference import FitOutcome, reference_fit
from services.worker.engine.series import SeriesBatch

__all__ = ["FitOutcome", "GradientDescent", "SeriesBatch", "pick_device", "reference_fit"]
