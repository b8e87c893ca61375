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

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from engine import jsontext
from engine.config import Config
from engine.errors import ManymodelsError
from engine.hierarchy import MAX_DENSE_NODES
from engine.medallion.schemas import TS
from engine.models import FALLBACK_MODEL, Forecast, ForecastModel, ModelSpec, make_model, model_class
from engine.models.ensemble import EnsembleModel
from engine.training.backtest import (CandidateSearch, add_ensemble, backtest_candidates, backtest_folds, describe,
                                      ranked, summarize, usable_windows)
from engine.training import conformal
from engine.training.history import prepare, prepare_scored
from engine.training.search import EntitySearch

OK, FALLBACK_STATUS, FAILED = "ok", "fallback", "failed"

RESULT_SCHEMA = pa.schema([
    ("entity_id", pa.string()), ("status", pa.string()), ("champion", pa.string()), ("reason", pa.string()),
    ("error", pa.string()), ("n_obs", pa.int64()), ("windows", pa.int64()), ("forecast_origin", TS),
    ("fit_seconds", pa.float64()), ("params", pa.string()), ("metrics", pa.string()), ("backtests", pa.string()),
    ("forecast", pa.string()), ("notes", pa.string()), ("model", pa.binary()), ("scores", pa.string()),
    ("paths", pa.string())])
RESULT_COLUMNS = RESULT_SCHEMA.names


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
    select: str = "best"        # "best": the best backtest wins; "combine": the mean of the ensemble_size best
    refit_every: int = 1        # backtest windows between fits (0: the first only; backtest.refit)
    years: int = 0              # windows at the forecast's time of year, 1..years back (backtest.years)
    hyperparameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # per model
    sources: Mapping[str, str] = field(default_factory=dict)   # where `hyperparameters` came from, per model
    tuned_by: Optional[str] = None          # the `manymodels tune` run whose values are in `hyperparameters`
    search: Optional[CandidateSearch] = None    # the per-entity search (tuning.per_entity)
    trained: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # panel-wide networks by model
    # Entities of a hierarchy: their champion's backtest forecasts are kept, to reconcile by (`paths`).
    keep_paths: frozenset[str] = frozenset()
    intervals: str = "model"    # conformal/auto: bands from the champion's backtest errors (training.conformal)
    weather: str = "persisted"  # future weather nothing gives: normal + the last day's persisting departure

    @classmethod
    def from_config(cls, config: Config, tuned: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    tuned_by: Optional[str] = None) -> "TrainSpec":
        """`tuned`: parameters of a tuning run, over the config's `model_params` where both set one."""
        tuned = {m: p for m, p in (tuned or {}).items() if m in config.models}
        params = {m: {**config.model_params.get(m, {}), **tuned.get(m, {})}
                  for m in config.models if config.model_params.get(m) or tuned.get(m)}
        sources = {m: f"tuning run {tuned_by}" if m in tuned else "config" for m in params}
        ensemble_size = params.get("ensemble", {}).get("size", config.training.ensemble_size)
        return cls(models=tuple(config.models), horizon=config.horizon, windows=config.backtest.windows,
                   step=config.backtest.step, metric=config.backtest.metric,
                   max_history=config.history_steps, ensemble_size=ensemble_size, select=config.backtest.select,
                   refit_every=config.backtest.refit_every, years=config.backtest.years,
                   model=config.model_spec(), fail_fast=config.training.fail_fast, hyperparameters=params,
                   sources=sources, tuned_by=tuned_by if tuned else None, search=EntitySearch.from_config(config),
                   keep_paths=frozenset(config.hierarchy.tree.nodes), intervals=config.training.intervals,
                   weather=config.training.weather)

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

    @cached_property
    def freq(self) -> pd.DateOffset:
        return pd.tseries.frequencies.to_offset(self.model.freq)


@dataclass(frozen=True)
class EntityInputs:
    """One entity's rows as training reads them: the history, the future rows, notes on the
    data, and the backtest folds (none for a constant series or one too short to backtest)."""

    history: pd.DataFrame
    future: pd.DataFrame
    notes: list[str]
    folds: list

    @classmethod
    def of(cls, rows: pd.DataFrame, spec: TrainSpec) -> "EntityInputs":
        history, future, notes, unobserved = prepare_scored(rows, spec)
        windows = usable_windows(history, spec)
        folds = (backtest_folds(history, spec, windows, future.attrs.get("scenario", ()), unobserved)
                 if windows >= 1 else [])
        return cls(history, future, notes, folds)


def train_entity(rows: pd.DataFrame, spec: TrainSpec, inputs: Optional[EntityInputs] = None) -> pd.DataFrame:
    """One entity's gold rows -> one result row (columns `RESULT_COLUMNS`). `inputs`, when the
    caller already prepared them from these rows (engine.training.ahead), are not prepared again."""
    return pd.DataFrame([entity_result(rows, spec, inputs)], columns=RESULT_COLUMNS)


def entity_result(rows: pd.DataFrame, spec: TrainSpec, inputs: Optional[EntityInputs] = None) -> dict[str, Any]:
    """`train_entity`'s result row as a dict (a task builds one frame of all its rows)."""
    started = time.perf_counter()
    entity = str(rows["entity_id"].iloc[0])
    try:
        result = _train(rows, spec, inputs or EntityInputs.of(rows, spec))
    except Exception as exc:  # noqa: BLE001 - isolation: one entity's failure becomes data
        if spec.fail_fast:
            raise
        result = _after_failure(rows, spec, exc)
    result.update(entity_id=entity, fit_seconds=time.perf_counter() - started)
    return result


def _train(rows: pd.DataFrame, spec: TrainSpec, inputs: EntityInputs) -> dict[str, Any]:
    history, future, folds = inputs.history, inputs.future, inputs.folds
    notes = list(inputs.notes)
    y = history["y"].to_numpy()
    if np.ptp(y) == 0:
        return _fallback(history, future, spec, FALLBACK_STATUS, notes, reason="constant series")
    windows = len(folds)
    if windows < 1:
        return _unvalidated(history, future, spec, notes,
                            f"too short: {len(y)} observations, one backtest window needs {spec.min_length()}")
    backtests = backtest_candidates(folds, spec)
    summary = summarize(backtests.records, spec.candidates)
    for name, search in backtests.searches.items():
        summary[name].update(search)
    if "ensemble" in spec.models or spec.select == "combine":
        add_ensemble(folds, spec, backtests, summary)
    order = ranked(summary, spec.metric)
    if not order:
        errors = "; ".join(sorted({b["error"] for b in backtests.records if b["error"]}))
        raise ManymodelsError(f"every candidate failed its backtest: {errors}")
    if spec.select == "combine" and "ensemble" in summary:
        # The mean of the best: picking one by a few windows is noisier than averaging them.
        model = _combined([n for n in ranked(summary, spec.metric, finite=True) if n != "ensemble"], spec,
                          backtests.chosen, history, notes)
    else:
        model = _first_fitting(order, spec, summary, backtests.chosen, history, notes)
    name = model.name
    source = "entity search" if name in backtests.searches else spec.sources.get(name, "defaults")
    scores, paths = dict(summary.get(name, {})), None
    keep_paths = str(rows["entity_id"].iloc[0]) in spec.keep_paths
    if spec.intervals != "model" or keep_paths:
        windows_of, scored = _champion_backtests(model, folds, backtests)
        forecasts = np.array([f.mean for f in scored])
        if spec.intervals != "model" and windows_of:
            scores.update(_conformal(model, windows_of, forecasts, spec, scores))
        if keep_paths and windows_of:
            paths = {"origins": [f.origin.isoformat() for f in windows_of], "forecast": forecasts.tolist(),
                     "actual": [f.actual.tolist() for f in windows_of],
                     "observed": [None if f.observed is None else f.observed.tolist() for f in windows_of],
                     # Bands triple what every window sends to the driver: kept where node-by-node
                     # matrices are too (hierarchies the size MinT reconciles).
                     "bands": _scored_bands(scored, windows_of, forecasts, spec, model.floor_, scores)
                     if len(spec.keep_paths) <= MAX_DENSE_NODES else {}}
    return result_of(OK, model, history["ds"], future, windows, spec, notes, summary, backtests.records,
                     params_from=source, paths=paths, scores=scores)


def _champion_backtests(model: ForecastModel, folds: list, backtests) -> tuple[list, list[Forecast]]:
    """The backtest windows the champion was scored on and its forecast of each (an ensemble's:
    its members' mean, as it was scored): for conformal bands and for reconciling a hierarchy."""
    members = model.member_names if isinstance(model, EnsembleModel) else (model.name,)
    windows = [f for f in folds if all((m, f.window) in backtests.forecasts for m in members)]
    return windows, [EnsembleModel.combine([backtests.forecasts[(m, f.window)] for m in members]) for f in windows]


def _scored_bands(scored: list[Forecast], windows: list, means: np.ndarray, spec: TrainSpec, floor,
                  scores: dict[str, Any]) -> dict[str, list]:
    """Each level's (lower, upper) per window, as the bands the champion publishes were judged in
    its scores: its own, or conformal ones held out from each window. A hierarchy measures their
    coverage again once reconciled (engine.training.reconcile)."""
    if scores.get("intervals") == "conformal":
        if len(windows) < 2:        # widths from the only window's own errors: nothing held out to judge
            return {}
        scored = conformal.held_out_bands(np.array([f.actual for f in windows]), means, spec.model.levels, floor)
    return {str(level): [[f.bounds[level][0].tolist(), f.bounds[level][1].tolist()] for f in scored]
            for level in spec.model.levels if all(level in f.bounds for f in scored)}


def _conformal(model: ForecastModel, windows: list, forecasts: np.ndarray, spec: TrainSpec,
               own: dict[str, Any]) -> dict[str, Any]:
    """Give `model` conformal bands from its backtest errors; the scores its published bands are
    judged by (on held-out windows, when there are two or more). With `training.intervals: auto`
    only when those beat the model's own bands' backtest pinball loss (`own`)."""
    actual = np.array([f.actual for f in windows])
    held_out = {}
    if len(windows) > 1:
        held_out = conformal.held_out_scores(actual, forecasts, np.array([f.scale for f in windows]),
                                             spec.model.levels, model.floor_, [f.observed for f in windows])
    if spec.intervals == "auto" and not held_out.get("pinball", np.inf) < own.get("pinball", np.inf):
        return {"intervals": "model"}
    widths = conformal.widths(actual - forecasts, spec.model.levels)
    model.intervals_ = {str(level): half.tolist() for level, half in widths.items()}
    return {**held_out, "intervals": "conformal"}


def _first_fitting(order: list[str], spec: TrainSpec, summary: dict, chosen: dict, history: pd.DataFrame,
                   notes: list[str]) -> ForecastModel:
    """The best candidate that fits the whole history (a backtest winner can still fail on it)."""
    for name in order:
        try:
            return _make(name, spec, summary, chosen).fit(history)
        except Exception as exc:  # noqa: BLE001 - the next best is tried; the note says why
            if spec.fail_fast or name == order[-1]:
                raise
            notes.append(f"{name} won the backtest but failed on the whole history ({describe(exc)}); next best")
    raise AssertionError("unreachable: order is not empty")


def _combined(ranking: list[str], spec: TrainSpec, chosen: dict, history: pd.DataFrame,
              notes: list[str]) -> ForecastModel:
    """The mean of the `ensemble_size` best candidates that fit the whole history."""
    fitted = []
    for name in ranking:
        try:
            fitted.append(make_model(name, spec.model, chosen.get(name), spec.trained).fit(history))
        except Exception as exc:  # noqa: BLE001 - the next best takes its place; the note says why
            if spec.fail_fast:
                raise
            notes.append(f"{name} failed on the whole history ({describe(exc)}); the next best is combined")
        if len(fitted) == spec.ensemble_size:
            break
    if len(fitted) == 1:
        return fitted[0]
    if not fitted:
        raise ManymodelsError("no candidate could be fitted on the whole history")
    return EnsembleModel.of_fitted(spec.model, fitted, spec.hyperparameters.get("ensemble"))


def _make(name: str, spec: TrainSpec, summary: dict, chosen: dict[str, dict]) -> ForecastModel:
    if name == "ensemble":
        def member(member_name: str, model_spec: ModelSpec) -> ForecastModel:
            return make_model(member_name, model_spec, chosen.get(member_name), spec.trained)
        return EnsembleModel(spec.model, summary["ensemble"]["members"], member, spec.hyperparameters.get("ensemble"))
    return make_model(name, spec.model, chosen.get(name), spec.trained)


def _unvalidated(history, future, spec, notes, reason):
    """Too short to backtest: the mean of the candidates that fit (with nothing to choose by,
    a combination is the safer bet than any one model), else the fallback model."""
    fitted = []
    for name in spec.candidates:
        if name == FALLBACK_MODEL or model_class(name).needs_trained_network:
            continue
        try:
            fitted.append(make_model(name, spec.model, spec.hyperparameters.get(name)).fit(history))
        except Exception:  # noqa: BLE001 - a candidate that cannot fit this little history is left out
            continue
    if not fitted:
        return _fallback(history, future, spec, FALLBACK_STATUS, notes, reason=reason)
    model = fitted[0] if len(fitted) == 1 else EnsembleModel.of_fitted(spec.model, fitted,
                                                                      spec.hyperparameters.get("ensemble"))
    return result_of(FALLBACK_STATUS, model, history["ds"], future, 0, spec, notes, {}, [],
                     reason=f"{reason}; {model.name} of {', '.join(m.name for m in fitted)}, not backtested")


def _fallback(history, future, spec, status, notes, reason, error=None):
    model = make_model(FALLBACK_MODEL, spec.model).fit(history)
    return result_of(status, model, history["ds"], future, 0, spec, notes, {}, [], reason=reason, error=error)


def _after_failure(rows: pd.DataFrame, spec: TrainSpec, exc: Exception) -> dict[str, Any]:
    error = describe(exc)
    try:
        history, future, notes = prepare(rows, spec)
        return _fallback(history, future, spec, FAILED, notes, reason="training failed", error=error)
    except Exception:  # noqa: BLE001 - nothing left to forecast from (e.g. no observed value)
        return {"status": FAILED, "champion": None, "reason": "no fallback possible", "error": error,
                "n_obs": int(rows["y"].notna().sum()), "windows": 0, "forecast_origin": None, "params": "{}",
                "metrics": "{}", "backtests": "[]", "forecast": None, "notes": "[]", "model": None, "scores": "{}",
                "paths": None}


def result_of(status, model, stamps, future, windows, spec, notes, summary, backtests, reason=None, error=None,
              params_from="defaults", paths=None, scores=None, forecast: Optional[Forecast] = None):
    """A result row's fields for `model`, fitted on a history with the stamps `stamps`, and its
    forecast of the rows `future` (`forecast`, when the caller made it already)."""
    forecast = model.forecast(future) if forecast is None else forecast
    candidate_errors = sorted({f"{b['candidate']}: {b['error']}" for b in backtests if b["error"]})
    if model.floor_inferred:
        notes = [*notes, "nonnegative: the history was never negative, so no forecast or bound goes below 0 "
                         "(series.nonnegative: false turns this off)"]
    return {"status": status, "champion": model.name, "reason": reason, "error": error, "n_obs": len(stamps),
            "windows": windows, "forecast_origin": stamps.iloc[-1] if isinstance(stamps, pd.Series) else stamps[-1],
            "params": _json({**model.logged_params(), "params_from": params_from,
                             **({"tuning_run": spec.tuned_by} if spec.tuned_by else {})}),
            "metrics": _json(summary), "backtests": _json(backtests),
            "forecast": forecast_json(forecast.columns(), future["ds"]),
            "notes": _json(notes + candidate_errors), "model": model.to_bytes(),
            "scores": _json(summary.get(model.name, {}) if scores is None else scores),
            "paths": None if paths is None else _json(paths)}


def _json(value: Any) -> str:
    return jsontext.dumps(value, default=_plain, sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def forecast_json(columns: Mapping[str, Any], ds) -> str:
    """Forecast rows as a result row stores them: `columns` of values by name (a forecast's
    `Forecast.columns()`), `ds` in epoch nanoseconds whatever unit the gold timestamps came in
    with (`forecast_frame` reads them back)."""
    return _json({"ds": epoch_ns(ds), **{c: np.asarray(v).tolist() for c, v in columns.items()}})


def epoch_ns(ds) -> list[int]:
    """Timestamps as UTC epoch nanoseconds, naive ones read as UTC."""
    stamps = ds if isinstance(ds, pd.DatetimeIndex) else pd.DatetimeIndex(ds)
    if stamps.tz is None:
        stamps = stamps.tz_localize("UTC")
    if stamps.unit != "ns":
        stamps = stamps.as_unit("ns")
    return stamps.asi8.tolist()        # the instant, whatever the zone: no conversion needed


def forecast_frame(result: pd.Series) -> Optional[pd.DataFrame]:
    """The forecast rows stored in one result row (None when there is no forecast)."""
    if not isinstance(result["forecast"], str):
        return None
    return forecast_frames([result["forecast"]])[0]


def forecast_frames(forecasts: Sequence[str]) -> tuple[pd.DataFrame, list[int]]:
    """The rows of several stored forecasts stacked column by column (a column one forecast lacks
    is missing there), and each forecast's number of rows: gold.forecasts is written from all of
    a run's at once, where a frame per entity cost about 1.5 ms of the driver's time."""
    read = jsontext.stacked(forecasts, strings=("reconciliation",))
    if read is not None:
        frame, lengths = read
        frame["ds"] = pd.to_datetime(frame["ds"], unit="ns", utc=True)
        return frame, lengths.tolist()
    parsed = [jsontext.loads(f) for f in forecasts]
    lengths = [len(p["ds"]) for p in parsed]
    names = list(dict.fromkeys(name for p in parsed for name in p))
    merged: dict[str, list] = {name: [] for name in names}
    for p, n in zip(parsed, lengths):
        for name in names:
            merged[name].extend(p.get(name, [None] * n))
    frame = pd.DataFrame(merged)
    frame["ds"] = pd.to_datetime(frame["ds"], unit="ns", utc=True)
    return frame, lengths
