"""What the regression task measures, torch-free, registered with the metrics registry by this module
alone (named in the task's `TASKS` entry):

    regress  {"y_true": targets, "y_pred": predictions}, one number each per example

MSE, RMSE, MAE and R² come from per-example sums (squared and absolute errors, and the moments of the
target), Pearson's r from the five sums of x, y, x², y² and xy: point values and bootstrap resamples go
through the same code. Spearman's ρ is a rank statistic, so each resample is ranked anew (average ranks
for ties, as scipy's spearmanr).
"""

from __future__ import annotations

import numpy as np

from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import Kind, Metric, register, require


def _prepare(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("y_true", "y_pred"), "regress", where)
    y, p = (np.asarray(inputs[key], dtype=float) for key in ("y_true", "y_pred"))
    for key, values in (("y_true", y), ("y_pred", p)):
        if values.ndim != 1 or not np.isfinite(values).all():
            raise LmtuneError(f"{where}: {key} must be one finite number per example")
    error = p - y
    columns = {
        "squared": (error**2)[:, None],
        "absolute": np.abs(error)[:, None],
        # x = truth, y = prediction: n is the row count of the aggregate
        "moments": np.column_stack([y, p, y * y, p * p, y * p]),
    }
    return {"n": n, "columns": columns, "y_true": y, "y_pred": p}


def _mse(agg: dict) -> np.ndarray:
    return agg["sums"]["squared"][:, 0] / agg["n"]


def _moments(agg: dict) -> tuple[np.ndarray, ...]:
    sx, sy, sxx, syy, sxy = agg["sums"]["moments"].T
    n = agg["n"]
    return sxx - sx * sx / n, syy - sy * sy / n, sxy - sx * sy / n  # n × variances and covariance


def _pearson(agg: dict) -> np.ndarray:
    vx, vy, cxy = _moments(agg)
    denominator = np.sqrt(np.maximum(vx, 0) * np.maximum(vy, 0))
    return np.where(denominator > 0, cxy / np.where(denominator > 0, denominator, 1), np.nan)


def _r2(agg: dict) -> np.ndarray:
    """1 − SSE / SST about the truth's mean (undefined when the truth is constant)."""
    vx, _, _ = _moments(agg)
    sse = agg["sums"]["squared"][:, 0]
    return np.where(vx > 0, 1 - sse / np.where(vx > 0, vx, 1), np.nan)


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _spearman(agg: dict) -> np.ndarray:
    data, idx = agg["data"], agg["idx"]
    y, p = data["y_true"], data["y_pred"]
    if idx is None:
        ry, rp = _ranks(y)[None], _ranks(p)[None]
    else:
        ry, rp = _ranks(y[idx]), _ranks(p[idx])
    ry, rp = ry - ry.mean(1, keepdims=True), rp - rp.mean(1, keepdims=True)
    denominator = np.sqrt((ry * ry).sum(1) * (rp * rp).sum(1))
    return np.where(denominator > 0, (ry * rp).sum(1) / np.where(denominator > 0, denominator, 1), np.nan)


METRICS = [
    Metric("mse", "regress", False, "mean squared error", _mse),
    Metric("rmse", "regress", False, "root mean squared error", lambda agg: np.sqrt(_mse(agg))),
    Metric(
        "mae", "regress", False, "mean absolute error", lambda agg: agg["sums"]["absolute"][:, 0] / agg["n"]
    ),
    Metric("pearson", "regress", True, "Pearson correlation of prediction and truth, -1..1", _pearson),
    Metric(
        "spearman", "regress", True, "Spearman rank correlation (average ranks for ties), -1..1", _spearman
    ),
    Metric("r2", "regress", True, "coefficient of determination, 1 - SSE/SST (≤ 1)", _r2),
]
register("regress", Kind(_prepare, ("spearman", "pearson", "mse"), truth="y_true"), METRICS)
