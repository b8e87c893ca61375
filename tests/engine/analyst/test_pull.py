"""`manymodels forecasts pull`: latest or given origin, actuals, csv/parquet/png, clear errors,
and no Spark anywhere."""
from __future__ import annotations

import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml

from engine.analyst import plot
from engine.analyst.pull import PullError, pull
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.training.job import train
from engine.training.tables import FORECASTS, KEYS, RunContext
from tests.conftest import make_config

HORIZON = 24


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pull")
    config = make_config(root / "lake", horizon=HORIZON, backtest={"windows": 1, "step": 24, "metric": "mae"},
                         models=["seasonal_naive", "theta"], training={"max_history": 24 * 14, "workers": 1},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 3, "periods": 24 * 16, "seed": 9}})
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    # An older origin one day back, as an earlier night would have published: its steps have actuals.
    lake = DeltaRsLake(config.lake)
    latest = lake.read(FORECASTS)
    day = pd.Timedelta(hours=HORIZON)
    older = latest.assign(ds=latest["ds"] - day, forecast_origin=latest["forecast_origin"] - day, run_id="older")
    schema = RunContext("older", 0, (80, 95), pd.Timestamp.now(tz="UTC")).schema(FORECASTS)
    lake.upsert(FORECASTS, older, schema, KEYS[FORECASTS])
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "pull", "lake": {"root": str(config.lake.root)}, "horizon": HORIZON}))
    return config, report, latest, str(path)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "forecasts", "pull", *args], capture_output=True,
                          text=True, timeout=300)


def test_latest_origin_by_default_and_actuals_for_an_older_one(trained):
    config, report, latest, _ = trained
    pulled = pull(config)
    assert set(pulled.forecasts["run_id"]) == {report.run_id}
    assert len(pulled.forecasts) == 3 * HORIZON and pulled.forecasts["y"].isna().all()
    origin = latest["forecast_origin"].iloc[0] - pd.Timedelta(hours=HORIZON)
    older = pull(config, origin=origin.isoformat())
    assert set(older.forecasts["run_id"]) == {"older"} and older.forecasts["y"].notna().all()
    gold = DeltaRsLake(config.lake).read("gold/series")
    joined = older.forecasts.merge(gold, on=["entity_id", "ds"], suffixes=("", "_gold"))
    np.testing.assert_allclose(joined["y"], joined["y_gold"])


def test_entities_and_range_select_rows(trained):
    config, _, latest, _ = trained
    entity = sorted(latest["entity_id"].unique())[1]
    first = latest["ds"].min()
    pulled = pull(config, entities=[entity], start=str(first + pd.Timedelta(hours=3)),
                  end=(first + pd.Timedelta(hours=5)).isoformat())
    assert list(pulled.forecasts["entity_id"].unique()) == [entity] and len(pulled.forecasts) == 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(entities=["ghost"]), "no forecasts for entity 'ghost'"),
    (dict(start="2099-01-01"), "no forecast rows between 2099-01-01T00:00:00+00:00"),
    (dict(origin="2001-01-01"), "no forecast has origin 2001-01-01T00:00:00+00:00; origins:"),
    (dict(end="yesterday-ish"), "--end 'yesterday-ish' is not a timestamp"),
])
def test_unknown_entities_and_empty_ranges_are_clear_errors(trained, kwargs, message):
    with pytest.raises(PullError, match=re.escape(message)):
        pull(trained[0], **kwargs)


def test_csv_and_parquet_from_the_command_line_without_spark(trained, tmp_path):
    config, report, _, path = trained
    out = cli("--config", path, "--format", "csv", "--output", str(tmp_path / "f.csv"))
    assert out.returncode == 0, out.stderr
    assert "3 entities, 72 forecast rows" in out.stdout
    table = pd.read_csv(tmp_path / "f.csv")
    assert list(table.columns[:5]) == ["entity_id", "ds", "yhat", "yhat_lower", "yhat_upper"]
    assert {"model", "run_id", "forecast_origin", "y"} <= set(table.columns) and len(table) == 72
    out = cli("--config", path, "--format", "parquet", "--output", str(tmp_path / "f.parquet"))
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(tmp_path / "f.parquet")
    assert len(frame) == 72 and isinstance(frame["ds"].dtype, pd.DatetimeTZDtype) and str(frame["ds"].dt.tz) == "UTC"
    check = ("import sys; from engine.cli import main; "
             f"code = main(['forecasts', 'pull', '--config', {path!r}, '--format', 'csv', "
             f"'--output', {str(tmp_path / 'g.csv')!r}]); "
             "assert code == 0 and 'pyspark' not in sys.modules, sorted(m for m in sys.modules if 'spark' in m)")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).returncode == 0
    bad = cli("--config", path, "--entity", "ghost", "--format", "csv", "--output", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: no forecasts for entity 'ghost'")
    assert "Traceback" not in bad.stderr


def test_png_has_one_panel_per_entity_and_is_a_real_image(trained, tmp_path, monkeypatch):
    config, _, _, path = trained
    pulled = pull(config, history_steps=72)
    figure = plot.plot_forecasts(pulled, tmp_path / "f.png", (80, 95))
    assert len(figure.axes) == 3
    assert [ax.get_title().split()[0] for ax in figure.axes] == sorted(pulled.forecasts["entity_id"].unique())
    assert figure.axes[0].get_legend_handles_labels()[1] == ["history", "95% interval", "80% interval", "forecast"]
    image = matplotlib.image.imread(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[1] > image.shape[0] > 200
    out = cli("--config", path, "--entity", pulled.forecasts["entity_id"].iloc[0], "--format", "png",
              "--output", str(tmp_path / "one.png"))
    assert out.returncode == 0 and "1 entities" in out.stdout, out.stderr
    monkeypatch.setattr(plot, "MAX_PANELS", 2)
    with pytest.raises(PullError, match="3 entities are too many for one readable figure"):
        plot.plot_forecasts(pulled, tmp_path / "g.png", (80, 95))


def test_a_fan_of_many_levels_draws_the_ones_nearest_50_80_95_and_the_widest():
    assert plot.fan_levels((80, 95)) == [95, 80]
    assert plot.fan_levels((50, 80, 95, 99)) == [99, 95, 80, 50]
    assert plot.fan_levels((10, 50, 80, 95, 99)) == [99, 95, 80, 50]
    assert plot.fan_levels(tuple(range(2, 100, 2))) == [98, 94, 80, 50]     # GEFCom2014's 0.01..0.99
