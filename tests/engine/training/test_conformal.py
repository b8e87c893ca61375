"""Conformal intervals: widths from the champion's backtest errors, scored on held-out windows,
published and served alike."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.models import load_model
from engine.training import conformal
from engine.training.entity import forecast_frame, train_entity
from tests.conftest import small_config
from tests.engine.training.test_entity import entity, spec_for


def test_widths_pool_neighbouring_steps_and_take_the_conformal_rank():
    errors = np.tile(np.arange(1.0, 11.0), (3, 1))          # 3 windows x 10 steps, |error| = step + 1
    half = conformal.widths(errors, (50, 90))
    # Ten steps hold 30 errors, fewer than MIN_POOL: every step pools all of them.
    assert np.allclose(half[90], half[90][0]) and half[90][0] == np.sort(errors.ravel())[int(np.ceil(31 * 0.9)) - 1]
    long = np.abs(np.random.default_rng(0).normal(0, 1, (3, 400))) * np.linspace(1, 3, 400)
    half = conformal.widths(long, (80,))[80]
    assert half[-1] > 2 * half[0]                             # wider where the errors are


def test_held_out_scores_count_only_the_observed_steps_as_the_backtests_do():
    rng = np.random.default_rng(5)
    actual, mean = rng.normal(0, 1, (4, 48)), np.zeros((4, 48))
    actual[2, :6] = 50.0                         # an imputed stretch the history filled, far off
    observed = [None, None, np.r_[np.zeros(6, bool), np.ones(42, bool)], None]
    kept = conformal.held_out_scores(actual, mean, np.ones(4), (80,), None, observed)
    every = conformal.held_out_scores(actual, mean, np.ones(4), (80,), None)
    bands = conformal.held_out_bands(actual, mean, (80,), None)[2].bounds[80]
    inside = (actual[2] >= bands[0]) & (actual[2] <= bands[1])
    # Only window 2's figure changes: its share of the observed steps instead of all of them.
    assert not inside[:6].any()
    assert kept["coverage_80"] - every["coverage_80"] == pytest.approx((inside[6:].mean() - inside.mean()) / 4)
    assert kept["pinball"] < every["pinball"]


def test_a_misspecified_model_gets_calibrated_bands_that_travel_with_it():
    """Noise that is quiet at night and loud by day: ETS's bands of one width miss by day,
    conformal bands widen where the errors are."""
    t = np.arange(24 * 35)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, len(t)) * (2 + 20 * (np.sin(2 * np.pi * t / 24) > 0.5))
    rows = entity("feeder", 500 + 60 * np.sin(2 * np.pi * t / 24) + noise)
    base = dataclasses.replace(spec_for(["ets"], levels=[80, 95]), windows=6)
    calibrated = dataclasses.replace(base, intervals="conformal")
    own, conf = train_entity(rows, base).iloc[0], train_entity(rows, calibrated).iloc[0]
    own_scores, conf_scores = json.loads(own["scores"]), json.loads(conf["scores"])
    assert conf_scores["intervals"] == "conformal" and "intervals" not in own_scores
    # Scored on held-out windows: closer to nominal at 95%, within 5 points at both, sharper loss.
    assert abs(conf_scores["coverage_95"] - 0.95) < abs(own_scores["coverage_95"] - 0.95)
    assert abs(conf_scores["coverage_80"] - 0.80) < 0.05 and abs(conf_scores["coverage_95"] - 0.95) < 0.05
    assert conf_scores["pinball"] < 0.9 * own_scores["pinball"]
    # The published bands are the mean +- the widths, and the stored model serves the same.
    model = load_model(conf["model"])
    published = forecast_frame(conf)
    half = np.asarray(model.intervals_["95"])
    np.testing.assert_allclose(published["yhat_upper_95"] - published["yhat"], half[:len(published)], rtol=1e-9)
    future = pd.DataFrame({"ds": published["ds"]})
    np.testing.assert_allclose(model.forecast(future).bounds[95][0], published["yhat_lower_95"], rtol=1e-9)
    with pytest.raises(ConfigError, match="training.intervals.*model, conformal, auto"):
        small_config(training={"intervals": "bootstrap"})


def test_auto_takes_conformal_bands_only_where_they_score_better_on_held_out_windows():
    t = np.arange(24 * 35)
    rng = np.random.default_rng(3)
    loud_by_day = rng.normal(0, 1, len(t)) * (2 + 20 * (np.sin(2 * np.pi * t / 24) > 0.5))
    gaussian = np.random.default_rng(0).normal(0, 10, len(t))     # what ETS assumes: its own bands win
    spec = dataclasses.replace(spec_for(["ets"], levels=[80, 95]), windows=6)
    for noise, expected in ((loud_by_day, "conformal"), (gaussian, "model")):
        rows = entity("feeder", 500 + 60 * np.sin(2 * np.pi * t / 24) + noise)
        auto = train_entity(rows, dataclasses.replace(spec, intervals="auto")).iloc[0]
        assert json.loads(auto["scores"])["intervals"] == expected
        chosen = train_entity(rows, dataclasses.replace(spec, intervals=expected)).iloc[0]
        assert auto["forecast"] == chosen["forecast"]          # exactly the bands of the mode it chose
        assert (load_model(auto["model"]).intervals_ is None) == (expected == "model")
