"""`manymodels tune` with SparkTrials: nested MLflow runs, the tuned-parameter table, and the next
training run that uses it."""
from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import pytest

from engine.backends import backend_for
from engine.errors import ConfigError
from engine.lake import DeltaRsLake
from engine.medallion.pipeline import ingest
from engine.models import load_model
from engine.training import tuned_params as store
from engine.training.job import train
from engine.training.tables import MODELS
from engine.tuning.job import tune
from tests.conftest import make_config


@pytest.mark.spark
def test_tune_with_spark_trials_logs_nested_runs_and_the_next_training_uses_it(tmp_path, spark):
    config = make_config(tmp_path / "lake", horizon=24, backtest={"windows": 2, "step": 24, "metric": "mae"},
                         models=["seasonal_naive", "theta_statsmodels", "ets"], backend="spark",
                         training={"max_history": 24 * 21},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 5, "periods": 24 * 28, "seed": 9}},
                         tuning={"sample": 3, "max_evals": 4, "early_stop": 0, "parallelism": 2,
                                 "space": {"theta_statsmodels": {"theta": {"uniform": [1.0, 3.0]}},
                                           "ets": {"trend": {"choice": ["auto", "none"]}}}})
    ingest(config, backend_for(config, "local"))
    report = tune(config, show_progress=False, say=lambda line: None, spark=spark)
    assert report.runner == "SparkTrials(parallelism=2)" and len(report.entities) == 3
    assert [m.model for m in report.models] == ["theta_statsmodels", "ets"]
    for m in report.models:
        assert len(m.trials) == 4 and m.failed == 0 and m.best.loss <= m.default_loss
    assert report.models[0].trials[0].params == {"theta": 2.0}          # trial 0: the configured value
    assert "tuned parameters written to _manymodels/tuning" in report.summary()

    # MLflow: the tuning parent, a run per model, a run per trial nested under its model's run.
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[config.mlflow.experiment])
    parent = runs[runs["run_id"] == report.run_id].iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.manymodels.kind"] == "tuning"
    model_runs = runs[runs["tags.mlflow.parentRunId"] == report.run_id]
    assert sorted(model_runs["tags.manymodels.model"]) == ["ets", "theta_statsmodels"]
    trials = runs[runs["tags.mlflow.parentRunId"].isin(model_runs["run_id"])]
    assert len(trials) == 8 and (trials["status"] == "FINISHED").all() and trials["metrics.mae"].notna().all()
    assert (trials["tags.configured"] == "true").sum() == 2
    theta_trials = trials[trials["tags.manymodels.model"] == "theta_statsmodels"]
    assert theta_trials["params.theta"].astype(float).between(1.0, 3.0).all()

    # The table, and the next training run takes its parameters and says so.
    table = store.runs(config.lake, config.name)
    assert set(table["tuning_run_id"]) == {report.run_id} and sorted(table["model"]) == ["ets", "theta_statsmodels"]
    tuned_theta = json.loads(table.set_index("model").loc["theta_statsmodels", "params"])
    trained = train(config, backend="local", run_id="after-tuning")
    assert trained.tuning_run == report.run_id
    rows = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", "after-tuning")])
    for row in rows.itertuples():
        params = json.loads(row.params)
        assert params["tuning_run"] == report.run_id
        if row.champion == "theta_statsmodels":
            assert load_model(row.model).hyper == tuned_theta and params["params_from"].startswith("tuning run")

    untuned = replace(config, training=replace(config.training, tuned_params="none"))
    assert train(untuned, backend="local", run_id="untuned").tuning_run is None
    unknown = replace(config, training=replace(config.training, tuned_params="nope"))
    with pytest.raises(ConfigError, match="names tuning run 'nope', which is not in _manymodels/tuning"):
        train(unknown, backend="local", run_id="x")

    # Every trial failing (past a 0.1 ms limit) is recorded, the search still runs all its trials,
    # and nothing is written: training keeps the earlier tuning run.
    strict = replace(config, tuning=replace(config.tuning, models=["theta_statsmodels"], trial_timeout=1e-4))
    failed = tune(strict, show_progress=False, say=lambda line: None, spark=spark)
    theta = failed.models[0]
    assert len(theta.trials) == 4 and theta.failed == 4 and theta.best is None
    assert all("trial_timeout" in t.error for t in theta.trials)
    assert "no trial succeeded" in failed.summary()
    failed_trials = mlflow.search_runs(experiment_names=[config.mlflow.experiment],
                                       filter_string="tags.`manymodels.kind` = 'tuning-trial' and "
                                                     "attributes.status = 'FAILED'")
    assert len(failed_trials) == 4
    assert store.tuned_params(config).run_id == report.run_id
