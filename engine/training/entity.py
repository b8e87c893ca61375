"""The one pure per-entity training function every backend calls unchanged.

`train_entity(rows, spec)` takes one entity's gold rows and returns one result row:
rolling-origin backtest of every candidate, metrics per candidate and window, the champion
by `backtest.metric`, the champion refitted on all (recent) history, and its forecast.
No Spark, MLflow, files or globals: the same rows and spec give the same row anywhere.

Policy for data that cannot be modelled (documented in the README):
* no observed value at all -> ``failed``, no forecast (there is nothing to repeat);
* constant series, or too short for one backtest window -> ``fallback``: seasonal naive;
* any exception while training -> ``failed`` with the error, and a seasonal naive forecast.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.config import Config
from engine.errors import ManymodelsError
from engine.medallion.schemas import TS
from engine.models import FALLBACK, Forecast, ForecastModel, ModelSpec, make_model
from engine.models.ensemble import EnsembleModel
from engine.training.metrics import mase_scale, window_metrics

OK, FALLBACK_STATUS, FAILED = "ok", "fallback", "failed"

RESULT_SCHEMA = pa.schema([
    ("entity_id", pa.string()), ("status", pa.string()), ("champion", pa.string()), ("reason", pa.string()),
    ("error", pa.string()), ("n_obs", pa.int64()), ("windows", pa.int64()), ("forecast_origin", TS),
    ("fit_seconds", pa.float64()), ("params", pa.string()), ("metrics", pa.string()), ("backtests", pa.string()),
    ("forecast", pa.string()), ("notes", pa.string()), ("model", pa.binary())])
RESULT_COLUMNS = RESULT_SCHEMA.names


class EmptySeries(ManymodelsError):
    """The entity has no observed target value."""


@dataclass(frozen=True)
class TrainSpec:
    """Everything the per-entity function needs, parsed once from the config."""

    models: tuple[str, ...]
    horizon: int
    windows: int
    step: int
    metric: str
    max_history: int
    ensemble_size: int
    model: ModelSpec
    fail_fast: bool = False
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # hyperparameters per model
    sources: Mapping[str, str] = field(default_factory=dict)   # where `params` came from, per model
    tuned_by: Optional[str] = None          # the `manymodels tune` run whose parameters are in `params`
    search: Optional[Any] = None            # engine.tuning.search.EntitySearch (tuning.per_entity)
    trained: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # panel-wide networks by model

    @classmethod
    def from_config(cls, config: Config, tuned: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    tuned_by: Optional[str] = None) -> "TrainSpec":
        """`tuned`: parameters of a tuning run, over the config's `model_params` where both set one."""
        from engine.tuning.search import EntitySearch
        tuned = {m: p for m, p in (tuned or {}).items() if m in config.models}
        params = {m: {**config.model_params.get(m, {}), **tuned.get(m, {})}
                  for m in config.models if config.model_params.get(m) or tuned.get(m)}
        sources = {m: f"tuning run {tuned_by}" if m in tuned else "config" for m in params}
        ensemble_size = params.get("ensemble", {}).get("size", config.training.ensemble_size)
        return cls(models=tuple(config.models), horizon=config.horizon, windows=config.backtest.windows,
                   step=config.backtest.step, metric=config.backtest.metric,
                   max_history=config.history_steps, ensemble_size=ensemble_size,
                   model=config.model_spec(), fail_fast=config.training.fail_fast, params=params,
                   sources=sources, tuned_by=tuned_by if tuned else None, search=EntitySearch.from_config(config))

    @property
    def min_train(self) -> int:
        """Shortest training window of a backtest: two cycles of the shortest season."""
        seasons = [s for s in self.model.season_lengths if s > 1]
        return 2 * min(seasons) if seasons else 10

    def min_length(self) -> int:
        return self.min_train + self.horizon

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if m != "ensemble")

    @property
    def freq(self) -> pd.DateOffset:
        return pd.tseries.frequencies.to_offset(self.model.freq)


def train_entity(rows: pd.DataFrame, spec: TrainSpec) -> pd.DataFrame:
    """One entity's gold rows -> one result row (columns `RESULT_COLUMNS`)."""
    started = time.perf_counter()
    entity = str(rows["entity_id"].iloc[0])
    try:
        result = _train(rows, spec)
    except Exception as exc:  # noqa: BLE001 - isolation: one entity's failure becomes data
        if spec.fail_fast:
            raise
        result = _after_failure(rows, spec, exc)
    result.update(entity_id=entity, fit_seconds=time.perf_counter() - started)
    return pd.DataFrame([result], columns=RESULT_COLUMNS)


def _train(rows: pd.DataFrame, spec: TrainSpec) -> dict[str, Any]:
    history, future, notes = prepare(rows, spec)
    y = history["y"].to_numpy()
    if np.ptp(y) == 0:
        return _fallback(history, future, spec, FALLBACK_STATUS, notes, reason="constant series")
    windows = usable_windows(history, spec)
    if windows < 1:
        return _fallback(history, future, spec, FALLBACK_STATUS, notes,
                         reason=f"too short: {len(y)} observations, one backtest window needs {spec.min_length()}")
    folds = backtest_folds(history, spec, windows, future.attrs.get("scenario", ()))
    backtests, forecasts, chosen, searches = _backtest(folds, spec)
    summary = _summarize(backtests, spec)
    for name, search in searches.items():
        summary[name].update(search)
    if "ensemble" in spec.models:
        _add_ensemble(folds, spec, backtests, forecasts, summary)
    ranked = _ranked(summary, spec.metric)
    if not ranked:
        errors = "; ".join(sorted({b["error"] for b in backtests if b["error"]}))
        raise ManymodelsError(f"every candidate failed its backtest: {errors}")
    model = _make(ranked[0], spec, summary, chosen).fit(history)
    source = "entity search" if ranked[0] in searches else spec.sources.get(ranked[0], "defaults")
    return _result(OK, model, history, future, windows, spec, notes, summary, backtests, params_from=source)


def usable_windows(history: pd.DataFrame, spec: TrainSpec) -> int:
    """Backtest windows the history allows (up to `spec.windows`); 0 for a constant series."""
    if np.ptp(history["y"].to_numpy()) == 0:
        return 0
    return max(0, min(spec.windows, (len(history) - spec.min_length()) // spec.step + 1))


def prepare(rows: pd.DataFrame, spec: TrainSpec) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Recent, gap-free history and the future rows to forecast (with exogenous values).

    Exogenous values for the future come from gold rows past the last observed target (e.g. an
    ingested weather forecast) where present. Otherwise a weather-like column takes the mean of
    the same hours around the same dates in earlier years when the history spans more than a
    year (normal weather), and anything else repeats the same position of the longest season
    (persistence): callers with real future values should pass them to the model directly.
    """
    exogenous = [c for c in spec.model.exogenous if c in rows]
    frame = rows[["ds", "y", *exogenous]].sort_values("ds", kind="stable").reset_index(drop=True)
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
    history = history.reset_index(drop=True)
    return history, _future(history, ahead, spec), notes


def _future(history: pd.DataFrame, ahead: pd.DataFrame, spec: TrainSpec) -> pd.DataFrame:
    last = history["ds"].iloc[-1]
    ds = pd.date_range(last + spec.freq, periods=spec.horizon, freq=spec.freq)
    future = pd.DataFrame({"ds": ds})
    lag = max(spec.model.usable_seasons(len(history), cycles=1), default=1)
    steps = np.arange(spec.horizon)
    scenario = []
    for column in history.columns.drop(["ds", "y"]):
        known = (ahead.set_index("ds")[column].reindex(ds).to_numpy(dtype="float64") if len(ahead)
                 else np.full(len(ds), np.nan))
        values = history[column].to_numpy(dtype="float64")
        fill = values[-lag:][steps % lag]
        if not np.isin(values, (0.0, 1.0)).all():      # weather, not a 0/1 calendar flag
            normal = same_dates_earlier_years(history.set_index("ds")[column], ds)
            fill = np.where(np.isfinite(normal), normal, fill)
        future[column] = np.where(np.isfinite(known), known, fill)
        if not np.isfinite(known).all():
            scenario.append(column)
    # Columns the forecast fills by a scenario: backtests fill them the same way (ex ante).
    future.attrs["scenario"] = tuple(scenario)
    return future


def same_dates_earlier_years(values: pd.Series, ds: pd.DatetimeIndex, days: int = 7) -> np.ndarray:
    """Per future step, the mean of the same time of day within +-`days` days of the same date in
    every earlier year the history covers (a normal-weather scenario), NaN with under a year."""
    first = values.index[0]
    if ds[0] - first < pd.Timedelta(days=365 + days):
        return np.full(len(ds), np.nan)
    samples = []
    for years in range(1, int((ds[-1] - first).days // 365) + 1):
        for shift in range(-days, days + 1):
            samples.append(values.reindex(ds - pd.Timedelta(days=365 * years - shift)).to_numpy(dtype="float64"))
    stacked = np.vstack(samples)
    counts = np.isfinite(stacked).sum(axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def _origins(history: pd.DataFrame, spec: TrainSpec, windows: int):
    """(window, origin row, record stub, actuals, MASE scale) of each rolling-origin window."""
    n, h = len(history), spec.horizon
    y = history["y"].to_numpy()
    for window in range(windows):
        origin = n - h - (windows - 1 - window) * spec.step
        stub = {"window": window, "origin": history["ds"].iloc[origin].isoformat(), "error": None}
        yield window, origin, stub, y[origin:origin + h], mase_scale(y[:origin], _mase_season(spec, origin))


def backtest_folds(history: pd.DataFrame, spec: TrainSpec, windows: int,
                   scenario: tuple[str, ...] = ()) -> list[tuple]:
    """(record stub, train rows, test rows without y, actuals, MASE scale) per rolling-origin window.
    Regressors in `scenario` (those the real forecast must fill without knowing them) are filled
    the same way from each window's own past, so a model is judged on the information it will
    have, not on realized weather."""
    out = []
    for window, origin, stub, actual, scale in _origins(history, spec, windows):
        train, test = history.iloc[:origin], history.iloc[origin:origin + spec.horizon].copy()
        if scenario:
            filled = _future(train, train.iloc[:0], spec)
            for column in scenario:
                test[column] = filled[column].to_numpy()
        out.append((stub, train, test.drop(columns="y"), actual, scale))
    return out


def backtest_candidate(name: str, params: Optional[Mapping[str, Any]], folds: list[tuple], spec: TrainSpec,
                       check_time=None) -> tuple[list[dict], dict[int, Forecast]]:
    """One candidate with hyperparameters `params` over the `folds`: a record per window (metrics
    or the error) and the forecasts by window. `check_time()` may raise to end a search trial."""
    records, forecasts = [], {}
    for stub, train, test, actual, scale in folds:
        record = {"candidate": name, **stub}
        try:
            forecast = make_model(name, spec.model, params, spec.trained).fit(train).forecast(test)
            forecasts[stub["window"]] = forecast
            record.update(window_metrics(actual, forecast, scale))
        except Exception as exc:  # noqa: BLE001 - one candidate failing leaves the others
            if spec.fail_fast:
                raise
            record["error"] = _describe(exc)
        records.append(record)
        if check_time:
            check_time()
    return records, forecasts


def _backtest(folds: list[tuple], spec: TrainSpec, check_time=None):
    """Rolling-origin forecasts of every candidate, each with its configured (or tuned)
    hyperparameters, or those a per-entity search chose (`spec.search`)."""
    records, forecasts, chosen, searches = [], {}, {}, {}
    for name in spec.candidates:
        chosen[name] = dict(spec.params.get(name, {}))
        if spec.search is not None and name in spec.search.space:
            from engine.tuning.search import search_entity
            chosen[name], rows, by_window, searches[name] = search_entity(name, chosen[name], folds, spec)
        else:
            rows, by_window = backtest_candidate(name, chosen[name], folds, spec, check_time)
        records.extend(rows)
        forecasts.update({(name, w): f for w, f in by_window.items()})
    return records, forecasts, chosen, searches


def _mase_season(spec: TrainSpec, n: int) -> int:
    seasons = [s for s in spec.model.season_lengths if 1 < s < n]
    return min(seasons) if seasons else 1


def _summarize(backtests: list[dict], spec: TrainSpec) -> dict[str, dict[str, float]]:
    summary = {}
    for name in spec.candidates:
        rows = [b for b in backtests if b["candidate"] == name]
        summary[name] = _mean_metrics(rows)
    return summary


def _mean_metrics(rows: list[dict]) -> dict[str, float]:
    ok = [r for r in rows if not r["error"]]
    keys = [k for k in (ok[0] if ok else {}) if k not in ("candidate", "window", "origin", "error")]
    out = {k: _finite(float(np.mean([r[k] for r in ok]))) for k in keys}
    out["failed_windows"] = len(rows) - len(ok)
    return out


def _finite(value: float) -> float:
    return value if np.isfinite(value) else float("inf")


def _ranked(summary: dict, metric: str, finite: bool = False) -> list[str]:
    """Candidates without a failed window, best mean `metric` first (ties: config order)."""
    scored = [(s[metric], i, name) for i, (name, s) in enumerate(summary.items())
              if s["failed_windows"] == 0 and (not finite or np.isfinite(s[metric]))]
    return [name for *_, name in sorted(scored)]


def _add_ensemble(folds: list[tuple], spec: TrainSpec, backtests, forecasts, summary) -> None:
    members = _ranked(summary, spec.metric, finite=True)[:spec.ensemble_size]
    if len(members) < 2:
        return
    rows = []
    for stub, _, _, actual, scale in folds:
        window = stub["window"]
        combined = EnsembleModel.combine([forecasts[(m, window)] for m in members])
        rows.append({"candidate": "ensemble", **stub, **window_metrics(actual, combined, scale)})
    backtests.extend(rows)
    summary["ensemble"] = {**_mean_metrics(rows), "members": members}


def _make(name: str, spec: TrainSpec, summary: dict, chosen: dict[str, dict]) -> ForecastModel:
    if name == "ensemble":
        def member(member_name: str, model_spec: ModelSpec) -> ForecastModel:
            return make_model(member_name, model_spec, chosen.get(member_name), spec.trained)
        return EnsembleModel(spec.model, summary["ensemble"]["members"], member, spec.params.get("ensemble"))
    return make_model(name, spec.model, chosen.get(name), spec.trained)


def _fallback(history, future, spec, status, notes, reason, error=None):
    model = make_model(FALLBACK, spec.model).fit(history)
    return _result(status, model, history, future, 0, spec, notes, {}, [], reason=reason, error=error)


def _after_failure(rows: pd.DataFrame, spec: TrainSpec, exc: Exception) -> dict[str, Any]:
    error = _describe(exc)
    try:
        history, future, notes = prepare(rows, spec)
        return _fallback(history, future, spec, FAILED, notes, reason="training failed", error=error)
    except Exception:  # noqa: BLE001 - nothing left to forecast from (e.g. no observed value)
        return {"status": FAILED, "champion": None, "reason": "no fallback possible", "error": error,
                "n_obs": int(rows["y"].notna().sum()), "windows": 0, "forecast_origin": None, "params": "{}",
                "metrics": "{}", "backtests": "[]", "forecast": None, "notes": "[]", "model": None}


def _result(status, model, history, future, windows, spec, notes, summary, backtests, reason=None, error=None,
            params_from="defaults"):
    forecast: Forecast = model.forecast(future)
    frame = forecast.to_frame(future["ds"])
    # Epoch nanoseconds whatever unit the gold timestamps came in with.
    columnar = {"ds": pd.to_datetime(frame["ds"], utc=True).dt.as_unit("ns").astype("int64").tolist(),
                **{c: frame[c].tolist() for c in frame.columns if c != "ds"}}
    candidate_errors = sorted({f"{b['candidate']}: {b['error']}" for b in backtests if b["error"]})
    return {"status": status, "champion": model.name, "reason": reason, "error": error, "n_obs": len(history),
            "windows": windows, "forecast_origin": history["ds"].iloc[-1],
            "params": _json({**model.logged_params(), "params_from": params_from,
                             **({"tuning_run": spec.tuned_by} if spec.tuned_by else {})}),
            "metrics": _json(summary), "backtests": _json(backtests), "forecast": _json(columnar),
            "notes": _json(notes + candidate_errors), "model": model.to_bytes()}


def _json(value: Any) -> str:
    return json.dumps(value, default=_plain, sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def forecast_frame(result: pd.Series) -> Optional[pd.DataFrame]:
    """The forecast rows stored in one result row (None when there is no forecast)."""
    if not isinstance(result["forecast"], str):
        return None
    frame = pd.DataFrame(json.loads(result["forecast"]))
    frame["ds"] = pd.to_datetime(frame["ds"], unit="ns", utc=True)
    return frame
