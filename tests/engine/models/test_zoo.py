"""The model zoo: forecasts with nested intervals, and exact serialization round trips."""
from __future__ import annotations

import dataclasses
import functools
import json
import zlib

import numpy as np
import pandas as pd
import pytest

from engine.models import MODEL_CLASSES, EnsembleModel, ModelError, ModelSpec, load_model, make_model
from tests.conftest import HOURLY_SPEC, hourly


def build(name: str, spec: ModelSpec = HOURLY_SPEC):
    if name == "ensemble":
        return EnsembleModel(spec, ["theta", "seasonal_naive"], make_model)
    if name == "global_nn":
        return make_model(name, spec, trained={"global_nn": small_network()})
    return make_model(name, spec)


@functools.lru_cache(maxsize=1)
def small_network() -> dict:
    """A global network trained in this process on a few series like `hourly`'s (48 steps ahead)."""
    from dataclasses import asdict

    from gpu.global_nn import NetShape, encode_weights, panel_samples, train_ranks
    shape = NetShape(lookback=168, horizon=48, exogenous=("temperature",), hidden=32)
    panel = pd.concat([hourly(24 * 28, seed).assign(entity_id=f"e{seed}") for seed in range(1, 5)])
    x, y, center, scale = panel_samples(panel, shape, step=4)
    out = train_ranks(x, y, asdict(shape), dict(epochs=40, batch_size=64))
    return {"shape": asdict(shape), "weights": encode_weights(out["weights"]), "exog_center": center.tolist(),
            "exog_scale": scale.tolist(), "digest": out["digests"][0], "run_id": "test"}


INTERMITTENT = ("croston", "tsb", "adida", "imapa")     # flat demand rates: judged on intermittent data


def intermittent(n: int, seed: int = 3) -> pd.DataFrame:
    """A meter that reads zero most hours: demand on about a quarter of them, mean rate 2.5."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.25, rng.gamma(2.0, 5.0, n), 0.0)
    return pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"), "y": y})


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_model_forecasts_with_nested_intervals_and_round_trips(name):
    frame = intermittent(24 * 21 + 48) if name in INTERMITTENT else hourly(24 * 21 + 48)
    history, future = frame.iloc[:-48], frame.iloc[-48:].drop(columns="y")
    model = build(name).fit(history)
    forecast = model.forecast(future)
    assert forecast.mean.shape == (48,) and np.isfinite(forecast.mean).all()
    lo80, hi80 = forecast.bounds[80]
    lo95, hi95 = forecast.bounds[95]
    assert (lo95 <= lo80 + 1e-9).all() and (lo80 <= forecast.mean + 1e-9).all()
    assert (forecast.mean <= hi80 + 1e-9).all() and (hi80 <= hi95 + 1e-9).all()
    if name in INTERMITTENT:
        # The demand rate within 30% of the true 2.5 per hour, and never a negative bound.
        assert abs(forecast.mean.mean() - 2.5) < 0.75 and (lo95 >= 0).all()
    else:
        # A sensible forecast of a strongly seasonal series: within 10% of the actuals on average.
        actual = frame["y"].iloc[-48:].to_numpy()
        assert np.mean(np.abs(forecast.mean - actual)) < 0.1 * actual.mean()

    blob = model.to_bytes()
    envelope = json.loads(zlib.decompress(blob))
    assert envelope["format"] == "manymodels-model" and envelope["version"] == 2 and envelope["model"] == name
    assert envelope["implementation"] == MODEL_CLASSES[name].implementation
    restored = load_model(blob)
    again = restored.forecast(future)
    np.testing.assert_allclose(again.mean, forecast.mean, rtol=1e-9)
    # statsforecast's Theta bands come from float32 samples: equal to float32's precision.
    np.testing.assert_allclose(again.bounds[95][1], forecast.bounds[95][1], rtol=1e-6)
    assert restored.params() == model.params()


def solar(n: int, seed: int = 5) -> pd.DataFrame:
    """Rooftop solar behind a feeder meter: nothing at night, a noisy bell by day; never negative."""
    frame = hourly(n, seed)
    hour = frame["ds"].dt.hour.to_numpy()
    day = np.clip(np.sin(np.pi * (hour - 6) / 12), 0, None)
    noise = np.random.default_rng(seed).normal(0, 8, n)
    return frame.assign(y=np.where(day > 0, np.clip(80 * day + noise, 0, None), 0.0))


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_a_nonnegative_series_gets_no_value_below_zero_and_keeps_it_after_a_round_trip(name):
    frame = intermittent(24 * 21 + 48) if name in INTERMITTENT else solar(24 * 21 + 48)
    history, future = frame.iloc[:-48], frame.iloc[-48:].drop(columns="y")
    free = build(name, dataclasses.replace(HOURLY_SPEC, nonnegative=False)).fit(history).forecast(future)
    for setting in (True, None):     # declared, or inferred from a history that never went below zero
        model = build(name, dataclasses.replace(HOURLY_SPEC, nonnegative=setting)).fit(history)
        assert model.floor_ == 0.0 and model.floor_inferred == (setting is None)
        forecast = model.forecast(future)
        # Exactly the unclipped forecast, with what went below zero raised to zero (an ensemble:
        # the mean of its floored members, as the backtest combined them).
        expected = EnsembleModel.combine([m.forecast(future) for m in model.members_]) if name == "ensemble" else free
        np.testing.assert_allclose(forecast.mean, np.maximum(expected.mean, 0), rtol=1e-9, atol=1e-12)
        paths = [forecast.bounds[95][0], forecast.bounds[80][0], forecast.mean, forecast.bounds[80][1],
                 forecast.bounds[95][1]]
        assert all((p >= 0).all() for p in paths)
        assert all((a <= b + 1e-9).all() for a, b in zip(paths, paths[1:]))
        for level in (80, 95):
            np.testing.assert_allclose(forecast.bounds[level][0], np.maximum(expected.bounds[level][0], 0),
                                       atol=1e-9)
        again = load_model(model.to_bytes()).forecast(future)
        np.testing.assert_allclose(again.mean, forecast.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(again.bounds[95][0], forecast.bounds[95][0], rtol=1e-6, atol=1e-9)
    # A history that went below zero once is not floored unless the config says so.
    dipped = history.assign(y=history["y"].where(history.index != 5, -1.0))
    assert build(name, dataclasses.replace(HOURLY_SPEC, nonnegative=None)).fit(dipped).floor_ is None


@pytest.mark.parametrize("name", ["ets", "arima", "theta", "mstl"])
def test_models_stored_by_the_statsmodels_implementation_still_load_and_serve(name):
    frame = hourly(24 * 21 + 48)
    history, future = frame.iloc[:-48], frame.iloc[-48:].drop(columns="y")
    old = make_model(f"{name}_statsmodels", HOURLY_SPEC).fit(history)
    # What manymodels wrote before statsforecast: format version 1, no implementation, the plain name.
    envelope = json.loads(zlib.decompress(old.to_bytes()))
    envelope.update(version=1, model=name)
    del envelope["implementation"]
    restored = load_model(zlib.compress(json.dumps(envelope).encode()))
    assert restored.name == f"{name}_statsmodels"
    np.testing.assert_allclose(restored.forecast(future).mean, old.forecast(future).mean, rtol=1e-9)

    envelope.update(version=2, implementation=7)
    with pytest.raises(ModelError, match=f"{name} model was fitted by implementation 7.*retrain"):
        load_model(zlib.compress(json.dumps(envelope).encode()))


def test_arima_models_stored_by_the_joint_estimate_still_load_and_serve_and_the_two_steps_agree():
    frame = hourly(24 * 21 + 48)
    history, future = frame.iloc[:-48], frame.iloc[-48:].drop(columns="y")
    joint = make_model("arima_joint", HOURLY_SPEC).fit(history)
    envelope = json.loads(zlib.decompress(joint.to_bytes()))
    assert envelope["implementation"] == 2
    envelope["model"] = "arima"                 # what the joint implementation stored as `arima`
    restored = load_model(zlib.compress(json.dumps(envelope).encode()))
    assert restored.name == "arima_joint"
    np.testing.assert_allclose(restored.forecast(future).mean, joint.forecast(future).mean, rtol=1e-9)
    # The regression first, then its residuals' ARIMA: the same order, close forecasts.
    two_steps = make_model("arima", HOURLY_SPEC).fit(history)
    assert two_steps.order_ == joint.order_
    truth = frame["y"].to_numpy()[-48:]
    error = {m: np.sqrt(np.mean((m.forecast(future).mean - truth) ** 2)) for m in (two_steps, joint)}
    assert error[two_steps] < 1.1 * error[joint]


def test_seasonal_naive_repeats_the_last_week_and_widens_each_week():
    frame = hourly(24 * 14)
    model = make_model("seasonal_naive", HOURLY_SPEC).fit(frame)
    future = pd.DataFrame({"ds": pd.date_range(frame["ds"].iloc[-1], periods=337, freq="h")[1:]})
    forecast = model.forecast(future)
    last_week = frame["y"].to_numpy()[-168:]
    np.testing.assert_array_equal(forecast.mean, np.concatenate([last_week, last_week]))
    width = forecast.bounds[95][1] - forecast.bounds[95][0]
    assert width[200] == pytest.approx(width[0] * np.sqrt(2))


def test_model_fitted_with_a_regressor_needs_its_future_values():
    frame = hourly(24 * 21)
    model = make_model("arima", HOURLY_SPEC).fit(frame)
    future = pd.DataFrame({"ds": pd.date_range("2024-01-22", periods=24, freq="h", tz="UTC")})
    with pytest.raises(ModelError, match="arima: future rows lack values for exogenous column.*temperature"):
        model.forecast(future)


def test_corrupt_or_newer_model_bytes_are_refused_clearly():
    with pytest.raises(ModelError, match="not a serialized manymodels model"):
        load_model(b"not a model")
    newer = zlib.compress(json.dumps({"format": "manymodels-model", "version": 99, "model": "theta"}).encode())
    with pytest.raises(ModelError, match="newer manymodels"):
        load_model(newer)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelError, match="Unknown model: 'lstm'.*seasonal_naive"):
        make_model("lstm", HOURLY_SPEC)


def test_mstl_uses_only_the_seasons_the_history_can_resolve():
    frame = hourly(24 * 14)               # exactly two weekly cycles: too few for MSTL's 168 season
    model = make_model("mstl", HOURLY_SPEC).fit(frame)
    assert model.params()["periods"] == [24]
    future = pd.DataFrame({"ds": pd.date_range(frame["ds"].iloc[-1], periods=25, freq="h")[1:]})
    assert np.isfinite(model.forecast(future).mean).all()
    with pytest.raises(ModelError, match="mstl: needs more than two full cycles"):
        make_model("mstl", HOURLY_SPEC).fit(frame.head(40))


def test_tempreg_learns_a_u_shaped_temperature_response_and_needs_temperature():
    rng = np.random.default_rng(5)
    ds = pd.date_range("2022-01-01", periods=24 * 730, freq="h", tz="UTC")
    temperature = 60 + 25 * np.sin(2 * np.pi * (ds.dayofyear.to_numpy() - 100) / 365) + rng.normal(0, 5, len(ds))
    y = 1000 + 0.8 * (temperature - 62) ** 2 + 100 * (ds.hour.to_numpy() >= 8) + rng.normal(0, 10, len(ds))
    frame = pd.DataFrame({"ds": ds, "y": y, "temperature": temperature})
    history, future = frame.iloc[:-168], frame.iloc[-168:].drop(columns="y")
    future = future.assign(temperature=future["temperature"] + 15)   # a heat wave the history never had that week
    truth = 1000 + 0.8 * (future["temperature"] - 62) ** 2 + 100 * (future["ds"].dt.hour >= 8)
    tempreg = make_model("tempreg", HOURLY_SPEC).fit(history).forecast(future).mean
    naive = make_model("seasonal_naive", HOURLY_SPEC).fit(history).forecast(future).mean
    assert np.sqrt(np.mean((tempreg - truth) ** 2)) < 0.2 * np.sqrt(np.mean((naive - truth) ** 2))

    without = ModelSpec(freq="h", season_lengths=(24, 168), exogenous=())
    with pytest.raises(ModelError, match="tempreg: needs a 'temperature' exogenous column"):
        make_model("tempreg", without).fit(history)


def test_tempreg_carries_a_lingering_error_into_the_next_steps():
    """Load that temperature does not explain lingers (an AR(1) error, 0.97 an hour): with memory
    each origin's next day starts from the latest error and beats the same fit without it, the
    refreshed model taking each new history's latest error; a model stored before memory existed
    forecasts as memory 0 does."""
    rng = np.random.default_rng(11)
    n = 24 * 400
    ds = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    temperature = 60 + 20 * np.sin(2 * np.pi * ds.dayofyear.to_numpy() / 365) + rng.normal(0, 3, n)
    shocks, lingering = rng.normal(0, 20, n), np.zeros(n)
    for t in range(1, n):
        lingering[t] = 0.97 * lingering[t - 1] + shocks[t]
    y = 1000 + 0.8 * (temperature - 62) ** 2 + lingering
    frame = pd.DataFrame({"ds": ds, "y": y, "temperature": temperature})
    first = n - 24 * 30
    models = {memory: make_model("tempreg", HOURLY_SPEC, {"memory": memory}).fit(frame.iloc[:first])
              for memory in (0, 24)}
    errors = {memory: [] for memory in models}
    for origin in range(first, n - 24, 24 * 2):
        future = frame.iloc[origin:origin + 24].drop(columns="y")
        for memory, model in models.items():
            forecast = model.refreshed(frame.iloc[:origin]).forecast(future).mean
            errors[memory].append(np.mean((forecast - y[origin:origin + 24]) ** 2))
    assert np.mean(errors[24]) < 0.6 * np.mean(errors[0])

    envelope = json.loads(zlib.decompress(models[24].to_bytes()))
    for key in ("persistence", "recent"):
        del envelope["state"][key]
    stored_before = load_model(zlib.compress(json.dumps(envelope).encode()))
    future = frame.iloc[first:first + 48].drop(columns="y")
    np.testing.assert_allclose(stored_before.forecast(future).mean, models[0].forecast(future).mean)
    assert not np.allclose(models[24].forecast(future).mean, models[0].forecast(future).mean)


def test_tempreg_recency_effect_reads_the_days_before_and_the_historys_last_hours():
    """Load that answers yesterday's heat as well as today's (buildings store it): with `lag_days`
    the fit finds it and beats the same regression without; the first steps' lags read the
    history's last hours (the same forecast as a request that carries those hours itself), a
    refreshed model reads its new history's, a stored one forecasts the same, and a request that
    does not continue the history still gets a forecast."""
    rng = np.random.default_rng(21)
    n = 24 * 500
    ds = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    temperature = (60 + 20 * np.sin(2 * np.pi * ds.dayofyear.to_numpy() / 365)
                   + np.repeat(rng.normal(0, 6, n // 24), 24) + rng.normal(0, 2, n))
    yesterday = pd.Series(temperature, index=ds).rolling("24h").mean().shift(1).bfill().to_numpy()
    y = 1000 + 0.5 * (temperature - 62) ** 2 + 0.6 * (yesterday - 62) ** 2 + rng.normal(0, 10, n)
    frame = pd.DataFrame({"ds": ds, "y": y, "temperature": temperature})
    first = n - 24 * 28
    history, future = frame.iloc[:first], frame.iloc[first:first + 48].drop(columns="y")
    models = {days: make_model("tempreg", HOURLY_SPEC, {"lag_days": days, "lag_hours": 2}).fit(history)
              for days in (0, 1)}
    errors = {days: np.sqrt(np.mean((model.forecast(future).mean - y[first:first + 48]) ** 2))
              for days, model in models.items()}
    assert errors[1] < 0.5 * errors[0]

    lagged = models[1]
    with_tail = pd.concat([history.tail(30).drop(columns="y"), future], ignore_index=True)
    np.testing.assert_allclose(lagged.forecast(future).mean, lagged.forecast(with_tail).mean[-48:])
    later, ahead = frame.iloc[:first + 100], frame.iloc[first + 100:first + 148].drop(columns="y")
    refreshed = lagged.refreshed(later)
    np.testing.assert_allclose(refreshed.forecast(ahead).mean,
                               lagged.forecast(pd.concat([later.tail(30).drop(columns="y"), ahead])).mean[-48:])
    assert not np.allclose(refreshed.forecast(ahead).mean, lagged.forecast(ahead).mean)
    np.testing.assert_array_equal(load_model(refreshed.to_bytes()).forecast(ahead).mean,
                                  refreshed.forecast(ahead).mean)
    assert np.isfinite(lagged.forecast(frame.iloc[-24:].drop(columns="y")).mean).all()

    vanilla = make_model("tempreg", HOURLY_SPEC).fit(history)
    envelope = json.loads(zlib.decompress(vanilla.to_bytes()))     # stored before the recency effect
    for key in ("tail_ds", "tail_temp"):
        del envelope["state"][key]
    # Its hyperparameters as a later default with lags would resolve them: the state decides.
    envelope["hyper"].update(lag_days=1, lag_hours=2)
    stored_before = load_model(zlib.compress(json.dumps(envelope).encode()))
    assert stored_before.hyper["lag_days"] == stored_before.hyper["lag_hours"] == 0
    np.testing.assert_allclose(stored_before.forecast(future).mean, vanilla.forecast(future).mean)


def test_tempreg_bands_cover_a_forecast_made_with_normal_weather():
    """Weather that swings around its season by 8 degrees: a forecast given each hour's normal
    temperature misses by the swing, and the default bands allow for it; known_weather's do not."""
    rng = np.random.default_rng(8)
    ds = pd.date_range("2021-01-01", periods=24 * 365 * 3, freq="h", tz="UTC")
    season = 60 + 25 * np.sin(2 * np.pi * (ds.dayofyear.to_numpy() - 100) / 365)
    swing = np.repeat(rng.normal(0, 8, len(ds) // 24), 24)        # whole days hotter or colder than normal
    temperature = season + swing + rng.normal(0, 1, len(ds))
    y = 1000 + 0.8 * (temperature - 62) ** 2 + 100 * (ds.hour.to_numpy() >= 8) + rng.normal(0, 10, len(ds))
    frame = pd.DataFrame({"ds": ds, "y": y, "temperature": temperature})
    history, ahead = frame.iloc[:-24 * 28], frame.iloc[-24 * 28:]
    future = ahead.drop(columns="y").assign(temperature=season[-24 * 28:])       # normal weather
    coverage = {}
    for bands in ("normal_weather", "known_weather"):
        forecast = make_model("tempreg", HOURLY_SPEC, {"bands": bands}).fit(history).forecast(future)
        lower, upper = forecast.bounds[80]
        coverage[bands] = np.mean((ahead["y"].to_numpy() >= lower) & (ahead["y"].to_numpy() <= upper))
    assert abs(coverage["normal_weather"] - 0.80) < 0.08 and coverage["known_weather"] < 0.5


def test_short_memory_models_fit_only_the_last_max_history_steps():
    frame = hourly(24 * 60)
    spec = ModelSpec(freq="h", season_lengths=(24, 168), exogenous=("temperature",), max_history=24 * 21)
    future = hourly(24 * 61).iloc[-24:].drop(columns="y")
    whole = make_model("theta", spec).fit(frame).forecast(future).mean
    tail = make_model("theta", spec).fit(frame.tail(24 * 21)).forecast(future).mean
    np.testing.assert_allclose(whole, tail)


def test_statsforecast_loads_without_its_distributed_backends_and_stays_importable():
    import subprocess
    import sys
    # Fits and forecasts: statsforecast's interval samplers import more of it when first called.
    code = ("import sys; from engine.models import ModelSpec, make_model; from tests.conftest import hourly; "
            "history = hourly(24 * 14); future = hourly(24 * 15).tail(24); "
            "[make_model(m, ModelSpec(levels=(80, 95))).fit(history).forecast(future) "
            "for m in ('ets', 'theta', 'arima', 'ces', 'mstl', 'croston')]; "
            "assert 'statsforecast.ets' in sys.modules and 'fugue' not in sys.modules, 'backends imported'; "
            "import statsforecast; from statsforecast import StatsForecast; print(StatsForecast.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "StatsForecast", out.stderr[-2000:]


REFRESHABLE = sorted(name for name, cls in MODEL_CLASSES.items() if cls.refreshable)


def test_the_models_refreshed_between_backtest_refits_are_those_whose_fit_can_be_rerun():
    assert REFRESHABLE == ["arima", "ces", "ets", "tempreg", "theta"]


@pytest.mark.parametrize("name", REFRESHABLE)
def test_a_refreshed_model_keeps_its_parameters_and_forecasts_from_the_new_history(name):
    """Refreshed on its own history it is the fit itself; on a later history its states follow the
    new rows (a level shift) with the parameters unchanged, as statsforecast's `forward` does
    (arima: with its order unchanged and its coefficients estimated again)."""
    frame = hourly(24 * 28)
    frame.loc[frame.index[-48:], "y"] += 300.0          # the last two days jump
    early, late = frame.iloc[:-48], frame
    future = hourly(24 * 29).iloc[-24:].drop(columns="y")
    fitted = make_model(name, HOURLY_SPEC).fit(early)
    np.testing.assert_allclose(fitted.refreshed(early).forecast(future).mean, fitted.forecast(future).mean)
    refreshed = fitted.refreshed(late)
    if name == "tempreg":       # coefficients kept: its forecast needs only the calendar and temperature
        np.testing.assert_array_equal(refreshed.beta_, fitted.beta_)
        np.testing.assert_allclose(refreshed.forecast(future).mean, fitted.forecast(future).mean)
    else:
        if name == "arima":
            assert refreshed.order_ == fitted.order_ and refreshed.terms_ == fitted.terms_
            assert refreshed._estimates()["beta"].tolist() != fitted._estimates()["beta"].tolist()
        else:
            assert json.dumps(refreshed._state()["fit"]) == json.dumps(fitted._state()["fit"])
        level = refreshed.forecast(future).mean.mean() - fitted.forecast(future).mean.mean()
        assert level > 100.0, f"{name}: the refreshed forecast ignores the new rows ({level:.1f})"
        np.testing.assert_allclose(load_model(refreshed.to_bytes()).forecast(future).mean,
                                   refreshed.forecast(future).mean)


def test_models_that_cannot_be_refreshed_say_so():
    fitted = make_model("arima_joint", HOURLY_SPEC).fit(hourly(24 * 21))
    with pytest.raises(ModelError, match="arima_joint: only a fitted model whose parameters can be re-applied"):
        fitted.refreshed(hourly(24 * 22))
