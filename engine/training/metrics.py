"""Forecast accuracy metrics for one backtest window (NaN-free inputs)."""
from __future__ import annotations

import numpy as np

from engine.models.base import Forecast


def mase_scale(history: np.ndarray, season: int) -> float:
    """In-sample mean absolute seasonal difference (Hyndman & Koehler 2006); 1-step if too short."""
    m = season if len(history) > season else 1
    diffs = np.abs(history[m:] - history[:-m]) if len(history) > m else np.array([])
    scale = float(np.mean(diffs)) if len(diffs) else 0.0
    return scale if scale > 0 else np.nan


def window_metrics(actual: np.ndarray, forecast: Forecast, scale: float) -> dict[str, float]:
    error = actual - forecast.mean
    denominator = np.abs(actual) + np.abs(forecast.mean)
    smape_terms = np.divide(2 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    out = {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error ** 2))),
           "smape": float(100 * np.mean(smape_terms)), "mase": float(np.mean(np.abs(error)) / scale)}
    for level, (lower, upper) in forecast.bounds.items():
        out[f"coverage_{level}"] = float(np.mean((actual >= lower) & (actual <= upper)))
    return out
