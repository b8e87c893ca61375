"""Backtest metrics: the pinball loss of the quantiles, interval coverage, and a calibrated panel."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.models import Forecast
from engine.training.entity import train_entity
from engine.training.metrics import quantile_paths, window_metrics, windows_metrics
from tests.conftest import small_config
from tests.engine.training.test_entity import entity, spec_for


def test_windows_scored_together_get_each_windows_own_figures_to_the_last_bit():
    """A panel's windows in one pass (engine.training.panel) against each window alone, the
    figures as written by hand for one of them."""
    rng = np.random.default_rng(4)
    actual = rng.normal(100, 20, (9, 24)) * np.logspace(-3, 5, 9)[:, None]
    forecasts = []
    for row in actual:
        mean = row + rng.normal(0, 0.1 * np.abs(row).mean(), 24)
        spread = np.abs(row).mean() * np.array([0.1, 0.3])
        forecasts.append(Forecast(mean, {80: (mean - spread[0], mean + spread[0]),
                                         95: (mean - spread[1], mean + spread[1])}))
    scale = rng.uniform(0.5, 3, 9)
    together = windows_metrics(actual, forecasts, scale)
    assert together == [window_metrics(actual[i], forecasts[i], scale[i]) for i in range(9)]
    error = actual[2] - forecasts[2].mean
    assert together[2]["rmse"] == pytest.approx(np.sqrt(np.mean(error ** 2)))
    assert together[2]["mase"] == pytest.approx(np.mean(np.abs(error)) / scale[2])
    lower, upper = forecasts[2].bounds[80]
    assert together[2]["coverage_80"] == pytest.approx(np.mean((actual[2] >= lower) & (actual[2] <= upper)))


def test_pinball_loss_averages_the_median_and_each_bound_scaled_like_mase():
    actual = np.array([1.0, 2.0])
    forecast = Forecast(np.array([1.0, 1.0]), {50: (np.array([0.0, 0.0]), np.array([2.0, 2.0]))})
    assert [q for q, _ in quantile_paths(forecast)] == [0.5, 0.25, 0.75]
    # q=0.5: (0 + 0.5)/2; q=0.25 at 0: (0.25 + 0.5)/2; q=0.75 at 2: (0.25 + 0)/2 -> mean 0.25, / scale 0.5
    out = window_metrics(actual, forecast, scale=0.5)
    assert out["pinball"] == pytest.approx(0.5)
    assert out["coverage_50"] == 1.0 and out["mae"] == 0.5
    # A sharper interval that still covers scores better; one that misses scores worse.
    sharp = Forecast(forecast.mean, {50: (np.array([0.9, 1.0]), np.array([1.1, 2.0]))})
    wrong = Forecast(forecast.mean, {50: (np.array([-5.0, -5.0]), np.array([0.0, 0.0]))})
    scores = [window_metrics(actual, f, 0.5)["pinball"] for f in (sharp, forecast, wrong)]
    assert scores[0] < scores[1] < scores[2]


def test_pinball_selects_champions_and_lands_in_the_backtests():
    spec = spec_for(["seasonal_naive", "theta", "ets"], levels=[50, 80, 95])
    spec = dataclasses.replace(spec, metric="pinball")
    rng = np.random.default_rng(2)
    t = np.arange(24 * 28)
    row = train_entity(entity("e", 300 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 8, len(t))), spec).iloc[0]
    metrics = json.loads(row["metrics"])
    assert row["champion"] == min(("seasonal_naive", "theta", "ets"), key=lambda m: metrics[m]["pinball"])
    assert all(0 < metrics[m]["pinball"] < metrics[m]["mase"] for m in metrics)
    assert {"coverage_50", "coverage_80", "coverage_95"} <= set(json.loads(row["scores"]))
    with pytest.raises(ConfigError, match="backtest.metric.*pinball"):
        small_config(backtest={"metric": "crps"})


def test_a_gaussian_panel_is_covered_close_to_nominal():
    """White noise around a daily cycle: a model whose intervals are right covers each level's share."""
    spec = spec_for(["ets"], levels=[50, 80, 95])
    spec = dataclasses.replace(spec, windows=3)
    t = np.arange(24 * 28)
    scores = []
    for seed in range(24):
        y = 500 + 60 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(seed).normal(0, 10, len(t))
        row = train_entity(entity(f"e{seed}", y), spec).iloc[0]
        assert row["status"] == "ok"
        scores.append(json.loads(row["scores"]))
    coverage = pd.DataFrame(scores)[["coverage_50", "coverage_80", "coverage_95"]].mean()
    np.testing.assert_allclose(coverage.to_numpy(), [0.50, 0.80, 0.95], atol=0.05)
