"""Forecast accuracy metrics for one backtest window (NaN-free inputs).

Point forecasts are scored by MAE, RMSE, sMAPE and MASE; the intervals by the empirical
coverage of each level and by the pinball (quantile) loss averaged over the quantiles the
forecast gives: the median (the point forecast) and each level's two bounds. Scaled like MASE,
so entities of any size compare; over a dense grid of quantiles it approaches the CRPS, and it
rewards intervals that are both calibrated and sharp (`backtest.metric: pinball`)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from engine.models.base import Forecast


def mase_scale(history: np.ndarray, season: int) -> float:
    """In-sample mean absolute seasonal difference (Hyndman & Koehler 2006); 1-step if too short."""
    m = season if len(history) > season else 1
    diffs = np.abs(history[m:] - history[:-m]) if len(history) > m else np.array([])
    scale = float(np.mean(diffs)) if len(diffs) else 0.0
    return scale if scale > 0 else np.nan


def window_metrics(actual: np.ndarray, forecast: Forecast, scale: float,
                   observed: Optional[np.ndarray] = None) -> dict[str, float]:
    """The window's metrics over its `observed` steps (a mask; all when None)."""
    if observed is not None and not observed.all():
        actual, forecast = actual[observed], forecast.at(observed)
    error = actual - forecast.mean
    denominator = np.abs(actual) + np.abs(forecast.mean)
    smape_terms = np.divide(2 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    out = {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
           "smape": float(100 * np.mean(smape_terms)), "mase": float(np.mean(np.abs(error)) / scale)}
    out["pinball"] = float(np.mean([_pinball(actual, q, path) for q, path in quantile_paths(forecast)]) / scale)
    for level, (lower, upper) in forecast.bounds.items():
        out[f"coverage_{level}"] = float(np.mean((actual >= lower) & (actual <= upper)))
    return out


def quantile_paths(forecast: Forecast) -> list[tuple[float, np.ndarray]]:
    """(quantile, path) pairs of a forecast: the mean as the median and each central level's bounds."""
    paths = [(0.5, forecast.mean)]
    for level, (lower, upper) in sorted(forecast.bounds.items()):
        paths += [(0.5 - level / 200.0, lower), (0.5 + level / 200.0, upper)]
    return paths


def _pinball(actual: np.ndarray, q: float, path: np.ndarray) -> float:
    diff = actual - path
    return float(np.mean(np.maximum(q * diff, (q - 1.0) * diff)))
