"""Monthly, quarterly, weekly and 15-minute panels through ingest, training, the routing model
(loaded with MLflow's own `load_model`) and `forecasts pull`; timestamps that do not fit
series.freq are one clear error, or a rejected file when others fit."""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from engine.analyst.pull import pull
from engine.backends import backend_for
from engine.errors import ConfigError
from engine.frequency import frequency
from engine.lake import GOLD_SERIES, REJECTED, DeltaRsLake
from engine.medallion.pipeline import ingest
from engine.routing.bundle import write_bundle
from engine.routing.pyfunc import save_routing_model
from engine.training.job import train
from engine.training.tables import MODELS
from tests.conftest import make_config, run_forecasts

PANELS = {  # freq -> (steps of history, season, pandas alias the CSV is written with)
    "ms": (96, 12, "ME"),       # billing data stamped at month end; the config says month start
    "qs": (48, 4, "QS"),
    "w": (156, 52, "W-SUN"),
    "15min": (96 * 14, 96, "15min"),
}


def write_panel(folder, freq: str, entities: int = 3, seed: int = 11) -> None:
    steps, season, alias = PANELS[freq]
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2015-01-01", periods=steps, freq=alias, tz="UTC")
    t = np.arange(steps)
    rows = [pd.DataFrame({"meter": f"m{e}", "time": ds.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "kwh": 200 + 20 * e + 0.3 * t + 25 * np.sin(2 * np.pi * t / season)
                          + rng.normal(0, 2, steps)}) for e in range(entities)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.concat(rows).to_csv(folder / "readings.csv", index=False)


def panel_config(tmp_path, freq: str, folder, **extra):
    return make_config(tmp_path / "lake", source={"kind": "csv", "path": str(folder),
                                                   "columns": {"entity": "meter", "time": "time", "target": "kwh"}},
                       series={"freq": freq}, training={"workers": 1}, **extra)


@pytest.mark.parametrize("freq", list(PANELS))
def test_a_panel_at_each_frequency_trains_serves_and_pulls_on_its_grid(tmp_path, freq):
    write_panel(tmp_path / "in", freq)
    config = panel_config(tmp_path, freq, tmp_path / "in")
    grid = frequency(freq)
    ingest(config, backend_for(config, "local"))
    gold = DeltaRsLake(config.lake).read(GOLD_SERIES)
    assert len(gold) == 3 * PANELS[freq][0] and grid.on_grid(gold["ds"]).all() and not gold["is_imputed"].any()

    report = train(config, backend="local")
    assert set(report.summary["status"]) == {"ok"}
    forecasts = run_forecasts(config, report.run_id)
    for entity, rows in forecasts.groupby("entity_id"):
        origin = rows["forecast_origin"].iloc[0]
        assert list(rows["ds"]) == list(grid.after(origin, config.horizon)), entity
        assert origin == gold.loc[gold["entity_id"] == entity, "ds"].max()

    # The routing model, as MLflow's own client loads it, answers on the same grid with the same numbers.
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", report.run_id)])
    write_bundle(models, tmp_path / "bundle", run_id=report.run_id, freq=config.series.freq,
                 levels=tuple(config.training.levels), horizon=config.horizon, max_steps=0, shard_size=2)
    save_routing_model(tmp_path / "bundle", tmp_path / "model", cache_size=4)
    router = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    wanted = forecasts[forecasts["entity_id"] == "m1"].iloc[[0, 2, 5]]
    served = router.predict(pd.DataFrame({"entity_id": "m1", "ds": wanted["ds"].dt.tz_localize(None)}))
    np.testing.assert_allclose(served["yhat"].to_numpy(), wanted["yhat"].to_numpy(), rtol=1e-9)
    off_grid = wanted["ds"].iloc[0] + pd.Timedelta(days=1 if not grid.sub_daily else 0, minutes=5)
    with pytest.raises(Exception, match="off the series grid"):
        router.predict(pd.DataFrame({"entity_id": ["m1"], "ds": [off_grid.tz_localize(None)]}))

    pulled = pull(config, entities=["m1"], history_steps=4)
    assert list(pulled.forecasts["ds"]) == list(forecasts.loc[forecasts["entity_id"] == "m1", "ds"])
    assert len(pulled.history) == 4 and grid.on_grid(pulled.history["ds"]).all()


def test_month_end_and_month_start_stamps_of_the_same_month_are_one_row(tmp_path):
    folder = tmp_path / "in"
    write_panel(folder, "ms", entities=1)
    config = panel_config(tmp_path, "ms", folder)
    ingest(config, backend_for(config, "local"))
    # A later correction of the last month, stamped at the month's start (the first file said month end).
    last = pd.Timestamp(pd.read_csv(folder / "readings.csv")["time"].iloc[-1])
    start = last.replace(day=1).strftime("%Y-%m-%dT00:00:00Z")
    pd.DataFrame({"meter": ["m0"], "time": [start], "kwh": [999.0]}).to_csv(folder / "correction.csv", index=False)
    ingest(config, backend_for(config, "local"))
    gold = DeltaRsLake(config.lake).read(GOLD_SERIES).sort_values("ds")
    assert len(gold) == PANELS["ms"][0] and gold["ds"].is_unique
    assert gold["ds"].iloc[-1] == pd.Timestamp(start) and gold["y"].iloc[-1] == 999.0


def test_timestamps_that_fit_no_file_are_a_config_error_and_nothing_is_written(tmp_path):
    write_panel(tmp_path / "in", "15min")
    config = panel_config(tmp_path, "ms", tmp_path / "in")
    with pytest.raises(ConfigError, match=r"series.freq does not fit the data: in .*readings.csv the timestamps are "
                                          r"typically 15 minutes apart .* set series.freq: 15min"):
        ingest(config, backend_for(config, "local"))
    assert not DeltaRsLake(config.lake).exists("bronze/csv")


def test_a_file_at_another_frequency_among_fitting_ones_is_rejected_and_kept(tmp_path):
    folder = tmp_path / "in"
    write_panel(folder, "qs")
    hourly = pd.DataFrame({"meter": "m9", "time": pd.date_range("2020-01-01", periods=48, freq="h", tz="UTC")
                           .strftime("%Y-%m-%dT%H:%M:%SZ"), "kwh": 1.0})
    hourly.to_csv(folder / "scada.csv", index=False)
    config = panel_config(tmp_path, "qs", folder)
    report = ingest(config, backend_for(config, "local"))
    [rejected] = report.rejected
    assert rejected["file"].endswith("scada.csv") and "typically 1 hour apart" in rejected["reason"]
    assert "set series.freq: h" in rejected["reason"]
    lake = DeltaRsLake(config.lake)
    assert set(lake.read(GOLD_SERIES)["entity_id"]) == {"m0", "m1", "m2"}
    assert len(lake.read(REJECTED)) == 1 and len(lake.read("bronze/csv")) == 3 * 48 + 48    # raw rows kept
