"""Rolling-origin backtests: the folds, every candidate's record per fold, ranking, the ensemble.

Training picks each entity's champion with these functions, and the per-entity search
(engine.training.search) and `manymodels tune` (engine.tuning) score hyperparameters with the
same ones, so a model is chosen and tuned on one definition of "better".

A backtest record is a plain dict: `candidate`, `window`, `origin`, `error` (None when the
window's fit worked) and the window's metrics (engine.training.metrics.window_metrics).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

import numpy as np
import pandas as pd

from engine.models import Forecast, ForecastModel, ModelError, make_model
from engine.models.ensemble import EnsembleModel
from engine.training.history import future_columns
from engine.training.metrics import mase_scale, window_metrics

if TYPE_CHECKING:
    from engine.training.entity import TrainSpec

CheckTime = Optional[Callable[[], None]]    # raises to end a search trial that ran out of time


@dataclass(frozen=True)
class Fold:
    """One backtest window: fit on `train`, forecast the rows of `test` (no `y`), score against
    `actual` with the MASE `scale` of the training part. `refit`: the window fits a refreshable
    model afresh rather than carrying the last window's fit over (`backtest.refit`)."""

    window: int
    origin: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame
    actual: np.ndarray
    scale: float
    refit: bool = True
    observed: Optional[np.ndarray] = None   # the steps of `actual` scored (None: all; imputed ones are not)

    def record(self, candidate: str) -> dict[str, Any]:
        """A record for `candidate` on this window, before its metrics or error are known."""
        return {"candidate": candidate, "window": self.window, "origin": self.origin.isoformat(), "error": None}


class CandidateSearch(Protocol):
    """What training needs of a per-entity hyperparameter search (engine.training.search.EntitySearch)."""

    space: Mapping[str, Any]

    def search(self, name: str, base: Mapping[str, Any], folds: list[Fold], spec: "TrainSpec") -> tuple[
            dict[str, Any], list[dict], dict[int, Forecast], dict[str, Any]]:
        """(chosen params, records and forecasts by window of those params, a summary of the search)."""


def usable_windows(history: pd.DataFrame, spec: "TrainSpec") -> int:
    """Backtest windows the history allows (up to `spec.windows`); 0 for a constant series."""
    if np.ptp(history["y"].to_numpy()) == 0:
        return 0
    return window_count(len(history), spec)


def window_count(n: int, spec: "TrainSpec") -> int:
    """Recent backtest windows an `n`-row history allows (up to `spec.windows`)."""
    return max(0, min(spec.windows, (n - spec.min_length()) // spec.step + 1))


def backtest_folds(history: pd.DataFrame, spec: "TrainSpec", windows: int,
                   scenario: tuple[str, ...] = (), unobserved: Optional[np.ndarray] = None) -> list[Fold]:
    """The `windows` rolling-origin folds of `history`, the last ending at its last row, after
    the `backtest.years` ones the history allows (oldest first). Regressors in `scenario` (those
    the real forecast must fill without knowing them) are filled the same way from each window's
    own past, so a model is judged on the information it will have, not on realized weather.
    Steps `unobserved` in the history (imputed, `history.prepare_scored`) are not scored, and a window
    with no observed step is left out (unless every window would be)."""
    n, h = len(history), spec.horizon
    y = history["y"].to_numpy()
    origins, observed = scored_origins(fold_origins(n, spec, windows), h, unobserved)
    # Each window's test rows from the columns' arrays, one frame each (this runs per entity).
    inputs = {c: history[c].array for c in history.columns if c != "y"}
    folds = []
    for window, origin, refit in origins:
        train = history.iloc[:origin]
        stop = min(origin + h, n)
        columns = {c: values[origin:stop] for c, values in inputs.items()}
        if scenario:
            _, filled, _ = future_columns(train, None, spec)
            columns.update({c: filled[c][:stop - origin] for c in scenario})
        test = pd.DataFrame(columns, copy=True)
        folds.append(Fold(window, history["ds"].iloc[origin], train, test, y[origin:origin + h],
                          mase_scale(y[:origin], mase_season(spec, origin)), refit, observed.get(window)))
    return folds


def scored_origins(origins: list[tuple[int, bool]], horizon: int,
                   unobserved: Optional[np.ndarray]) -> tuple[list[tuple[int, int, bool]], dict[int, np.ndarray]]:
    """(window, origin, refit) of the folds to score, and by window the mask of its observed
    steps where some are not: a window whose steps were all imputed is left out, unless every
    window's were (then all are scored as they are)."""
    numbered = [(window, origin, refit) for window, (origin, refit) in enumerate(origins)]
    if unobserved is None or not unobserved.any():
        return numbered, {}
    masks = {window: ~unobserved[origin:origin + horizon] for window, origin, _ in numbered}
    kept = [fold for fold in numbered if masks[fold[0]].any()]
    if not kept:
        return numbered, {}
    return kept, {window: mask for window, mask in masks.items() if not mask.all()}


def fold_origins(n: int, spec: "TrainSpec", windows: int) -> list[tuple[int, bool]]:
    """(origin row, refit) of each fold of an `n`-row history, oldest first: the `backtest.years`
    windows, then the `windows` recent ones, the last ending at the last row."""
    recent = [(n - spec.horizon - (windows - 1 - window) * spec.step, window == 0 or refit_due(window, spec))
              for window in range(windows)]
    return _seasonal_origins(n, spec, recent[0][0] if recent else n) + recent


def _seasonal_origins(n: int, spec: "TrainSpec", first_recent: int) -> list[tuple[int, bool]]:
    """Origins of the `backtest.years` windows: the steps the forecast covers (from `n`), k years
    back for each k the history holds with a training part, oldest first; each fits afresh (a
    fit is not carried over a year). Those that would overlap the recent windows are left out."""
    year = spec.model.frequency.year_steps
    origins = [n - k * year for k in range(spec.years, 0, -1)]
    return [(o, True) for o in origins if o >= spec.min_train and o + spec.horizon <= first_recent]


def mase_season(spec: "TrainSpec", n: int) -> int:
    seasons = [s for s in spec.model.season_lengths if 1 < s < n]
    return min(seasons) if seasons else 1


def backtest_candidate(name: str, params: Optional[Mapping[str, Any]], folds: list[Fold], spec: "TrainSpec",
                       check_time: CheckTime = None) -> tuple[list[dict], dict[int, Forecast]]:
    """One candidate with hyperparameters `params` over the `folds`: a record per window (metrics
    or the error) and the forecasts by window. `check_time()` may raise to end a search trial."""
    records, forecasts, model = [], {}, None
    for fold in folds:
        record = fold.record(name)
        try:
            model = _fold_model(name, params, fold, spec, model)
            forecast = model.forecast(fold.test)
            forecasts[fold.window] = forecast
            record.update(window_metrics(fold.actual, forecast, fold.scale, fold.observed))
        except Exception as exc:  # noqa: BLE001 - one candidate failing leaves the others
            if spec.fail_fast:
                raise
            record["error"] = describe(exc)
            model = None
        records.append(record)
        if check_time:
            check_time()
    return records, forecasts


def refit_due(window: int, spec: "TrainSpec") -> bool:
    """Whether recent backtest window `window` (0: the first) refits a refreshable model
    (`backtest.refit`) rather than carrying the last window's fit over to it."""
    return bool(spec.refit_every and window % spec.refit_every == 0)


def _fold_model(name: str, params: Optional[Mapping[str, Any]], fold: Fold, spec: "TrainSpec",
                last: Optional[ForecastModel]) -> ForecastModel:
    """The model a window forecasts with: fitted on the window's history, or, between refits
    (`spec.refit_every`), the last window's fit carried over to it (`ForecastModel.refreshed`)."""
    if last is not None and last.refreshable and not fold.refit:
        try:
            return last.refreshed(fold.train)
        except ModelError:
            pass        # e.g. a fixed-parameter filter or arima's re-estimate fails on the new window: fit it
    return make_model(name, spec.model, params, spec.trained).fit(fold.train)


@dataclass
class Backtests:
    """Every candidate's backtest on one entity."""

    records: list[dict]
    forecasts: dict[tuple[str, int], Forecast]      # by (candidate, window)
    chosen: dict[str, dict[str, Any]]               # the hyperparameters each candidate was scored with
    searches: dict[str, dict[str, Any]]             # per-entity search summaries, by candidate


def backtest_candidates(folds: list[Fold], spec: "TrainSpec", check_time: CheckTime = None) -> Backtests:
    """Rolling-origin forecasts of every candidate, each with its configured (or tuned)
    hyperparameters, or those a per-entity search chose (`spec.search`)."""
    out = Backtests([], {}, {}, {})
    for name in spec.candidates:
        out.chosen[name] = dict(spec.hyperparameters.get(name, {}))
        if spec.search is not None and name in spec.search.space:
            out.chosen[name], rows, by_window, out.searches[name] = spec.search.search(
                name, out.chosen[name], folds, spec)
        else:
            rows, by_window = backtest_candidate(name, out.chosen[name], folds, spec, check_time)
        out.records.extend(rows)
        out.forecasts.update({(name, w): f for w, f in by_window.items()})
    return out


def summarize(records: list[dict], candidates: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean metrics and failed windows per candidate."""
    return {name: mean_metrics([r for r in records if r["candidate"] == name]) for name in candidates}


def mean_metrics(records: list[dict]) -> dict[str, float]:
    ok = [r for r in records if not r["error"]]
    keys = [k for k in (ok[0] if ok else {}) if k not in ("candidate", "window", "origin", "error")]
    # One (keys, windows) array: each row's mean is np.mean of that key's values, to the last bit
    # (a reduction along contiguous rows sums pairwise, as np.mean of one list does).
    means = np.array([[r[k] for r in ok] for k in keys], dtype="float64").mean(axis=1) if ok else ()
    out = {k: _finite(float(m)) for k, m in zip(keys, means)}
    out["failed_windows"] = len(records) - len(ok)
    return out


def _finite(value: float) -> float:
    return value if np.isfinite(value) else float("inf")


def ranked(summary: Mapping[str, Mapping[str, Any]], metric: str, finite: bool = False) -> list[str]:
    """Candidates without a failed window, best mean `metric` first (ties: config order)."""
    scored = [(s[metric], i, name) for i, (name, s) in enumerate(summary.items())
              if s["failed_windows"] == 0 and (not finite or np.isfinite(s[metric]))]
    return [name for *_, name in sorted(scored)]


def add_ensemble(folds: list[Fold], spec: "TrainSpec", backtests: Backtests, summary: dict) -> None:
    """Score the mean of the `spec.ensemble_size` best finite candidates as candidate `ensemble`
    (records appended to `backtests`, its summary to `summary`); nothing with fewer than two."""
    members = ranked(summary, spec.metric, finite=True)[:spec.ensemble_size]
    if len(members) < 2:
        return
    rows = []
    for fold in folds:
        combined = EnsembleModel.combine([backtests.forecasts[(m, fold.window)] for m in members])
        rows.append({**fold.record("ensemble"), **window_metrics(fold.actual, combined, fold.scale, fold.observed)})
    backtests.records.extend(rows)
    summary["ensemble"] = {**mean_metrics(rows), "members": members}


def describe(exc: BaseException) -> str:
    """How a failure is recorded in a backtest record or a result row."""
    return f"{type(exc).__name__}: {exc}"
