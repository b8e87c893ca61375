"""The training stage end to end: real gold tables, every backend, run-keyed outputs."""
from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from engine.errors import ConfigError
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.training.job import train
from engine.training.tables import BACKTESTS, FORECASTS, MODELS
from tests.conftest import make_config, tracking_uri

SETTINGS = dict(horizon=24, backtest={"windows": 2, "step": 24, "metric": "mase"},
                # statsforecast candidates (theta, ets, croston) too: every backend must give identical models.
                models=["seasonal_naive", "theta", "ets", "croston", "ensemble"],
                training={"max_history": 24 * 21, "workers": 2},
                source={"kind": "synthetic", "exogenous": ["temperature"],
                        "synthetic": {"entities": 5, "periods": 24 * 28, "seed": 11}})
COMPARED = ["entity_id", "status", "champion", "reason", "error", "n_obs", "windows", "params", "metrics",
            "notes", "forecast_origin", "model"]


@pytest.fixture(scope="module")
def lake_config(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("train") / "lake", **SETTINGS)
    ingest(config, backend_for(config, "local"))
    return config


def models_of(config, run_id: str) -> pd.DataFrame:
    models = DeltaRsLake(config.lake).read(MODELS)
    return models[models["run_id"] == run_id].sort_values("entity_id", ignore_index=True)


def counts(config) -> dict[str, pd.Series]:
    lake = DeltaRsLake(config.lake)
    return {t: lake.read(t).groupby("run_id").size() for t in (BACKTESTS, MODELS, FORECASTS)}


def test_local_training_writes_the_three_tables(lake_config):
    ticks = []
    report = train(lake_config, backend="local", run_id="run-a",
                   progress=lambda total, tasks: ticks.append((total, tasks)) or ticks.append)
    assert report.entities == 5 and report.statuses["ok"] == 5 and report.failures.empty
    assert ticks[0] == (5, 5) and sum(t for t in ticks[1:]) == 5
    rows = counts(lake_config)
    assert rows[MODELS]["run-a"] == 5
    assert rows[FORECASTS]["run-a"] == 5 * 24
    assert rows[BACKTESTS]["run-a"] == 5 * 5 * 2       # 4 candidates + ensemble, 2 windows
    forecasts = DeltaRsLake(lake_config.lake).read(FORECASTS)
    assert (forecasts["yhat_lower"] == forecasts["yhat_lower_95"]).all()
    assert (forecasts["ds"] > forecasts["forecast_origin"]).all()
    assert report.gold_version == 0 and report.written[MODELS] == 5


def test_rerunning_a_run_id_replaces_its_rows_and_other_runs_stay(lake_config):
    train(lake_config, backend="local", run_id="run-a")
    train(lake_config, backend="local", run_id="run-a")
    rows = counts(lake_config)
    assert rows[FORECASTS]["run-a"] == 5 * 24
    assert rows[MODELS]["run-a"] == 5 and rows[BACKTESTS]["run-a"] == 50
    second = train(lake_config, backend="local", run_id="run-b")
    assert second.plan.learned   # costs now come from recorded fit seconds
    rows = counts(lake_config)
    # Models and backtests of every run stay; the forecast of an origin exists once, from its latest run.
    assert rows[MODELS].to_dict() == {"run-a": 5, "run-b": 5}
    assert rows[BACKTESTS].to_dict() == {"run-a": 50, "run-b": 50}
    assert rows[FORECASTS].to_dict() == {"run-b": 5 * 24}
    # The next plan's costs are the latest run's, read without every earlier night's rows.
    from engine.training.job import _recorded_costs
    models = DeltaRsLake(lake_config.lake).read(MODELS)
    latest = models[models["run_id"] == "run-b"]
    assert _recorded_costs(DeltaRsLake(lake_config.lake)) == {
        r.entity_id: (int(r.n_obs), float(r.fit_seconds)) for r in latest.itertuples()}
    assert latest["fit_seconds"].tolist() != models[models["run_id"] == "run-a"]["fit_seconds"].tolist()


@pytest.mark.spark
def test_spark_and_ray_give_results_identical_to_local(lake_config, spark):
    lake, by_run = DeltaRsLake(lake_config.lake), {}

    def forecasts_of(run_id: str) -> pd.DataFrame:   # read at once: a later run of the origin supersedes them
        rows = lake.read(FORECASTS, filters=[("run_id", "=", run_id)])
        return rows.drop(columns="run_id").sort_values(["entity_id", "ds"], ignore_index=True)

    local = train(lake_config, backend="local", run_id="parity-local")
    by_run["parity-local"] = forecasts_of("parity-local")
    spark_report = train(lake_config, backend="spark", run_id="parity-spark", spark=spark)
    by_run["parity-spark"] = forecasts_of("parity-spark")
    ray_report = train(lake_config, backend="ray", run_id="parity-ray")
    by_run["parity-ray"] = forecasts_of("parity-ray")
    expected = models_of(lake_config, "parity-local")[COMPARED]
    for run_id in ("parity-spark", "parity-ray"):
        pd.testing.assert_frame_equal(models_of(lake_config, run_id)[COMPARED], expected)
    assert len(by_run["parity-local"]) == 5 * 24
    pd.testing.assert_frame_equal(by_run["parity-spark"], by_run["parity-local"])
    pd.testing.assert_frame_equal(by_run["parity-ray"], by_run["parity-local"])
    assert spark_report.entities == ray_report.entities == local.entities == 5
    # Rows written per table: Spark reads them from its commits (a replaceWhere's and a MERGE's metrics).
    assert spark_report.written == ray_report.written == local.written


@pytest.mark.spark
def test_spark_naive_entity_plan_trains_the_same(lake_config, spark):
    naive = make_config(lake_config.lake.root, **{**SETTINGS, "partitions": {"strategy": "entity"}})
    report = train(naive, backend="spark", run_id="naive-spark", spark=spark)
    assert report.plan.strategy == "entity" and report.plan.buckets == 5
    reference = train(lake_config, backend="local", run_id="naive-local")
    assert reference.entities == 5
    pd.testing.assert_frame_equal(models_of(lake_config, "naive-spark")[COMPARED],
                                  models_of(lake_config, "naive-local")[COMPARED])


def test_missing_gold_version_is_a_clear_error(lake_config):
    with pytest.raises(ConfigError, match="--gold-version 7 does not exist; gold.series has versions 0..0"):
        train(lake_config, backend="local", gold_version=7)


def test_train_command_prints_a_summary(lake_config, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({
        "name": "cli-train", "lake": {"root": str(lake_config.lake.root)}, "backend": "local",
        "mlflow": {"tracking_uri": tracking_uri(tmp_path / "mlflow.db"), "experiment": "cli",
                   "registered_model": "cli-router"},
        "source": SETTINGS["source"], "series": {"freq": "h", "season_lengths": [24, 168]},
        **{k: v for k, v in SETTINGS.items() if k != "source"}}))
    out = subprocess.run([sys.executable, "-m", "engine", "train", "--config", str(path), "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "entities: 5 (ok 5)" in out.stdout and "champions: " in out.stdout and "entities/s" in out.stdout
    assert re.search(r"interval coverage in backtests \(champions\): 80% -> [\d.]+%, 95% -> [\d.]+%", out.stdout)
    assert "Traceback" not in out.stderr
    assert "5 child runs" in out.stdout and "registry: cli-router version 1 promoted to champion" in out.stdout
    help_text = subprocess.run([sys.executable, "-m", "engine", "train", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--gold-version" in help_text.stdout


@pytest.mark.slow
@pytest.mark.spark
def test_two_thousand_entities_train_identically_on_every_backend(tmp_path, spark):
    config = make_config(tmp_path / "lake", horizon=24, backtest={"windows": 1, "step": 24, "metric": "mase"},
                         models=["seasonal_naive", "theta"], training={"max_history": 24 * 14},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 2000, "periods": 24 * 14, "seed": 2}})
    ingest(config, backend_for(config, "local"))
    reports = {b: train(config, backend=b, run_id=f"big-{b}", spark=spark) for b in ("local", "spark", "ray")}
    assert {r.entities for r in reports.values()} == {2000}
    expected = models_of(config, "big-local")[COMPARED]
    for backend in ("spark", "ray"):
        pd.testing.assert_frame_equal(models_of(config, f"big-{backend}")[COMPARED], expected)
