"""The Python client of calib:

    from services.client import Client            # or, installed alone: from calib_client import Client
    with Client() as calib:                       # CALIB_API_URL, CALIB_TOKEN (or the local token)
        fit = calib.fit(t_u, t_c, epochs=5000, input_scale=0.1).wait(progress=True)
        fit.result["w_raw"], fit.losses(as_array=True), fit.predict([51.8], interval=0.95)
        batch = calib.submit_batch({"A17": (t_u, t_c)}, epochs=5000).wait()
        batch.results()                           # a DataFrame when pandas is installed

Every error answer of the service raises CalibError (with its problem+json); 429 and 503
are retried with backoff first. `fit()` asks the service's pre-flight first and raises
WouldDiverge (a CalibError) when the learning rate diverges on the data, before anything is
submitted; `allow_divergence=True` submits anyway.
"""

from .client import Client
from .errors import CalibError, WouldDiverge
from .resources import Batch, Fit

__all__ = ["Batch", "CalibError", "Client", "Fit", "WouldDiverge"]
