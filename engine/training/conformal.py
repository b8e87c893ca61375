"""Conformal intervals: each entity's bands from its champion's own backtest errors.

A model's intervals rest on its assumptions (Gaussian, homoscedastic errors), and load breaks
them. With `training.intervals: conformal` the champion's bands at each horizon step are the mean
plus or minus the `level` quantile of its absolute backtest errors at that step, pooled with the
neighbouring steps until at least MIN_POOL errors back each quantile (three windows give three
errors per step: too few for a 95% band). The widths travel in the model, so the routing model
serves the same bands. The coverage reported for them is leave-one-window-out: each window is
scored with widths computed from the other windows, never from its own errors.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from engine.models.base import Forecast
from engine.training.metrics import window_metrics

MIN_POOL = 50


def widths(errors: np.ndarray, levels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Half-widths per level and step from `errors` (windows x steps of actual - forecast)."""
    errors = np.abs(np.asarray(errors, dtype="float64"))
    windows, steps = errors.shape
    span = min(steps, int(np.ceil(MIN_POOL / windows)))     # steps pooled, centred where the range allows
    out = {level: np.empty(steps) for level in levels}
    for step in range(steps):
        lo = min(max(0, step - span // 2), steps - span)
        pool = errors[:, lo:lo + span].ravel()
        for level in levels:
            # The finite-sample conformal quantile: rank ceil((n + 1) * level) of n errors.
            rank = min(len(pool), int(np.ceil((len(pool) + 1) * level / 100)))
            out[level][step] = np.partition(pool, rank - 1)[rank - 1]
    return out


def held_out_scores(actual: np.ndarray, mean: np.ndarray, scales: np.ndarray, levels: tuple[int, ...],
                    floor: float | None, observed: Sequence[Optional[np.ndarray]] = ()) -> dict[str, float]:
    """Coverage of each level and the pinball loss (scaled per window like MASE) of conformal
    bands, each window scored with widths from the other windows (`actual`, `mean`: windows x steps)
    over its `observed` steps (a mask per window, None: all), as the backtests score every band."""
    keys = [f"coverage_{level}" for level in levels] + ["pinball"]
    scored = []
    for w, bands in enumerate(held_out_bands(actual, mean, levels, floor)):
        metrics = window_metrics(actual[w], bands, scales[w], observed[w] if len(observed) else None)
        scored.append([metrics[k] for k in keys])
    return dict(zip(keys, np.mean(scored, axis=0).astype(float).tolist()))


def held_out_bands(actual: np.ndarray, mean: np.ndarray, levels: tuple[int, ...],
                   floor: float | None) -> list[Forecast]:
    """Each window's conformal bands, with widths from the other windows' errors."""
    out = []
    for w in range(len(actual)):
        half = widths(np.delete(actual - mean, w, axis=0), levels)
        bands = Forecast(mean[w], {level: (mean[w] - half[level], mean[w] + half[level]) for level in levels})
        out.append(bands.clipped(floor) if floor is not None else bands)
    return out
