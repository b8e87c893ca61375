"""One entity's gold rows -> the gap-free history a model fits and the future rows it forecasts.

Training, backtests, the per-entity search and batch scoring all prepare rows here, so a model is
judged on exactly the inputs it will be given.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from engine.errors import ManymodelsError
from engine.frequency import DAY_NS

if TYPE_CHECKING:
    from engine.training.entity import TrainSpec


class EmptySeries(ManymodelsError):
    """The entity has no observed target value."""


def prepare(rows: pd.DataFrame, spec: "TrainSpec") -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Recent, gap-free history and the future rows to forecast (with exogenous values), and
    what was repaired (see `prepare_scored`)."""
    history, future, notes, _ = prepare_scored(rows, spec)
    return history, future, notes


def prepare_scored(rows: pd.DataFrame, spec: "TrainSpec") \
        -> tuple[pd.DataFrame, pd.DataFrame, list[str], np.ndarray]:
    """Recent, gap-free history and the future rows to forecast (with exogenous values), the
    notes on what was repaired, and which of the history's rows were not observed: imputed in
    gold (`is_imputed`) or interpolated here. A backtest scores forecasts on the observed ones
    only: an imputed value is the imputation's guess, and a model that copies it (seasonal naive
    of a gap filled from the week before) would look perfect.

    Exogenous values for the future come from gold rows past the last observed target (e.g. an
    ingested weather forecast) where present. Otherwise a weather-like column takes the mean of
    the same hours around the same dates in earlier years when the history spans more than a
    year (normal weather), plus what is expected to persist of the last day's departure from it
    (`training.weather: persisted`, see `persisted_departure`), and anything else repeats the
    same position of the longest season (persistence): callers with real future values should
    pass them to the model directly.
    """
    exogenous = [c for c in spec.model.exogenous if c in rows]
    # Columns as arrays, one frame built at the end: this runs once per entity per night (and
    # per search trial), where each pandas step costs tens of microseconds.
    stamps = pd.DatetimeIndex(rows["ds"])
    order = _time_order(stamps)
    ds = stamps if order is None else stamps.take(order)
    y = _target(rows, order)
    start, end = recent_span(y, spec.max_history)
    target, notes = filled_target(y[start:end].copy())
    kept, ahead_columns = {}, {}
    for column in exogenous:
        raw = rows[column].array if order is None else rows[column].array.take(order)
        values = pd.Series(raw[start:end]).to_numpy(dtype="float64", na_value=np.nan)
        filled, note = filled_regressor(column, values)
        notes += note
        if filled is None:
            continue
        kept[column] = raw[start:end] if filled is values else filled
        ahead_columns[column] = raw[end:]
    history = pd.DataFrame({"ds": ds[start:end], "y": target, **kept}, copy=True)
    ahead = pd.DataFrame({"ds": ds[end:], **ahead_columns}) if end < len(ds) else None
    imputed = imputed_flags(rows)
    if imputed is not None and order is not None:
        imputed = imputed[order]
    return history, future_rows(history, ahead, spec), notes, unobserved_span(imputed, y, start, end)


def imputed_flags(rows: pd.DataFrame) -> Optional[np.ndarray]:
    """Gold's `is_imputed` flags of `rows` (missing: False), None without the column."""
    return rows["is_imputed"].to_numpy(dtype=bool, na_value=False) if "is_imputed" in rows else None


def unobserved_span(imputed: Optional[np.ndarray], y: np.ndarray, start: int, end: int) -> np.ndarray:
    """Which of the history's rows [`start`, `end`) of target values `y` (in time order) were not
    observed (`prepare_scored`), given their `imputed` flags (None: no such column)."""
    missing = np.isnan(y[start:end])
    return missing if imputed is None else imputed[start:end] | missing


def _time_order(stamps: pd.DatetimeIndex) -> Optional[np.ndarray]:
    """The rows in time order (None: they are already)."""
    return None if stamps.is_monotonic_increasing else np.argsort(stamps.asi8, kind="stable")


def _target(rows: pd.DataFrame, order: Optional[np.ndarray]) -> np.ndarray:
    y = rows["y"].to_numpy(dtype="float64", na_value=np.nan)
    return y if order is None else y[order]


def recent_span(y: np.ndarray, max_history: int) -> tuple[int, int]:
    """[start, end) of the history in the target values `y`: up to the last observed value, at
    most `max_history` steps back, from the first observed one."""
    observed = np.flatnonzero(~np.isnan(y))
    if not len(observed):
        raise EmptySeries("no observed target value: check the source rows for this entity")
    end = observed[-1] + 1
    return max(observed[0], end - max_history), end


def filled_target(target: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The history's target with inner gaps interpolated, and the note that says so."""
    missing = int(np.isnan(target).sum())
    if not missing:
        return target, []
    filled = pd.Series(target).interpolate(limit_area="inside").to_numpy()
    return filled, [f"{missing} missing target values interpolated"]


def filled_regressor(column: str, values: np.ndarray) -> tuple[Optional[np.ndarray], list[str]]:
    """A regressor's history values (`values` itself when complete) with gaps interpolated, or
    None when it has no value; and the note that says so."""
    gaps = np.isnan(values)
    if gaps.all():
        return None, [f"exogenous column {column!r} has no values for this entity: models fit without it"]
    if gaps.any():
        return (pd.Series(values).interpolate(limit_direction="both").to_numpy(),
                [f"{int(gaps.sum())} missing {column!r} values interpolated"])
    return values, []


def future_rows(history: pd.DataFrame, ahead: Optional[pd.DataFrame], spec: "TrainSpec") -> pd.DataFrame:
    """The `spec.horizon` steps after `history`, exogenous columns from `ahead` where known, else a
    scenario (see `prepare`); `attrs["scenario"]` names the columns filled by a scenario."""
    ds, columns, scenario = future_columns(history, ahead, spec)
    future = pd.DataFrame({"ds": ds, **columns})
    # Columns the forecast fills by a scenario: backtests fill them the same way (ex ante).
    future.attrs["scenario"] = scenario
    return future


def future_columns(history: pd.DataFrame, ahead: Optional[pd.DataFrame],
                   spec: "TrainSpec") -> tuple[pd.DatetimeIndex, dict[str, np.ndarray], tuple[str, ...]]:
    """`future_rows` as its stamps, its exogenous columns' values and the names of those filled by
    a scenario (a backtest window needs only the values)."""
    last = history["ds"].iloc[-1]
    ds = pd.date_range(last + spec.freq, periods=spec.horizon, freq=spec.freq)
    columns: dict[str, np.ndarray] = {}
    known_rows = ahead is not None and len(ahead) > 0
    # Where each future step sits in `ahead` (-1: not there). Every backtest window calls this
    # once per fold, so it stays in numpy rather than re-indexing frames per column.
    at = pd.Index(ahead["ds"]).get_indexer(ds) if known_rows else np.full(len(ds), -1)
    scenario = []
    regressors = [c for c in history.columns if c not in ("ds", "y")]
    stamps = pd.DatetimeIndex(history["ds"]) if regressors else None
    for column in regressors:
        known = np.full(len(ds), np.nan)
        if known_rows:
            known[at >= 0] = ahead[column].to_numpy(dtype="float64")[at[at >= 0]]
        fill = scenario_values(history[column].to_numpy(dtype="float64")[None], stamps, ds, spec)[0]
        columns[column] = np.where(np.isfinite(known), known, fill)
        if not np.isfinite(known).all():
            scenario.append(column)
    return ds, columns, tuple(scenario)


def scenario_values(values: np.ndarray, stamps: pd.DatetimeIndex, ds: pd.DatetimeIndex,
                    spec: "TrainSpec") -> np.ndarray:
    """A regressor's values at the future stamps `ds` when nothing gives them, one row per entity
    of `values` (E, T) on the history's `stamps`: normal weather for a weather-like row with over
    a year of history (plus the last day's persisting departure from it with `training.weather:
    persisted`), else the same position of the longest season that fits (persistence).
    One entity's history and a panel's rows on one grid (engine.training.panel) take the same steps."""
    lag = max(spec.model.usable_seasons(values.shape[1], cycles=1), default=1)
    fill = values[:, -lag:][:, np.arange(len(ds)) % lag]
    weather = ~((values == 0.0) | (values == 1.0)).all(axis=1)      # not a 0/1 calendar flag
    if weather.any():
        normal = same_dates_earlier_years(values[weather], stamps, ds)
        if spec.weather == "persisted":
            day = max(1, round(1 / spec.model.frequency.step_days))
            normal = normal + persisted_departure(values[weather], stamps, len(ds), day)
        fill[weather] = np.where(np.isfinite(normal), normal, fill[weather])
    return fill


# Daily origins a slope per step ahead needs before it is trusted (fewer: normal weather alone).
MIN_ORIGINS = 30
# Normal weather averages the same time of day within this many days of the same date.
NORMAL_DAYS = 7


def persisted_departure(values: np.ndarray, stamps: pd.DatetimeIndex, horizon: int, day: int) -> np.ndarray:
    """Per entity (row of `values`, (E, T) on `stamps`) and future step h, what is expected to
    remain of the last day's mean departure from normal weather: that departure times the
    least-squares slope, through the origin, of the departures h steps later on the day's mean
    departure, over the history's daily origins at the same time of day, clipped to [0, 1]. A
    heat wave on the last day is likely still there tomorrow, much less so in a week; how much,
    the history says (GEFCom2012's temperatures: about 0.6 a day ahead, 0.15-0.3 a week ahead).
    Zeros where the history has a year or less, or fewer than MIN_ORIGINS origins."""
    rows, steps = values.shape
    out = np.zeros((rows, horizon))
    # Departures exist from where normal weather does: a year and the days it spreads over.
    start = int(np.searchsorted(stamps.as_unit("ns").asi8,
                                stamps[0].as_unit("ns").value + (365 + NORMAL_DAYS) * DAY_NS))
    origins = np.arange(steps - 1 - horizon, start + day - 2, -day)[::-1]
    if start >= steps or len(origins) < MIN_ORIGINS:
        return out
    departure = np.full((rows, steps), np.nan)
    departure[:, start:] = values[:, start:] - same_dates_earlier_years(values, stamps, stamps[start:])
    # Each step's mean departure over the day it ends (at least half of it known), by running sums
    # along each row: an entity gets the same bits alone or in a panel.
    known = np.isfinite(departure)
    sums = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.where(known, departure, 0.0), axis=1)], axis=1)
    counts = np.concatenate([np.zeros((rows, 1), dtype="int64"), np.cumsum(known, axis=1)], axis=1)
    ends = np.arange(steps) + 1
    begins = np.maximum(ends - day, 0)
    seen = counts[:, ends] - counts[:, begins]
    with np.errstate(invalid="ignore", divide="ignore"):
        daily = np.where(2 * seen >= day, (sums[:, ends] - sums[:, begins]) / seen, np.nan)
    later_at = origins[:, None] + np.arange(1, horizon + 1)[None, :]      # (origins, steps ahead)
    for row in range(rows):         # row by row: an entity gets the same bits alone or in a panel
        now, last = daily[row, origins][:, None], daily[row, -1]
        if np.isfinite(now).sum() < MIN_ORIGINS or not np.isfinite(last):
            continue
        later = departure[row][later_at]
        pair = np.isfinite(now) & np.isfinite(later)
        products = np.where(pair, now * later, 0.0).sum(axis=0)
        squares = np.where(pair, now * now, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[row] = np.clip(np.where(squares > 0, products / squares, 0.0), 0.0, 1.0) * last
    return out


def same_dates_earlier_years(values: np.ndarray, stamps: pd.DatetimeIndex, ds: pd.DatetimeIndex,
                             days: int = NORMAL_DAYS) -> np.ndarray:
    """Per entity (row of `values`, (E, T) on `stamps`) and future step, the mean of the same time
    of day within +-`days` days of the same date in every earlier year the history covers (a
    normal-weather scenario), NaN with under a year."""
    first = stamps[0]
    if ds[0] - first < pd.Timedelta(days=365 + days):
        return np.full((len(values), len(ds)), np.nan)
    years = range(1, int((ds[-1] - first).days // 365) + 1)
    back = np.array([365 * y - shift for y in years for shift in range(-days, days + 1)], dtype="int64") * DAY_NS
    # Every (year, shift) sample at once: exact stamp lookups in the sorted history, as a reindex does.
    times = stamps.as_unit("ns").asi8
    targets = pd.DatetimeIndex(ds).as_unit("ns").asi8[None, :] - back[:, None]
    step = int(times[1] - times[0]) if len(times) > 1 else 0
    if step > 0 and (np.diff(times) == step).all():
        # An evenly spaced history (the usual gold grid): positions by arithmetic, the very
        # positions the search finds, at a fraction of its cost (it ran per backtest window).
        offset = targets - times[0]
        at = np.clip(offset // step, 0, len(times) - 1)
        found = (offset >= 0) & (offset % step == 0) & (offset // step < len(times))
    else:
        at = np.minimum(np.searchsorted(times, targets), len(times) - 1)
        found = times[at] == targets
    # Summed sample by sample, in one order whatever the number of entities: a panel's rows get
    # the very values each entity gets alone.
    total, counts = np.zeros((len(values), len(ds))), np.zeros((len(values), len(ds)), dtype="int64")
    for k in range(len(back)):
        sample = np.where(found[k], values[:, at[k]], np.nan)
        seen = np.isfinite(sample)
        total += np.where(seen, sample, 0.0)
        counts += seen
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
