"""The per-entity hyperparameter search (`tuning.per_entity`), and the trial machinery
`manymodels tune` (engine.tuning) shares with it.

A small TPE search with local hyperopt `Trials` runs inside the pure per-entity function, so it
runs the same on the local, Spark and Ray backends; each trial is scored by the engine's own
backtest (engine.training.backtest). A trial that fails (a window's fit raised, or it ran past
`trial_timeout`) is hyperopt STATUS_FAIL with the reason, and the search goes on. The configured
parameters are always the first trial, so a search never returns something worse than them on
its own score.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

import numpy as np

from engine.errors import ManymodelsError
from engine.models import MODEL_CLASSES
from engine.models.space import Dimension, hyperopt_space, model_space, point_params
from engine.training.backtest import (CheckTime, Fold, add_ensemble, backtest_candidate, backtest_candidates,
                                      summarize)

if TYPE_CHECKING:
    from engine.training.entity import TrainSpec


class TrialTimeout(BaseException):
    """A trial ran past its time limit. A BaseException, so that the `except Exception` which
    isolates one window's failure inside a backtest does not swallow it."""


class TrialFailed(ManymodelsError):
    """A trial's parameters could not be scored (a window failed or the entity cannot be backtested)."""


@dataclass(frozen=True)
class EntitySearch:
    """The per-entity search of `tuning.per_entity`, parsed once from the config."""

    space: Mapping[str, tuple[Dimension, ...]]
    max_evals: int
    timeout: float
    trial_timeout: float
    early_stop: int
    seed: int

    @classmethod
    def from_config(cls, config) -> Optional["EntitySearch"]:
        per = config.tuning.per_entity
        if not per.models:
            return None
        return cls({m: model_space(m, config.tuning.space.get(m)) for m in per.models}, per.max_evals,
                   per.timeout, per.trial_timeout, per.early_stop, config.training.seed)

    def search(self, name: str, base: Mapping[str, Any], folds: list[Fold], spec: "TrainSpec"):
        """engine.training.backtest.CandidateSearch: `search_entity` with this search's settings."""
        return search_entity(name, base, folds, spec)


@contextmanager
def time_limit(seconds: float) -> Iterator[Callable[[], None]]:
    """Raise TrialTimeout once `seconds` have passed: by SIGALRM where this is the main thread
    (it interrupts a long fit), and by the returned check, which callers run between windows."""
    if seconds <= 0:
        yield lambda: None
        return
    deadline = time.monotonic() + seconds
    message = f"trial ran past tuning trial_timeout ({seconds:g}s)"

    def check() -> None:
        if time.monotonic() > deadline:
            raise TrialTimeout(message)

    def on_alarm(signum, frame):
        raise TrialTimeout(message)

    # One limit at a time: a timer already armed by the caller would be replaced (none of ours nests).
    alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, on_alarm) if alarm else None
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield check
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def stop_without_improvement(patience: int):
    """hyperopt early_stop_fn: stop once `patience` finished trials in a row (failed ones too)
    did not beat the best loss. (hyperopt's own no_progress_loss breaks on failed trials.)"""
    from hyperopt import STATUS_OK

    def stop(trials, *state):
        finished = sorted((t for t in trials.trials if t["result"].get("status") is not None
                           and t["result"].get("status") != "new"), key=lambda t: t["tid"])
        losses = [t["result"]["loss"] if t["result"]["status"] == STATUS_OK else np.inf for t in finished]
        if not losses:
            return False, []
        best = int(np.argmin(losses)) if np.isfinite(min(losses)) else -1
        return len(losses) - 1 - best >= patience, []
    return stop


def mean_loss(records: list[dict], metric: str) -> float:
    """Mean `metric` over the backtest windows; TrialFailed when a window failed."""
    errors = [r["error"] for r in records if r["error"]]
    if errors:
        raise TrialFailed(f"{len(errors)} of {len(records)} backtest windows failed: {errors[0]}")
    loss = float(np.mean([r[metric] for r in records]))
    if not np.isfinite(loss):
        raise TrialFailed(f"backtest {metric} is not finite")
    return loss


def entity_loss(name: str, params: Mapping[str, Any], folds: list[Fold], spec: "TrainSpec",
                check_time: CheckTime = None):
    """(loss, records, forecasts by window) of model `name` with `params` on one entity's folds.
    For the ensemble, `params["size"]` best candidates (with their configured parameters) are combined."""
    if name != "ensemble":
        records, forecasts = backtest_candidate(name, params, folds, spec, check_time)
        return mean_loss(records, spec.metric), records, forecasts
    backtests = backtest_candidates(folds, replace(spec, search=None), check_time)
    summary = summarize(backtests.records, spec.candidates)
    sized = replace(spec, ensemble_size=int(params.get("size", spec.ensemble_size)))
    add_ensemble(folds, sized, backtests, summary)
    if "ensemble" not in summary:
        raise TrialFailed("fewer than two candidates had a finite backtest to combine")
    ensemble = [r for r in backtests.records if r["candidate"] == "ensemble"]
    return mean_loss(ensemble, spec.metric), ensemble, {}


def quiet_hyperopt() -> None:
    for logger in ("hyperopt", "hyperopt.tpe", "hyperopt.fmin"):
        logging.getLogger(logger).setLevel(logging.WARNING)


def run_fmin(objective, space, **options) -> None:
    """hyperopt's TPE over `space`; the trials object given in `options` holds the outcome, so a
    search whose every trial failed is a result to report, not an exception."""
    from hyperopt import fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed
    try:
        fmin(objective, space, algo=tpe.suggest, **options)
    except AllTrialsFailed:
        pass


def search_entity(name: str, base: Mapping[str, Any], folds: list[Fold], spec: "TrainSpec"):
    """The per-entity search for candidate `name`: (chosen params, backtest records and forecasts
    by window of the chosen params, a summary of the search for the entity's metrics)."""
    from hyperopt import STATUS_FAIL, STATUS_OK
    from hyperopt.fmin import generate_trials_to_calculate
    quiet_hyperopt()
    search: EntitySearch = spec.search
    dims = search.space[name]
    started = time.perf_counter()
    best: dict[str, Any] = {}

    def objective(point: dict) -> dict:
        params = {**base, **point_params(dims, point)}
        try:
            with time_limit(search.trial_timeout) as check:
                loss, records, forecasts = entity_loss(name, params, folds, spec, check)
        except (TrialFailed, TrialTimeout) as exc:
            best.setdefault("failed", (params, str(exc)))
            return {"status": STATUS_FAIL, "error": str(exc)}
        if "loss" not in best or loss < best["loss"]:
            best.update(loss=loss, params=params, records=records, forecasts=forecasts)
        return {"status": STATUS_OK, "loss": loss}

    trials = generate_trials_to_calculate([initial_point(name, dims, base)])
    trials.refresh()    # so that fmin counts the configured point against max_evals
    run_fmin(objective, hyperopt_space(dims), max_evals=search.max_evals, trials=trials,
             timeout=search.timeout or None, rstate=np.random.default_rng(search.seed), show_progressbar=False,
             early_stop_fn=stop_without_improvement(search.early_stop) if search.early_stop else None, verbose=False)
    outcomes = [t["result"] for t in trials.trials]
    summary = {"search_trials": len(outcomes),
               "search_failed_trials": sum(r.get("status") != STATUS_OK for r in outcomes),
               "search_seconds": time.perf_counter() - started}
    if outcomes and outcomes[0].get("status") == STATUS_OK:
        summary["search_default_loss"] = outcomes[0]["loss"]
    if "loss" not in best:
        params, error = best.get("failed", (dict(base), "no trial finished"))
        records = [{**fold.record(name), "error": f"every search trial failed: {error}"} for fold in folds]
        return dict(base), records, {}, summary
    return best["params"], best["records"], best["forecasts"], summary


def configured_params(name: str, dims: tuple[Dimension, ...], base: Mapping[str, Any]) -> dict[str, Any]:
    """The configured parameters (declared defaults where unset), moved inside the searched ranges."""
    declared = MODEL_CLASSES[name].hyperparameters
    params = dict(base)
    for d in dims:
        value = base.get(d.name, declared[d.name].default)
        if d.kind == "choice" and value not in d.choices:   # the default is outside a narrowed choice
            value = d.choices[0]
        elif d.kind != "choice":
            value = min(max(value, d.low), d.high)
        params[d.name] = value
    return params


def initial_point(name: str, dims: tuple[Dimension, ...], base: Mapping[str, Any]) -> dict[str, Any]:
    """`configured_params` as a hyperopt point (choices by index)."""
    params = configured_params(name, dims, base)
    return {d.name: d.encode(params[d.name]) for d in dims}
