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
    return float(mase_scales(np.asarray(history, dtype="float64")[None], season)[0])


def mase_scales(histories: np.ndarray, season: int) -> np.ndarray:
    """`mase_scale` of each row of (E, T) `histories` in one pass: a row's differences are one
    contiguous row whose mean sums pairwise, as np.mean of that row alone does (to the last bit)."""
    n = histories.shape[1]
    m = season if n > season else 1
    if n <= m:
        return np.full(len(histories), np.nan)
    scale = np.abs(histories[:, m:] - histories[:, :-m]).mean(axis=1)
    return np.where(scale > 0, scale, np.nan)


def window_metrics(actual: np.ndarray, forecast: Forecast, scale: float,
                   observed: Optional[np.ndarray] = None) -> dict[str, float]:
    """The window's metrics over its `observed` steps (a mask; all when None)."""
    if observed is not None and not observed.all():
        actual, forecast = actual[observed], forecast.at(observed)
    return windows_metrics(actual[None], [forecast], np.array([scale], dtype="float64"))[0]


def windows_metrics(actual: np.ndarray, forecasts: list[Forecast], scale: np.ndarray) -> list[dict[str, float]]:
    """`window_metrics` of windows of one length at once, every step scored: row i of `actual`
    (E, steps) against `forecasts[i]` (all with the same levels), scaled by `scale[i]`. A panel's
    windows (engine.training.panel) are scored here in one pass; each row's reductions are those
    of the row alone, so its figures are the same to the last bit."""
    mean = np.stack([f.mean for f in forecasts])
    error = actual - mean
    denominator = np.abs(actual) + np.abs(mean)
    smape_terms = np.divide(2 * np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    absolute = np.mean(np.abs(error), axis=1)
    out = {"mae": absolute, "rmse": np.sqrt(np.mean(error ** 2, axis=1)), "smape": 100 * np.mean(smape_terms, axis=1),
           "mase": absolute / scale}
    paths = [quantile_paths(f) for f in forecasts]
    losses = [_pinball(actual, q, np.stack([p[k][1] for p in paths])) for k, (q, _) in enumerate(paths[0])]
    out["pinball"] = np.mean(np.stack(losses), axis=0) / scale
    for level in forecasts[0].bounds:
        lower, upper = (np.stack([f.bounds[level][side] for f in forecasts]) for side in (0, 1))
        out[f"coverage_{level}"] = np.mean((actual >= lower) & (actual <= upper), axis=1)
    return [{name: float(values[i]) for name, values in out.items()} for i in range(len(forecasts))]


def quantile_paths(forecast: Forecast) -> list[tuple[float, np.ndarray]]:
    """(quantile, path) pairs of a forecast: the mean as the median and each central level's bounds."""
    paths = [(0.5, forecast.mean)]
    for level, (lower, upper) in sorted(forecast.bounds.items()):
        paths += [(0.5 - level / 200.0, lower), (0.5 + level / 200.0, upper)]
    return paths


def _pinball(actual: np.ndarray, q: float, path: np.ndarray) -> np.ndarray:
    """Each row's mean pinball loss of quantile `q`'s `path` (rows as `actual`'s)."""
    diff = actual - path
    return np.mean(np.maximum(q * diff, (q - 1.0) * diff), axis=-1)
