"""The pure per-entity function: selection, fallbacks, fault isolation, bad input as data."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from engine.config import parse_config
from engine.models import make_model
from engine.training.entity import RESULT_COLUMNS, TrainSpec, forecast_frame, train_entity
from engine.training.job import TrainingFailed, _check_failures


def spec_for(models, **training) -> TrainSpec:
    config = parse_config({"name": "t", "source": {"kind": "synthetic", "exogenous": ["temperature"]},
                           "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
                           "backtest": {"windows": 2, "step": 24, "metric": "mae"}, "models": models,
                           "training": {"max_history": 24 * 28, **training}})
    return TrainSpec.from_config(config)


def entity(name: str, y, temperature=None) -> pd.DataFrame:
    y = np.asarray(y, dtype="float64")
    ds = pd.date_range("2024-01-01", periods=len(y), freq="h", tz="UTC")
    temp = 60 + 10 * np.sin(np.arange(len(y)) / 5) if temperature is None else temperature
    return pd.DataFrame({"entity_id": name, "ds": ds, "y": y, "temperature": temp})


def weekly_pattern(weeks: int, seed: int = 0) -> np.ndarray:
    week = np.random.default_rng(seed).uniform(100, 200, 168)
    return np.tile(week, weeks)


def result(rows: pd.DataFrame, spec: TrainSpec) -> pd.Series:
    out = train_entity(rows, spec)
    assert list(out.columns) == RESULT_COLUMNS and len(out) == 1
    return out.iloc[0]


def test_champion_is_the_candidate_with_the_best_backtest_metric():
    spec = spec_for(["seasonal_naive", "theta"])
    periodic = result(entity("periodic", weekly_pattern(4)), spec)
    metrics = json.loads(periodic["metrics"])
    assert periodic["status"] == "ok" and periodic["champion"] == "seasonal_naive"
    assert metrics["seasonal_naive"]["mae"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["theta"]["mae"] > 1.0

    t = np.arange(24 * 28)
    trending = result(entity("trend", 100 + 2.0 * t + 5 * np.sin(2 * np.pi * t / 24)), spec)
    metrics = json.loads(trending["metrics"])
    assert trending["champion"] == "theta" and metrics["theta"]["mae"] < metrics["seasonal_naive"]["mae"]
    backtests = json.loads(trending["backtests"])
    assert {(b["candidate"], b["window"]) for b in backtests} == {(m, w) for m in ("seasonal_naive", "theta")
                                                                  for w in (0, 1)}
    forecast = forecast_frame(trending)
    assert len(forecast) == 24 and forecast["ds"].iloc[0] == pd.Timestamp("2024-01-29", tz="UTC")
    assert {"yhat_lower_80", "yhat_upper_95"} <= set(forecast.columns)


def test_ensemble_averages_the_best_candidates_and_can_win():
    spec = spec_for(["seasonal_naive", "theta", "ets", "ensemble"], ensemble_size=2)
    rng = np.random.default_rng(1)
    t = np.arange(24 * 28)
    row = result(entity("mix", 300 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 8, len(t))), spec)
    metrics = json.loads(row["metrics"])
    members = metrics["ensemble"]["members"]
    ranked = sorted(("seasonal_naive", "theta", "ets"), key=lambda m: metrics[m]["mae"])
    assert members == ranked[:2]
    best = min(metrics, key=lambda m: metrics[m]["mae"])
    assert row["champion"] == best


def test_combine_makes_the_mean_of_the_best_candidates_the_champion():
    spec = spec_for(["seasonal_naive", "theta", "ets"], ensemble_size=2)
    spec = dataclasses.replace(spec, select="combine")
    rng = np.random.default_rng(1)
    t = np.arange(24 * 28)
    row = result(entity("mix", 300 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 8, len(t))), spec)
    metrics = json.loads(row["metrics"])
    best_two = sorted(("seasonal_naive", "theta", "ets"), key=lambda m: metrics[m]["mae"])[:2]
    assert row["champion"] == "ensemble" and metrics["ensemble"]["members"] == best_two
    assert json.loads(row["params"])["members"] == best_two


@pytest.mark.parametrize("case, rows, status, reason", [
    ("all_nan", entity("all_nan", np.full(24 * 28, np.nan)), "failed", "no fallback possible"),
    ("three_points", entity("three_points", [5.0, 6.0, 7.0]), "fallback", "too short: 3 observations"),
    ("constant", entity("constant", np.full(24 * 28, 42.0)), "fallback", "constant series"),
])
def test_unmodellable_series_end_as_data(case, rows, status, reason):
    row = result(rows, spec_for(["seasonal_naive", "theta"]))
    assert row["status"] == status and row["reason"].startswith(reason)
    if status == "fallback":
        assert row["champion"] == "seasonal_naive"
        forecast = forecast_frame(row)
        assert len(forecast) == 24 and np.isfinite(forecast["yhat"]).all()
        if case == "constant":
            assert (forecast["yhat"] == 42.0).all()
    else:
        assert row["error"].startswith("EmptySeries") and forecast_frame(row) is None


def test_a_series_too_short_to_backtest_gets_the_mean_of_the_candidates_that_fit():
    spec = spec_for(["seasonal_naive", "ets", "theta"])
    y = 100 + 5 * np.sin(2 * np.pi * np.arange(40) / 24) + np.random.default_rng(4).normal(0, 1, 40)
    row = result(entity("new_meter", y), spec)       # one backtest window needs 2 x 24 + 24 = 72 steps
    assert row["status"] == "fallback" and row["champion"] == "ensemble" and row["windows"] == 0
    assert row["reason"] == "too short: 40 observations, one backtest window needs 72; ensemble of ets, theta, " \
                            "not backtested"
    members = [make_model(m, spec.model).fit(entity("new_meter", y)) for m in ("ets", "theta")]
    future = pd.DataFrame({"ds": pd.date_range("2024-01-02 16:00", periods=24, freq="h", tz="UTC")})
    expected = np.mean([m.forecast(future).mean for m in members], axis=0)
    np.testing.assert_allclose(forecast_frame(row)["yhat"].to_numpy(), expected, rtol=1e-9)


def test_gaps_outliers_and_a_missing_regressor_are_handled_per_entity():
    spec = spec_for(["seasonal_naive", "arima"])
    y = weekly_pattern(5) + np.random.default_rng(2).normal(0, 3, 24 * 35)
    gap = y.copy()
    gap[300:300 + 336] = np.nan
    outliers = y.copy()
    outliers[[100, 400, 700]] = [1e6, -1e6, 5e5]
    no_temperature = entity("no_temp", y, temperature=np.full(len(y), np.nan))

    gap_row = result(entity("gap", gap), spec)
    assert gap_row["status"] == "ok" and "336 missing target values interpolated" in gap_row["notes"]
    assert result(entity("outliers", outliers), spec)["status"] == "ok"
    no_temp = result(no_temperature, spec)
    assert no_temp["status"] == "ok" and "'temperature' has no values for this entity" in no_temp["notes"]
    assert json.loads(no_temp["params"]).get("exogenous", []) == [] or no_temp["champion"] != "arima"
    # The regressor-using candidate itself, forced to win, fits without the empty column.
    arima_only = result(no_temperature, spec_for(["arima"]))
    assert arima_only["champion"] == "arima" and json.loads(arima_only["params"])["exogenous"] == []


def test_a_failing_candidate_is_recorded_and_the_others_still_compete(monkeypatch):
    from engine.models.theta import ThetaModel

    def broken(self, history, y):
        raise FloatingPointError("simulated numerical failure")
    monkeypatch.setattr(ThetaModel, "_fit", broken)
    rows = entity("e", weekly_pattern(4))
    row = result(rows, spec_for(["theta", "seasonal_naive"]))
    assert row["status"] == "ok" and row["champion"] == "seasonal_naive"
    assert "theta: FloatingPointError: simulated numerical failure" in row["notes"]

    alone = result(rows, spec_for(["theta"]))
    assert alone["status"] == "failed" and alone["champion"] == "seasonal_naive"
    assert "every candidate failed" in alone["error"] and "FloatingPointError" in alone["error"]
    assert len(forecast_frame(alone)) == 24

    with pytest.raises(FloatingPointError):
        train_entity(rows, spec_for(["theta"], fail_fast=True))


def test_future_regressor_values_come_from_gold_rows_ahead_or_persistence():
    spec = spec_for(["arima"])
    rows = entity("e", weekly_pattern(4))
    ahead = rows.tail(24).copy()
    ahead["y"] = np.nan
    ahead["ds"] = ahead["ds"] + pd.Timedelta(hours=24)
    ahead["temperature"] = 99.0
    with_forecast_weather = result(pd.concat([rows, ahead]), spec)
    persisted = result(rows, spec)
    assert with_forecast_weather["forecast_origin"] == persisted["forecast_origin"]
    assert not np.allclose(forecast_frame(with_forecast_weather)["yhat"], forecast_frame(persisted)["yhat"])


def test_failure_rate_over_the_limit_names_the_entities():
    summary = pd.DataFrame({"entity_id": ["a", "b", "c", "d"], "status": ["ok", "failed", "ok", "fallback"],
                            "error": [None, "ValueError: bad data", None, None]})
    _check_failures(summary, max_rate=0.25)
    with pytest.raises(TrainingFailed, match=r"1 of 4 entities failed \(25.0%\).*max_failure_rate 20.0%"
                                             r"(.|\n)*b: ValueError: bad data"):
        _check_failures(summary, max_rate=0.2)


def test_same_rows_in_any_order_give_the_same_result():
    spec = spec_for(["seasonal_naive", "theta", "ensemble"])
    rows = entity("e", weekly_pattern(4) + np.random.default_rng(5).normal(0, 2, 24 * 28))
    first = train_entity(rows, spec).drop(columns="fit_seconds")
    shuffled = train_entity(rows.sample(frac=1.0, random_state=1), spec).drop(columns="fit_seconds")
    pd.testing.assert_frame_equal(first, shuffled)


def test_future_weather_is_the_same_dates_in_earlier_years_once_history_spans_a_year():
    import dataclasses

    from engine.training.history import prepare
    spec = spec_for(["tempreg", "theta"], weather="normal")
    assert spec.max_history == 26280 and spec_for(["theta"]).max_history == 24 * 28
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, exogenous=("temperature", "is_holiday")))
    hours = 24 * 800
    ds = pd.date_range("2022-01-01", periods=hours, freq="h", tz="UTC")
    seasonal = 60 + 20 * np.sin(2 * np.pi * ds.dayofyear.to_numpy() / 365) + 5 * np.sin(2 * np.pi * ds.hour / 24)
    rows = entity("e", 100 + seasonal, temperature=seasonal).assign(is_holiday=(ds.dayofweek == 6).astype(float))
    history, future, _ = prepare(rows, spec)
    first = future["ds"].iloc[0]
    same_hours = [rows.set_index("ds")["temperature"].get(first - pd.Timedelta(days=365 * k - d))
                  for k in (1, 2) for d in range(-7, 8)]
    assert future["temperature"].iloc[0] == pytest.approx(np.nanmean([v for v in same_hours if v is not None]))
    # A 0/1 calendar flag is not averaged: it repeats the last week.
    assert set(future["is_holiday"]) <= {0.0, 1.0}

    short = rows.tail(24 * 200)
    _, persisted, _ = prepare(short, spec)
    np.testing.assert_allclose(persisted["temperature"].to_numpy(), short["temperature"].to_numpy()[-168:][:24])


def departures(days: int, persistence: float, seed: int = 0):
    """Hourly temperatures of `days` days: the same seasons every year plus a departure whose daily
    mean keeps `persistence` of itself from one day to the next (an hourly AR(1))."""
    ds = pd.date_range("2021-01-01", periods=24 * days, freq="h", tz="UTC")
    rng = np.random.default_rng(seed)
    hourly = persistence ** (1 / 24)
    departure = np.zeros(len(ds))
    noise = rng.normal(0, 1.5, len(ds))
    for t in range(1, len(ds)):
        departure[t] = hourly * departure[t - 1] + noise[t]
    normal = 60 + 20 * np.sin(2 * np.pi * ds.dayofyear.to_numpy() / 365) + 5 * np.sin(2 * np.pi * ds.hour / 24)
    return ds, np.asarray(normal) + departure


def test_future_weather_keeps_what_persists_of_the_last_days_departure_from_normal():
    import dataclasses

    from engine.training.history import prepare, same_dates_earlier_years
    ds, temperature = departures(3 * 365, persistence=0.7)
    rows = entity("e", 100 + temperature, temperature=temperature)
    spec = spec_for(["tempreg"], weather="persisted")
    spec = dataclasses.replace(spec, horizon=168)
    history, future, _ = prepare(rows, spec)
    _, normal, _ = prepare(rows, dataclasses.replace(spec, weather="normal"))
    stamps = pd.DatetimeIndex(history["ds"])
    values = history["temperature"].to_numpy()[None]
    expected = same_dates_earlier_years(values, stamps, pd.DatetimeIndex(future["ds"]))[0]
    assert np.array_equal(normal["temperature"].to_numpy(), expected)
    last_day = np.mean(values[0, -24:] - same_dates_earlier_years(values, stamps, stamps[-24:])[0])
    kept = (future["temperature"] - normal["temperature"]).to_numpy() / last_day
    # What the history says persists: nearly all of it an hour ahead, about 0.7 a day ahead, and
    # much less a week ahead; never more than the departure, never of the other sign.
    assert abs(last_day) > 1.0
    assert 0.8 < kept[0] <= 1.0 and 0.45 < kept[23] < 0.9 and kept[-1] < 0.35
    assert (kept >= 0).all() and (kept <= 1).all()
    assert kept[:24].mean() > kept[24:48].mean() > kept[144:].mean()


def test_a_persisted_departure_needs_a_year_and_enough_origins_and_is_the_same_in_a_panel():
    from engine.training.history import MIN_ORIGINS, persisted_departure
    ds, warm = departures(2 * 365, persistence=0.8, seed=1)
    _, mild = departures(2 * 365, persistence=0.5, seed=2)
    stamps = pd.DatetimeIndex(ds)
    panel = persisted_departure(np.stack([warm, mild, warm + 3.0]), stamps, 168, 24)
    for row, values in enumerate((warm, mild, warm + 3.0)):
        assert np.array_equal(panel[row], persisted_departure(values[None], stamps, 168, 24)[0])
    assert np.any(panel != 0)
    # A year and a week of history is only where departures begin: fewer than MIN_ORIGINS origins.
    short = 24 * (365 + 7 + MIN_ORIGINS // 2) + 168
    assert not persisted_departure(warm[None, :short], stamps[:short], 168, 24).any()


def test_training_weather_must_be_a_known_scenario():
    from engine.errors import ConfigError
    with pytest.raises(ConfigError, match=r"training.weather.*persisted, normal.*'forecast'"):
        spec_for(["tempreg"], weather="forecast")
