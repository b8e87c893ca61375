"""Backtest refits (`backtest.refit`): which windows fit afresh and which re-run the last fit."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine.config import parse_config
from engine.training.backtest import _fold_model, backtest_candidate, backtest_folds
from engine.training.history import prepare
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
