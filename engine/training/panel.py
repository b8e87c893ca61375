"""A task's entities on one clean time grid, trained as a panel: for each, the result row
`train_entity` returns, made from arrays rather than from per-entity frames.

With candidates that fit in batches (gpu_additive), fitting is a small part of a task: most of it
is the per-entity frames around the fits (history, folds, forecasts, one result frame each).
Entities whose rows share one time grid and end with an observed target (a gold panel; gaps are
interpolated and noted by `prepare`'s own functions) are trained here instead, all at once: the
same folds (one set of origins), batched fits per fold (`fit_grid`), forecasts and metrics from
the same functions, and the same result rows, bit for bit (tests/engine/training/test_panel.py).
Everything else goes through `train_entity`, which handles it and says why as it always does:
unsorted rows, rows past the last target (known future regressors), a constant or short series,
a failed fit or forecast, a per-entity search, an ensemble, conformal bands, a hierarchy's kept
paths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd

from engine.models import Forecast, ForecastModel, model_class
from engine.training.backtest import Fold, fold_origins, mase_season, ranked, summarize, window_count
from engine.training.entity import OK, TrainSpec, result_of
from engine.training.history import (EmptySeries, filled_regressor, filled_target, imputed_flags, recent_span,
                                     scenario_values, unobserved_span)
from engine.training.metrics import mase_scales, window_metrics, windows_metrics

CHUNK = 4096    # entities trained together at most: the panel's arrays and models stay small
_NAT = np.iinfo(np.int64).min   # NaT's integer


def panel_candidates(spec: TrainSpec) -> bool:
    """Whether a task's entities can go through the panel: every candidate fits in batches with
    one set of hyperparameters, and the champion is the best of them alone, with its own bands."""
    searched = spec.search.space if spec.search is not None else {}
    return (bool(spec.candidates) and spec.models == spec.candidates and spec.select == "best"
            and spec.intervals == "model"
            and all(model_class(n).fits_ahead and not model_class(n).refreshable and n not in searched
                    for n in spec.candidates))


@dataclass(frozen=True)
class _Series:
    """One entity's recent history as arrays: `prepare`'s history, gaps interpolated and noted."""

    index: int              # its position among the task's entities
    entity: str
    table: _Table
    rows: np.ndarray            # positions of the history's rows in `table`
    y: np.ndarray
    columns: dict[str, np.ndarray]
    notes: list[str]            # what `prepare` says of the rows (gaps interpolated)
    unobserved: np.ndarray      # rows imputed in gold or interpolated: not scored (`history.prepare_scored`)

    @property
    def stamps(self) -> pd.DatetimeIndex:
        return self.table.stamps[self.rows]     # built for one entity of a grid, not every one

    @property
    def grid(self) -> tuple:
        return (str(self.table.stamps.dtype), self.table.ns[self.rows].tobytes(), tuple(self.columns))


def train_panel(rows: pd.DataFrame, groups: list[tuple[Any, np.ndarray]], spec: TrainSpec) -> dict[int, dict[str, Any]]:
    """Result rows, by position in `groups` ((entity id, positions of its rows in `rows`) pairs),
    of the entities trained as a panel; the others are left to `train_entity`."""
    table = _Table.of(rows, spec)
    by_grid: dict[tuple, list[_Series]] = {}
    for index, (entity, at) in enumerate(groups):
        series = _clean_series(index, str(entity), table, at, spec)
        if series is not None:
            by_grid.setdefault(series.grid, []).append(series)
    out: dict[int, dict[str, Any]] = {}
    for members in by_grid.values():
        for start in range(0, len(members), CHUNK):
            out.update(_train_grid(members[start:start + CHUNK], spec))
    return out


@dataclass(frozen=True)
class _Table:
    """The task's rows as the arrays `prepare` reads from each entity's frame, read once for all
    (a column of a per-entity frame costs tens of microseconds to reach)."""

    stamps: pd.DatetimeIndex
    ns: np.ndarray              # `stamps` as integers (NaT the smallest)
    y: np.ndarray
    exogenous: dict[str, np.ndarray]
    imputed: Optional[np.ndarray]

    @classmethod
    def of(cls, rows: pd.DataFrame, spec: TrainSpec) -> "_Table":
        stamps = pd.DatetimeIndex(rows["ds"])
        return cls(stamps, stamps.asi8, rows["y"].to_numpy(dtype="float64", na_value=np.nan),
                   {c: rows[c].to_numpy(dtype="float64", na_value=np.nan) for c in spec.model.exogenous if c in rows},
                   imputed_flags(rows))


def _clean_series(index: int, entity: str, table: _Table, at: np.ndarray, spec: TrainSpec) -> Optional[_Series]:
    """The history `prepare` makes of the entity's rows (positions `at` of `table`): the same
    span, gaps interpolated by the same functions, the same notes, when its rows are sorted, end
    with an observed target (no row ahead carries known regressors) and make a series that can be
    backtested; else None."""
    if entity in spec.keep_paths:
        return None
    ns = table.ns[at]
    if (ns[1:] < ns[:-1]).any() or (ns == _NAT).any():      # what `is_monotonic_increasing` refuses
        return None
    y = table.y[at]
    try:
        start, end = recent_span(y, spec.max_history)
    except EmptySeries:
        return None
    if end < len(y):
        return None
    target, notes = filled_target(y[start:end].copy())
    if len(target) < 2 or not np.isfinite(target).all() or target.max() == target.min():
        return None
    columns = {}
    for column, values in table.exogenous.items():
        filled, note = filled_regressor(column, values[at][start:end])
        notes += note
        if filled is not None:
            columns[column] = filled
    imputed = None if table.imputed is None else table.imputed[at]
    return _Series(index, entity, table, at[start:end], target, columns, notes, unobserved_span(imputed, y, start, end))


def _train_grid(members: list[_Series], spec: TrainSpec) -> dict[int, dict[str, Any]]:
    """`train_entity`'s rows of entities on one grid; those the panel cannot finish are left out."""
    started = time.perf_counter()
    stamps, n = members[0].stamps, len(members[0].stamps)
    windows = window_count(n, spec)       # constant series never get here (`_clean_series`)
    if windows < 1:
        return {}
    y = np.stack([m.y for m in members])
    columns = {c: np.stack([m.columns[c] for m in members]) for c in members[0].columns}
    origins = fold_origins(n, spec, windows)
    observed = ~np.stack([m.unobserved for m in members])
    folds = [_fold(window, origin, refit, stamps, y, columns, observed, spec)
             for window, (origin, refit) in enumerate(origins)]
    windows = len(folds)            # a result row counts the `backtest.years` windows too
    # False: left to `train_entity`; so is an entity with a window it would leave out (all imputed).
    alive = np.all([f.observed.any(axis=1) for f in folds], axis=0)
    records: list[list[dict]] = [[] for _ in members]
    for name in spec.candidates:
        for fold in folds:
            models = _fit(name, spec, stamps[:fold.origin], y[:, :fold.origin],
                          {c: v[:, :fold.origin] for c, v in columns.items()})
            forecasts = _forecasts(models, alive, fold.test, fold.columns)
            for i, scored in _scores(forecasts, fold, name).items():
                alive[i] = scored is not None
                if scored is not None:
                    records[i].append(scored)
    champions: dict[str, list[int]] = {}
    summaries = {}
    for i in np.flatnonzero(alive):
        summaries[i] = summarize(records[i], spec.candidates)
        order = ranked(summaries[i], spec.metric)
        if order:
            champions.setdefault(order[0], []).append(i)
    ds = pd.date_range(stamps[-1] + spec.freq, periods=spec.horizon, freq=spec.freq)
    future = {c: scenario_values(v, stamps, ds, spec) for c, v in columns.items()}
    out = {}
    for name, chosen in champions.items():
        models = _fit(name, spec, stamps, y[chosen], {c: v[chosen] for c, v in columns.items()})
        forecasts = _forecasts(models, np.ones(len(chosen), dtype=bool), ds, {c: v[chosen] for c, v in future.items()})
        for k, forecast in forecasts.items():
            i = chosen[k]
            row = _result(models[k], forecast, members[i], stamps, ds, windows, spec, summaries[i], records[i])
            if row is not None:
                out[members[i].index] = row
    seconds = (time.perf_counter() - started) / len(members)
    for row in out.values():
        row["fit_seconds"] = seconds        # the panel's time, shared: no entity was timed alone
    return out


@dataclass(frozen=True)
class _PanelFold:
    """A backtest window of every entity on the grid (`Fold`'s fields as arrays by entity)."""

    fold: Fold          # the window, origin and refit, shared; its frames are not built
    origin: int
    test: pd.DatetimeIndex
    columns: dict[str, np.ndarray]      # the test rows' regressor values, (E, steps)
    actual: np.ndarray                  # (E, steps)
    scale: np.ndarray                   # (E,)
    observed: np.ndarray                # (E, steps): the steps scored


def _fold(window: int, origin: int, refit: bool, stamps: pd.DatetimeIndex, y: np.ndarray,
          columns: dict[str, np.ndarray], observed: np.ndarray, spec: TrainSpec) -> _PanelFold:
    """`backtest_folds`' window for every entity: regressors filled from each window's own past
    (every column is a scenario: nothing lies past the last target)."""
    stop = min(origin + spec.horizon, len(stamps))
    ahead = pd.date_range(stamps[origin - 1] + spec.freq, periods=spec.horizon, freq=spec.freq)
    filled = {c: scenario_values(v[:, :origin], stamps[:origin], ahead, spec)[:, :stop - origin]
              for c, v in columns.items()}
    season = mase_season(spec, origin)
    scale = mase_scales(y[:, :origin], season)
    shared = Fold(window, stamps[origin], None, None, None, np.nan, refit)
    return _PanelFold(shared, origin, stamps[origin:stop], filled, y[:, origin:origin + spec.horizon], scale,
                      observed[:, origin:origin + spec.horizon])


def _fit(name: str, spec: TrainSpec, stamps: pd.DatetimeIndex, y: np.ndarray,
         columns: dict[str, np.ndarray]) -> list[Optional[ForecastModel]]:
    """`name` fitted on each row as `fit` would fit that entity's frame (its recent `max_history`
    rows); None for every row when the batch fails (each entity then fits alone, and fails alone)."""
    cls = model_class(name)
    keep = spec.model.max_history
    if not cls.long_history and 0 < keep < len(stamps):
        stamps, y, columns = stamps[-keep:], y[:, -keep:], {c: v[:, -keep:] for c, v in columns.items()}
    try:
        return cls.fit_grid(spec.model, spec.hyperparameters.get(name), stamps, np.ascontiguousarray(y),
                            {c: np.ascontiguousarray(v) for c, v in columns.items()})
    except Exception:  # noqa: BLE001 - the per-entity path meets the same error and records it
        return [None] * len(y)


def _forecasts(models: list[Optional[ForecastModel]], wanted: np.ndarray, ds: pd.DatetimeIndex,
               columns: dict[str, np.ndarray]) -> dict[int, Optional[Forecast]]:
    """By row, the forecast of each wanted row's model at `ds` (regressors: `columns`' rows), all
    in one call (`forecast_grid`); None where a row has no model or cannot forecast, and for every
    row when the call fails (each entity then forecasts alone, and fails alone)."""
    rows = [i for i in np.flatnonzero(wanted) if models[i] is not None]
    out: dict[int, Optional[Forecast]] = {int(i): None for i in np.flatnonzero(wanted)}
    if rows:
        try:
            forecasts = type(models[rows[0]]).forecast_grid([models[i] for i in rows], ds,
                                                            {c: v[rows] for c, v in columns.items()})
        except Exception:  # noqa: BLE001 - the per-entity path meets the same error and records it
            return out
        out.update(zip(rows, forecasts))
    return out


def _scores(forecasts: dict[int, Optional[Forecast]], fold: _PanelFold, name: str) -> dict[int, Optional[dict]]:
    """By entity, its record of `fold` (what `backtest_candidate` records), or None when it must
    go through `train_entity` instead (no model, or no forecast: e.g. a non-finite one). Windows
    scored on every step are scored together."""
    out: dict[int, Optional[dict]] = {i: None for i, f in forecasts.items() if f is None}
    whole = [i for i, f in forecasts.items() if f is not None and fold.observed[i].all()]
    if whole:
        metrics = windows_metrics(fold.actual[whole], [forecasts[i] for i in whole], fold.scale[whole])
        out.update((i, {**fold.fold.record(name), **m}) for i, m in zip(whole, metrics))
    for i, forecast in forecasts.items():
        if forecast is not None and i not in out:
            out[i] = {**fold.fold.record(name),
                      **window_metrics(fold.actual[i], forecast, fold.scale[i], fold.observed[i])}
    return out


def _result(model: Optional[ForecastModel], forecast: Optional[Forecast], series: _Series,
            stamps: pd.DatetimeIndex, ds: pd.DatetimeIndex, windows: int, spec: TrainSpec, summary: dict,
            records: list[dict]) -> Optional[dict[str, Any]]:
    """`train_entity`'s row for the champion `model` and its `forecast`, or None to leave the
    entity to it (no model or no forecast: the per-entity path records why)."""
    if model is None or forecast is None:
        return None
    row = result_of(OK, model, stamps, {"ds": ds}, windows, spec, list(series.notes), summary, records,
                    params_from=spec.sources.get(model.name, "defaults"), scores=dict(summary.get(model.name, {})),
                    forecast=forecast)
    row["entity_id"] = series.entity
    return row
