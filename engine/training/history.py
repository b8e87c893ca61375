"""One entity's gold rows -> the gap-free history a model fits and the future rows it forecasts.

Training, backtests, the per-entity search and batch scoring all prepare rows here, so a model is
judged on exactly the inputs it will be given.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.errors import ManymodelsError
from engine.frequency import DAY_NS

if TYPE_CHECKING:
    from engine.training.entity import TrainSpec


class EmptySeries(ManymodelsError):
    """The entity has no observed target value."""


def prepare(rows: pd.DataFrame, spec: "TrainSpec") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Recent, gap-free history and the future rows to forecast (with exogenous values).

    Exogenous values for the future come from gold rows past the last observed target (e.g. an
    ingested weather forecast) where present. Otherwise a weather-like column takes the mean of
    the same hours around the same dates in earlier years when the history spans more than a
    year (normal weather), and anything else repeats the same position of the longest season
    (persistence): callers with real future values should pass them to the model directly.
    """
    exogenous = [c for c in spec.model.exogenous if c in rows]
    frame = rows[["ds", "y", *exogenous]]
    if not frame["ds"].is_monotonic_increasing:     # gold's rows usually come sorted already
        frame = frame.sort_values("ds", kind="stable")
    frame = frame.reset_index(drop=True)
    frame["y"] = frame["y"].astype("float64")
    observed = np.flatnonzero(frame["y"].notna().to_numpy())
    if not len(observed):
        raise EmptySeries("no observed target value: check the source rows for this entity")
    ahead = frame.iloc[observed[-1] + 1:]
    history = frame.iloc[max(observed[0], observed[-1] + 1 - spec.max_history): observed[-1] + 1].copy()
    notes = []
    missing = int(history["y"].isna().sum())
    if missing:
        history["y"] = history["y"].interpolate(limit_area="inside")
        notes.append(f"{missing} missing target values interpolated")
    for column in exogenous:
        values = history[column].astype("float64")
        if values.isna().all():
            history = history.drop(columns=column)
            notes.append(f"exogenous column {column!r} has no values for this entity: models fit without it")
        elif values.isna().any():
            history[column] = values.interpolate(limit_direction="both")
            notes.append(f"{int(values.isna().sum())} missing {column!r} values interpolated")
    history.index = pd.RangeIndex(len(history))
    return history, future_rows(history, ahead, spec), notes


def future_rows(history: pd.DataFrame, ahead: pd.DataFrame, spec: "TrainSpec") -> pd.DataFrame:
    """The `spec.horizon` steps after `history`, exogenous columns from `ahead` where known, else a
    scenario (see `prepare`); `attrs["scenario"]` names the columns filled by a scenario."""
    last = history["ds"].iloc[-1]
    ds = pd.date_range(last + spec.freq, periods=spec.horizon, freq=spec.freq)
    columns: dict[str, object] = {"ds": ds}
    lag = max(spec.model.usable_seasons(len(history), cycles=1), default=1)
    steps = np.arange(spec.horizon)
    # Where each future step sits in `ahead` (-1: not there). Every backtest window calls this
    # once per fold, so it stays in numpy rather than re-indexing frames per column.
    at = pd.Index(ahead["ds"]).get_indexer(ds) if len(ahead) else np.full(len(ds), -1)
    scenario = []
    for column in [c for c in history.columns if c not in ("ds", "y")]:
        known = np.full(len(ds), np.nan)
        if len(ahead):
            known[at >= 0] = ahead[column].to_numpy(dtype="float64")[at[at >= 0]]
        values = history[column].to_numpy(dtype="float64")
        fill = values[-lag:][steps % lag]
        if not np.isin(values, (0.0, 1.0)).all():      # weather, not a 0/1 calendar flag
            normal = same_dates_earlier_years(pd.Series(values, index=pd.DatetimeIndex(history["ds"])), ds)
            fill = np.where(np.isfinite(normal), normal, fill)
        columns[column] = np.where(np.isfinite(known), known, fill)
        if not np.isfinite(known).all():
            scenario.append(column)
    future = pd.DataFrame(columns)
    # Columns the forecast fills by a scenario: backtests fill them the same way (ex ante).
    future.attrs["scenario"] = tuple(scenario)
    return future


def same_dates_earlier_years(values: pd.Series, ds: pd.DatetimeIndex, days: int = 7) -> np.ndarray:
    """Per future step, the mean of the same time of day within +-`days` days of the same date in
    every earlier year the history covers (a normal-weather scenario), NaN with under a year."""
    first = values.index[0]
    if ds[0] - first < pd.Timedelta(days=365 + days):
        return np.full(len(ds), np.nan)
    years = range(1, int((ds[-1] - first).days // 365) + 1)
    back = np.array([365 * y - shift for y in years for shift in range(-days, days + 1)], dtype="int64") * DAY_NS
    # Every (year, shift) sample at once: exact stamp lookups in the sorted history, as a reindex does.
    stamps = pd.DatetimeIndex(values.index).as_unit("ns").asi8
    targets = pd.DatetimeIndex(ds).as_unit("ns").asi8[None, :] - back[:, None]
    at = np.minimum(np.searchsorted(stamps, targets), len(stamps) - 1)
    stacked = np.where(stamps[at] == targets, values.to_numpy(dtype="float64")[at], np.nan)
    counts = np.isfinite(stacked).sum(axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)
