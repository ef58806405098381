"""One example object per schema of the OpenAPI document, each declared by its model
(shared/contract/schemas.py: `json_schema_extra`); every property without an example of its own
takes its value from its schema's (services/api/openapi.py), so each field is shown.

The fit is the book's split run (thermometer.json, `validation_split_run`) with early stopping
on the validation loss ({"min_delta": 0.001, "patience": 10}), as the engine computes it; the
options that do not apply to it (input_shift, delta, momentum, betas, eps) show their form only.
"""

from __future__ import annotations

from typing import Any

FIT_ID = "3f2c9a4e-8d1b-4c57-9e0a-5b7d2f6c1a88"
BATCH_ID = "9a1e7c3d-2b4f-4e8a-8c6d-1f0b5a7e3c92"

PARAMS = {
    "learning_rate": 0.01,
    "init": {"w": 1.0, "b": 0.0},
    "input_scale": 0.1,
    "normalize": "scale",
    "input_shift": 49.244444,
    "optimizer": "sgd",
    "gradient": "analytic",
    "delta": 0.1,
    "momentum": 0.9,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "optimizer_options": {},
    "validation": {"fraction": None, "seed": None, "indices": [2, 10]},
    "early_stopping": {"monitor": "val_loss", "min_delta": 0.001, "patience": 10},
    "convergence_tolerance": 0.01,
    "epochs_auto": False,
}

RESULT = {
    "w": 5.191276,
    "b": -16.723455,
    "loss": 3.012858,
    "last_epoch_loss": 3.0129,
    "w_raw": 0.5191276,
    "b_raw": -16.723455,
    "w_opt": 0.520504,
    "b_opt": -16.798596,
    "gap": {"w": -0.0013764, "b": 0.075141},
    "se_w": 0.039696,
    "se_b": 2.061926,
    "cov_wb": -0.077597,
    "r2": 0.960879,
    "residual_sd": 1.967979,
    "val_loss": 3.593790,
    "last_epoch_val_loss": 3.5939,
    "converged": False,
    "convergence": {
        "gap_se_w": -0.034674,
        "gap_se_b": 0.036442,
        "excess_loss": 0.000412,
        "epochs_needed": None,
        "gap_se": {"w": -0.034674, "b": 0.036442},
    },
    "parameter_names": ["w", "b"],
    "parameters": {"w": 0.5191276, "b": -16.723455},
    "parameters_opt": {"w": 0.520504, "b": -16.798596},
    "standard_uncertainties": {"w": 0.039696, "b": 2.061926},
    "covariance": [[0.0015757724, -0.077597], [-0.077597, 4.251539]],
}

FIT = {
    "id": FIT_ID,
    "status": "succeeded",
    "created_at": "2026-11-27T09:30:00.000Z",
    "started_at": "2026-11-27T09:30:00.020Z",
    "finished_at": "2026-11-27T09:30:00.050Z",
    "epochs": 3000,
    "epochs_done": 2765,
    "n_points": 11,
    "attempt": 1,
    "params": PARAMS,
    "labels": {"sensor": "A17"},
    "instrument": "TT-101",
    "batch_id": None,
    "result": RESULT,
    "diverged_at_epoch": None,
    "stop_reason": "early_stopped",
    "losses_pruned": False,
    "lr_max": 0.035864,
    "condition_number": 284.69,
    "warnings": [],
    "error": None,
    "links": {"self": f"/v1/fits/{FIT_ID}", "losses": f"/v1/fits/{FIT_ID}/losses", "data": f"/v1/fits/{FIT_ID}/data"},
}

BUCKET = {
    "first_epoch": 1,
    "last_epoch": 3,
    "min": 33.3475,
    "max": 66.5811,
    "last": 33.3475,
    "val_min": 39.459,
    "val_max": 142.389,
    "val_last": 39.459,
}

DRIFT = {"chi2": 41.7, "p_value": 8.8e-10, "flagged": True, "as_found_rms": 0.412, "as_left_rms": 0.051}
CALIBRATION = {
    "fit_id": FIT_ID,
    "calibrated_at": "2026-11-27T23:00:00.000Z",
    "model": {"kind": "line"},
    "parameters": {"w": 0.50412, "b": -16.6213},
    "standard_uncertainties": {"w": 0.00061, "b": 0.0352},
    "w_raw": 0.50412,
    "b_raw": -16.6213,
    "se_w": 0.00061,
    "se_b": 0.0352,
    "cov_wb": -1.81e-5,
    "r2": 0.99998,
    "n_points": 20,
    "converged": True,
    "drift": DRIFT,
}
INSTRUMENT = {
    "id": "TT-101",
    "calibrations": 2,
    "current": CALIBRATION,
    "tolerance": 0.5,
    "next_due": None,
    "links": {"self": "/v1/instruments/TT-101"},
}

ATTEMPTS = [
    {
        "number": 1,
        "started_at": "2026-11-27T09:31:02.114Z",
        "status_code": 500,
        "error": "answered 500",
        "seconds": 0.02,
    },
    {"number": 2, "started_at": "2026-11-27T09:31:07.391Z", "status_code": 200, "error": None, "seconds": 0.018},
]
DELIVERY = {
    "id": "5b0c7e2a-1f3d-4c8e-9a6b-2d4f8e1c3a57",
    "event": "batch.ended",
    "subject_id": BATCH_ID,
    "url": "https://hooks.example.com/calib",
    "status": "delivered",
    "created_at": "2026-11-27T09:31:02.101Z",
    "next_attempt_at": None,
    "delivered_at": "2026-11-27T09:31:07.409Z",
    "attempts": ATTEMPTS,
}

WEBHOOK_ATTEMPT_PUBLIC_EXAMPLE: Any = ATTEMPTS[0]
WEBHOOK_DELIVERY_PUBLIC_EXAMPLE: Any = DELIVERY
WEBHOOK_DELIVERY_LIST_EXAMPLE: Any = {"items": [DELIVERY], "next": None}
DRIFT_EXAMPLE: Any = DRIFT
CALIBRATION_PUBLIC_EXAMPLE: Any = CALIBRATION
INSTRUMENT_SUMMARY_EXAMPLE: Any = INSTRUMENT
INSTRUMENT_PUBLIC_EXAMPLE: Any = {**INSTRUMENT, "history": [CALIBRATION, {**CALIBRATION, "drift": None}]}
INSTRUMENT_LIST_EXAMPLE: Any = {"items": [INSTRUMENT], "next": "/v1/instruments?limit=100&cursor=TT-101"}
INSTRUMENT_UPDATE_EXAMPLE: Any = {
    "tolerance": 0.5,
    "limits": {"lower": -0.5, "upper": 0.5},
    "decision_rule": "guard_band",
    "coverage_factor": 2.0,
}
INIT_EXAMPLE: Any = {"w": 1.0, "b": 0.0}
# A whole request, as a client would send it (the book's thermometer, run to convergence).
FIT_CREATE_EXAMPLE: Any = {
    "t_u": [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4],
    "t_c": [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0],
    "epochs": "auto",
    "input_scale": 0.1,
    "labels": {"sensor": "A17"},
    "instrument": "TT-101",
}
FIT_PREFLIGHT_EXAMPLE: Any = {
    "n_points": 11,
    "learning_rate": 0.01,
    "lr_max": 0.00033994,
    "condition_number": 33598.86,
    "stable": False,
    "warnings": [
        "learning_rate 0.01 exceeds the stable limit 0.00034: this fit will diverge",
        "condition number 3.4e+04: gradient descent converges slowly along the flattest direction; "
        "scaling t_u (input_scale) toward unit size helps",
    ],
    "suggestion": {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"},
}
SUGGESTION_EXAMPLE: Any = {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}
PREDICT_REQUEST_EXAMPLE: Any = {"t_u": [35.7, 90.0], "interval": 0.95}
PREDICTION_EXAMPLE: Any = {"fit_id": FIT_ID, "t_c": [2.054, 30.244], "lower": [-2.61, 24.87], "upper": [6.72, 35.62]}
INVERSE_REQUEST_EXAMPLE: Any = {"t_c": [10.5], "u_t_c": 0.5}
INVERSE_EXAMPLE: Any = {"fit_id": FIT_ID, "t_u": [52.44], "u_t_u": [1.61], "converged": True}
BATCH_CREATE_EXAMPLE: Any = {
    "defaults": {"epochs": 5000, "input_scale": 0.1},
    "fits": [{"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0], "labels": {"sensor": "A17"}}],
}
PARAMS_EXAMPLE: Any = PARAMS
RESULT_EXAMPLE: Any = RESULT
GAP_EXAMPLE: Any = RESULT["gap"]
VALIDATION_USED_EXAMPLE: Any = PARAMS["validation"]
EARLY_STOPPING_USED_EXAMPLE: Any = PARAMS["early_stopping"]
FIT_ERROR_EXAMPLE: Any = {"type": "worker_lost", "detail": "the worker running this fit was lost 3 times"}
FIT_PUBLIC_EXAMPLE: Any = FIT
FIT_LIST_EXAMPLE: Any = {"items": [FIT], "next": "/v1/fits?cursor=MjAyNi0xMS0yN1Qw&limit=100"}
LOSS_PAGE_EXAMPLE: Any = {
    "fit_id": FIT_ID,
    "epochs_done": 2765,
    "start": 1,
    "loss": [66.5811, 38.8626, 33.3475],
    "val_loss": [142.389, 64.0434, 39.459],
    "next": f"/v1/fits/{FIT_ID}/losses?start=10001&limit=10000",
}
LOSS_BUCKET_EXAMPLE: Any = BUCKET
FIT_DATA_EXAMPLE: Any = {
    "fit_id": FIT_ID,
    "t_u": [35.7, 55.9, 58.2],
    "t_c": [0.5, 14.0, 15.0],
    "validation_indices": [2],
}
LOSS_BUCKETS_EXAMPLE: Any = {"fit_id": FIT_ID, "epochs_done": 2765, "start": 1, "end": 2765, "buckets": [BUCKET]}
PROBLEM_EXAMPLE: Any = {
    "type": "urn:calib:problem:invalid-field",
    "title": "Invalid field",
    "status": 422,
    "detail": "validation.indices[1]: index 11 is past the last point (10)",
    "errors": [
        {"loc": ["validation", "indices", 1], "msg": "index 11 is past the last point (10)", "type": "out_of_range"}
    ],
}
BATCH_PUBLIC_EXAMPLE: Any = {
    "id": BATCH_ID,
    "count": 10000,
    "status": "running",
    "counts": {
        "queued": 5904,
        "running": 4096,
        "succeeded": 0,
        "diverged": 0,
        "failed": 0,
        "cancelled": 0,
        "not_converged": 0,
    },
    "drifted": 0,
    "created_at": "2026-11-27T09:30:00.000Z",
    "finished_at": None,
    "links": {"self": f"/v1/batches/{BATCH_ID}", "fits": f"/v1/batches/{BATCH_ID}/fits"},
}
# A guard-banded decision on two points (limits ±0.5, k = 2).
DECISION_POINT_EXAMPLE: Any = {
    "t_u": 50.0,
    "t_c": 10.4,
    "error": 0.3,
    "u": 0.12,
    "probability_of_conformity": 0.9522,
    "verdict": "conditional pass",
}
DECISION_EXAMPLE: Any = {
    "points": [
        {"t_u": 20.0, "t_c": -6.1, "error": 0.05, "u": 0.1, "probability_of_conformity": 1.0, "verdict": "pass"},
        DECISION_POINT_EXAMPLE,
    ],
    "verdict": "conditional pass",
}
LIMITS_EXAMPLE: Any = {"lower": -0.5, "upper": 0.5}
