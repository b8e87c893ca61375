"""Backtest refits (`backtest.refit`): which windows fit afresh and which re-run the last fit."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from engine.config import parse_config
from engine.training.backtest import _fold_model, backtest_candidate, backtest_folds, usable_windows
from engine.training.entity import TrainSpec, train_entity
from engine.training.history import prepare, prepare_scored
from tests.engine.training.test_entity import entity, spec_for


def fitted_parameters(name, refit):
    """Per window: the parameters of the model the window forecast with."""
    spec = dataclasses.replace(spec_for(["ets", "arima", "arima_joint"]), windows=4, refit_every=refit)
    rng = np.random.default_rng(4)
    y = 200 + 40 * np.sin(np.arange(24 * 35) * 2 * np.pi / 24) + np.cumsum(rng.normal(0, 3, 24 * 35))
    history, _, _ = prepare(entity("e", y), spec)
    model, out = None, []
    for fold in backtest_folds(history, spec, 4):
        model = _fold_model(name, {}, fold, spec, model)
        out.append(json.dumps(model._state()["fit"]) if name == "ets" else
                   json.dumps([model.order_, model._estimates()["coef"]]))
    records, forecasts = backtest_candidate(name, {}, backtest_folds(history, spec, 4), spec)
    assert [r["error"] for r in records] == [None] * 4 and sorted(forecasts) == [0, 1, 2, 3]
    return out


@pytest.mark.parametrize("refit, fits", [(1, [0, 1, 2, 3]), (0, [0]), (2, [0, 2])])
def test_candidates_are_fitted_every_refit_windows_and_rerun_with_those_parameters_between(refit, fits):
    parameters = fitted_parameters("ets", refit)
    changed = [w for w in range(4) if w == 0 or parameters[w] != parameters[w - 1]]
    assert changed == fits


def test_a_model_whose_fit_cannot_be_rerun_is_fitted_at_every_window():
    coefficients = fitted_parameters("arima_joint", 0)
    assert len(set(coefficients)) == 4


def test_arima_keeps_its_order_between_refits_and_estimates_its_coefficients_again():
    windows = [json.loads(w) for w in fitted_parameters("arima", 0)]
    assert len({json.dumps(order) for order, _ in windows}) == 1
    assert len({json.dumps(coef) for _, coef in windows}) == 4


def test_backtest_refit_defaults_to_the_first_window_below_daily_steps_and_checks_its_value():
    def config(freq, **backtest):
        return parse_config({"name": "t", "source": {"kind": "synthetic"}, "series": {"freq": freq},
                             "backtest": backtest})
    assert config("h").backtest.refit_every == 0 and config("15min").backtest.refit_every == 0
    assert config("D").backtest.refit_every == 1 and config("MS").backtest.refit_every == 1
    assert config("h", refit=True).backtest.refit_every == 1 and config("D", refit=3).backtest.refit_every == 3
    from engine.config import ConfigError
    with pytest.raises(ConfigError, match="backtest.refit' must be true, false or a number of windows >= 1, got 0"):
        config("h", refit=0)


def daily_spec(**backtest):
    config = parse_config({"name": "t", "source": {"kind": "synthetic"}, "series": {"freq": "D"}, "horizon": 7,
                           "backtest": {"windows": 3, "step": 7, "refit": False, **backtest},
                           "models": ["seasonal_naive", "ets"]})
    return TrainSpec.from_config(config)


def daily_history(days: int, spec) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    t = np.arange(days)
    y = 100 + 20 * np.sin(2 * np.pi * t / 365.25) + 5 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 2, days)
    rows = pd.DataFrame({"entity_id": "e", "ds": pd.date_range("2021-01-01", periods=days, freq="D", tz="UTC"),
                         "y": y})
    history, future, _ = prepare(rows, spec)
    return history, future


def test_backtest_years_adds_the_forecasts_weeks_of_earlier_years_each_fitted_afresh():
    """`backtest.years: 2`: before the recent windows, the 7 days the forecast covers 52 weeks and
    104 weeks earlier (same weekdays), oldest first; those fit afresh, and only the first recent
    window fits among the recent ones (refit false)."""
    spec = daily_spec(years=2)
    history, future = daily_history(900, spec)
    folds = backtest_folds(history, spec, 3)
    n = len(history)
    assert [f.window for f in folds] == [0, 1, 2, 3, 4]
    assert [f.origin for f in folds] == list(history["ds"].iloc[[n - 728, n - 364, n - 21, n - 14, n - 7]])
    assert [f.refit for f in folds] == [True, True, True, False, False]
    for fold, years in zip(folds[:2], (2, 1)):
        assert (fold.test["ds"] + pd.Timedelta(days=364 * years)).tolist() == future["ds"].tolist()
        assert len(fold.train) == fold.train.index[-1] + 1 == n - 364 * years      # only its own past
    ets = [None]
    for fold in folds:
        ets.append(_fold_model("ets", {}, fold, spec, ets[-1]))
    fits = [json.dumps(m._state()["fit"]) for m in ets[1:]]
    assert len(set(fits[:3])) == 3 and fits[2] == fits[3] == fits[4]
    records, forecasts = backtest_candidate("ets", {}, folds, spec)
    assert [r["error"] for r in records] == [None] * 5 and sorted(forecasts) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("days, backtest, kept", [
    (500, {"years": 2}, 1),                              # two years back is before the history
    (900, {"years": 2, "windows": 60}, 1),               # a year back falls inside the 60 recent weeks
    (900, {"years": 0}, 0),
])
def test_backtest_years_leaves_out_windows_the_history_cannot_hold(days, backtest, kept):
    spec = daily_spec(**backtest)
    history, _ = daily_history(days, spec)
    recent = min(spec.windows, usable_windows(history, spec))
    assert len(backtest_folds(history, spec, recent)) == recent + kept


@pytest.mark.parametrize("backtest, message", [
    ({"years": -1}, "'backtest.years' must be >= 0 (years back), got -1"),
    ({"years": True}, "'backtest.years' must be an integer, got True (bool)"),
])
def test_backtest_years_is_checked(backtest, message):
    from engine.config import ConfigError
    with pytest.raises(ConfigError, match=re.escape(message)):
        daily_spec(**backtest)
    with pytest.raises(ConfigError, match="'backtest.years' must be 0 with global_nn among the models"):
        parse_config({"name": "t", "source": {"kind": "synthetic"}, "series": {"freq": "D"},
                      "backtest": {"years": 1}, "models": ["seasonal_naive", "global_nn"]})


def test_imputed_values_are_not_scored_and_a_window_of_them_only_is_left_out():
    """Gold fills a missing stretch from the same hours a week before (`is_imputed`): seasonal naive
    reproduces those values exactly, and would win every backtest scored on them."""
    spec = dataclasses.replace(spec_for(["seasonal_naive", "theta"]), windows=3)
    rng = np.random.default_rng(5)
    n = 24 * 28
    y = 300 + 50 * np.sin(np.arange(n) * 2 * np.pi / 24) + np.cumsum(rng.normal(0, 4, n))
    rows = entity("e", y)
    rows["is_imputed"] = False
    gap = slice(n - 24 - 12, n)             # half of the second window and all of the last
    rows.loc[rows.index[gap], "y"] = y[n - 24 - 12 - 168:n - 168]
    rows.loc[rows.index[gap], "is_imputed"] = True

    result = train_entity(rows, spec)
    records = json.loads(result["backtests"].iloc[0])
    naive = [r for r in records if r["candidate"] == "seasonal_naive"]
    assert result["windows"].iloc[0] == 2 and [r["window"] for r in naive] == [0, 1]   # the all-imputed one is out
    assert all(r["mae"] > 0 for r in naive)     # scored on observed hours only: no perfect copy
    history, future, _ = prepare(rows, spec)
    folds = backtest_folds(history, spec, 3, future.attrs["scenario"], prepare_scored(rows, spec)[3])
    assert [f.window for f in folds] == [0, 1] and folds[0].observed is None and folds[1].observed.sum() == 12
    everything = rows.assign(is_imputed=True)        # nothing observed anywhere: scored as it is
    assert len(backtest_folds(history, spec, 3, (), prepare_scored(everything, spec)[3])) == 3


def test_a_repeated_stamp_is_no_reason_to_fail_finding_the_unobserved_hours():
    """`unobserved` takes the history's span as `prepare` does, not by looking stamps up (which
    needs them unique)."""
    spec = spec_for(["seasonal_naive"])
    rows = entity("e", 100 + 10 * np.sin(np.arange(24 * 28) / 3))
    rows = pd.concat([rows, rows.iloc[[5]]], ignore_index=True)
    history, _, _ = prepare(rows, spec)
    assert len(prepare_scored(rows, spec)[3]) == len(history) and not prepare_scored(rows, spec)[3].any()
    assert train_entity(rows, spec)["status"].iloc[0] == "ok"
