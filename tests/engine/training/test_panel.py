"""Entities on one clean grid, trained as a panel, get the per-entity path's result rows bit for bit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from engine.config import parse_config
from engine.sources.synthetic import synthetic_panel
from engine.training import tasks
from engine.training.entity import TrainSpec, train_entity
from engine.training.panel import panel_candidates
from engine.training.tasks import train_bucket

HOURLY = parse_config({"name": "panel", "source": {"kind": "synthetic", "exogenous": ["temperature"],
                                                   "synthetic": {"entities": 12, "periods": 24 * 21}},
                       "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
                       "backtest": {"windows": 2, "step": 24}, "models": ["gpu_additive"],
                       "training": {"max_history": 336}})


def hourly_panel() -> pd.DataFrame:
    """Entities on one grid, one on a later start (a grid of its own), two that `prepare` repairs
    and notes (a gap in the target, one in temperature), and those `train_entity` must judge: a
    constant series, one too short to backtest, a row past the last target."""
    gold = synthetic_panel(HOURLY.source.synthetic)
    gold["y"] = gold.groupby("entity_id")["y"].transform(lambda y: y.interpolate(limit_direction="both"))
    start, end = gold["ds"].min(), gold["ds"].max()
    gold = gold[~((gold["entity_id"] == "entity_01") & (gold["ds"] < start + pd.Timedelta(days=4)))].copy()
    gold.loc[(gold["entity_id"] == "entity_02") & gold["ds"].dt.day.eq(10), "y"] = None
    gold.loc[(gold["entity_id"] == "entity_03") & gold["ds"].dt.day.eq(12), "temperature"] = None
    gold.loc[gold["entity_id"] == "entity_04", "y"] = 7.0
    gold = gold[(gold["entity_id"] != "entity_05") | (gold["ds"] < start + pd.Timedelta(days=2))]
    gold.loc[(gold["entity_id"] == "entity_06") & (gold["ds"] == end), "y"] = None
    # Imputed in gold: half a backtest window (scored on the rest), a whole window (left to train_entity).
    gold["is_imputed"] = False
    gold.loc[(gold["entity_id"] == "entity_07") & (gold["ds"] > end - pd.Timedelta(hours=12)), "is_imputed"] = True
    gold.loc[(gold["entity_id"] == "entity_08") & (gold["ds"] > end - pd.Timedelta(hours=24)), "is_imputed"] = True
    return gold


def daily_panel() -> pd.DataFrame:
    """Three years of daily rows with a weather-like regressor and a 0/1 flag: the backtest
    windows and the forecast fill them with normal weather and persistence."""
    rng = np.random.default_rng(3)
    ds = pd.date_range("2019-01-01", periods=3 * 365, freq="D", tz="UTC")
    season = np.cos(2 * np.pi * ds.dayofyear.to_numpy() / 365.25)
    frames = []
    for k in range(5):
        temperature = 15 + 10 * season + rng.normal(0, 2, len(ds))
        weekend = (ds.dayofweek >= 5).astype(float)
        y = 100 + 20 * k + 3 * np.abs(temperature - 15) - 8 * weekend + rng.normal(0, 2, len(ds))
        frames.append(pd.DataFrame({"entity_id": f"site_{k}", "ds": ds, "y": y, "temperature": temperature,
                                    "weekend": weekend}))
    return pd.concat(frames, ignore_index=True)


DAILY = parse_config({"name": "panel_daily", "source": {"kind": "synthetic", "exogenous": ["temperature", "weekend"]},
                      "series": {"freq": "D", "season_lengths": [7]}, "horizon": 14,
                      "backtest": {"windows": 2, "step": 14, "years": 1}, "models": ["gpu_additive"],
                      "training": {"max_history": 3 * 365}})


@pytest.mark.parametrize("config, gold, panel", [
    (HOURLY, hourly_panel, {"entity_00", "entity_01", "entity_02", "entity_03", "entity_07",
                            *(f"entity_{i:02d}" for i in range(9, 12))}),
    (DAILY, daily_panel, {f"site_{k}" for k in range(5)}),
], ids=["hourly", "daily-normal-weather"])
def test_entities_on_one_clean_grid_are_trained_as_a_panel_with_the_per_entity_rows(monkeypatch, config, gold,
                                                                                      panel):
    spec = TrainSpec.from_config(config)
    gold = gold()
    assert panel_candidates(spec)
    trained = []
    train_panel = tasks.train_panel

    def spy(rows, groups, spec):
        results = train_panel(rows, groups, spec)
        trained.append({str(groups[i][0]) for i in results})
        return results
    monkeypatch.setattr(tasks, "train_panel", spy)

    with threadpool_limits(limits=1):
        alone = pd.concat([train_entity(group, spec) for _, group in gold.groupby("entity_id", sort=True)],
                          ignore_index=True)
    together = train_bucket(gold, spec)

    assert trained == [panel]          # the clean ones, and only those, went through the panel
    columns = [c for c in alone.columns if c != "fit_seconds"]
    pd.testing.assert_frame_equal(together[columns], alone[columns])    # models' bytes and forecasts too
    assert (together["champion"] == "gpu_additive").sum() >= len(panel)
    assert together["fit_seconds"].gt(0).all()
    if config is HOURLY:        # the repaired ones say so, as alone
        notes = together.set_index("entity_id")["notes"]
        assert "missing target values interpolated" in notes["entity_02"]
        assert "missing 'temperature' values interpolated" in notes["entity_03"]


def test_a_panel_needs_candidates_that_all_fit_in_batches_with_one_champion_of_their_own():
    assert not panel_candidates(TrainSpec.from_config(parse_config({**_raw(HOURLY), "models": [
        "gpu_additive", "seasonal_naive"]})))
    assert not panel_candidates(TrainSpec.from_config(parse_config({**_raw(HOURLY), "models": [
        "gpu_additive"], "training": {"intervals": "conformal"}})))
    assert not panel_candidates(TrainSpec.from_config(parse_config({**_raw(HOURLY), "backtest": {
        "select": "combine"}})))


def _raw(config) -> dict:
    return {"name": config.name, "source": {"kind": "synthetic", "exogenous": ["temperature"],
                                            "synthetic": {"entities": 4, "periods": 24 * 21}},
            "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24, "models": ["gpu_additive"]}


def test_a_panel_forecast_in_one_call_is_each_models_own_bit_for_bit():
    """`forecast_grid` builds one design for the panel: each row equals that model's
    `forecast_columns`; a model that cannot forecast (NaN regressors) gets None, not an error."""
    from engine.models import model_class
    spec = TrainSpec.from_config(HOURLY)
    wide = synthetic_panel(HOURLY.source.synthetic).pivot(index="ds", columns="entity_id")
    wide = wide.interpolate(limit_direction="both")
    stamps, y, temperature = pd.DatetimeIndex(wide.index), wide["y"].to_numpy().T, wide["temperature"].to_numpy().T
    cls = model_class("gpu_additive")
    models = cls.fit_grid(spec.model, None, stamps[:-24], y[:, :-24], {"temperature": temperature[:, :-24]})
    ahead = {"temperature": temperature[:, -24:]}
    together = cls.forecast_grid(models, stamps[-24:], ahead)
    for i, (model, forecast) in enumerate(zip(models, together)):
        alone = model.forecast_columns(stamps[-24:], {"temperature": ahead["temperature"][i]})
        assert forecast.columns().keys() == alone.columns().keys()
        for name, values in alone.columns().items():
            assert np.array_equal(forecast.columns()[name], values), (i, name)
    ahead["temperature"][1, 3] = np.nan
    apart = cls.forecast_grid(models, stamps[-24:], ahead)
    assert apart[1] is None
    assert np.array_equal(apart[0].mean, together[0].mean)


def test_a_panel_forecast_that_fails_leaves_its_entities_to_the_per_entity_path(monkeypatch):
    """A batched forecast that raises costs the task nothing: its entities train one by one and
    get the rows they get alone."""
    from engine.models import model_class
    spec = TrainSpec.from_config(HOURLY)
    gold = hourly_panel()
    with threadpool_limits(limits=1):
        alone = pd.concat([train_entity(group, spec) for _, group in gold.groupby("entity_id", sort=True)],
                          ignore_index=True)

    def broken(cls, models, ds, columns):
        raise RuntimeError("out of device memory")
    monkeypatch.setattr(model_class("gpu_additive"), "forecast_grid", classmethod(broken))
    together = train_bucket(gold, spec)
    columns = [c for c in alone.columns if c != "fit_seconds"]
    pd.testing.assert_frame_equal(together[columns], alone[columns])
