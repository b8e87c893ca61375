"""Hyperparameters and tuning: declared parameters, the per-entity search inside the pure
function (on every backend), failing and timed-out trials, the stratified sample, and
`manymodels tune` with SparkTrials, its nested MLflow runs and the training run that uses it."""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest

from engine.config import parse_config
from engine.errors import ConfigError
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.models import MODEL_CLASSES, ForecastModel, Hyperparameter, ModelError, ModelSpec, load_model, make_model
from engine.models.base import Forecast
from engine.training.entity import TrainSpec, train_entity
from engine.training.job import train
from engine.training.tables import MODELS
from engine.training import tuned_params as store
from engine.tuning.job import tune
from engine.tuning.sample import stratified_sample
from engine.training.search import EntitySearch, TrialTimeout, time_limit
from engine.tuning.search import sample_folds, sample_loss
from engine.models.space import model_space
from tests.conftest import make_config

SPEC = ModelSpec(freq="h", season_lengths=(24, 168), levels=(80, 95))


def trending(n: int = 24 * 28, seed: int = 0) -> pd.DataFrame:
    t = np.arange(n)
    y = 100 + 0.4 * t + 10 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(seed).normal(0, 2, n)
    return pd.DataFrame({"entity_id": f"e{seed}", "ds": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
                         "y": y, "temperature": 50.0})


def small_config(**overrides):
    data = {"name": "t", "source": {"kind": "synthetic", "exogenous": ["temperature"]},
            "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
            "backtest": {"windows": 2, "step": 24, "metric": "mae"}, "models": ["seasonal_naive", "theta"],
            "training": {"max_history": 24 * 28}}
    data.update(overrides)
    return parse_config(data)


def test_hyperparameters_change_the_model_and_travel_with_it():
    history = trending().iloc[:-24]
    future = trending().iloc[-24:].drop(columns="y")
    low = make_model("theta", SPEC, {"theta": 1.0}).fit(history)
    high = make_model("theta", SPEC, {"theta": 3.0}).fit(history)
    assert not np.allclose(low.forecast(future).mean, high.forecast(future).mean)
    restored = load_model(high.to_bytes())
    assert restored.hyper == {"theta": 3.0}
    np.testing.assert_allclose(restored.forecast(future).mean, high.forecast(future).mean)
    assert make_model("ets", SPEC).hyper == {"trend": "auto", "seasonal": "auto"}   # declared defaults

    # A model stored before hyperparameters existed loads with the defaults.
    envelope = json.loads(zlib.decompress(low.to_bytes()))
    del envelope["hyper"]
    assert load_model(zlib.compress(json.dumps(envelope).encode())).hyper == {"theta": 2.0}


@pytest.mark.parametrize("params, message", [
    ({"theta": 9.0}, "theta must be between 1 and 4, got 9.0"),
    ({"thetaa": 2.0}, "unknown hyperparameter(s) ['thetaa']; it has: theta"),
    ({"theta": "big"}, "must be a number, got 'big'"),
])
def test_bad_hyperparameters_are_clear_errors(params, message):
    with pytest.raises(ModelError) as err:
        make_model("theta", SPEC, params)
    assert message in str(err.value)


@pytest.mark.parametrize("section, message", [
    ({"model_params": {"prophet": {"changepoint_prior_scale": 2.0}}},
     "'model_params.prophet' is invalid: prophet: hyperparameter changepoint_prior_scale must be between"),
    ({"model_params": {"lstm": {}}}, "'model_params' has unknown model 'lstm'"),
    ({"tuning": {"space": {"arima": {"max_p": {"uniform": [0, 3]}}}}},
     "'tuning.space.arima' is invalid: max_p: is an integer setting: use int"),
    ({"tuning": {"space": {"ets": {"trend": {"choice": ["linear"]}}}}},
     "'tuning.space.ets' is invalid: trend: must be one of auto, none, damped, additive, got 'linear'"),
    ({"tuning": {"space": {"prophet": {"changepoint_prior_scale": {"loguniform": [0, 0.5]}}}}},
     "must be between 0.001 and 0.5, got 0"),
    ({"tuning": {"space": {"theta": {"alpha": {"uniform": [0, 1]}}}}}, "alpha: theta has no such hyperparameter"),
    ({"tuning": {"space": {"theta": {"theta": {"normal": [0, 1]}}}}}, "unknown distribution 'normal'"),
    ({"tuning": {"models": ["arima"]}}, "'tuning.models' lists ['arima'], which are not candidates"),
    ({"tuning": {"per_entity": {"models": ["seasonal_naive"]}}}, "which cannot be searched here"),
    ({"tuning": {"max_evals": 0}}, "'tuning.max_evals' must be >= 1"),
])
def test_search_space_and_model_params_are_validated_with_the_config(section, message):
    with pytest.raises(ConfigError) as err:
        small_config(models=["seasonal_naive", "theta", "ets", "prophet"], **section)
    assert message in str(err.value)


def test_per_entity_search_picks_parameters_no_worse_than_the_configured_ones():
    config = small_config(tuning={"per_entity": {"models": ["theta"], "max_evals": 6, "early_stop": 0}})
    out = train_entity(trending(), TrainSpec.from_config(config)).iloc[0]
    theta = json.loads(out["metrics"])["theta"]
    assert out["status"] == "ok" and out["champion"] == "theta"
    assert theta["search_trials"] == 6 and theta["search_failed_trials"] == 0
    assert theta["mae"] <= theta["search_default_loss"]
    params = json.loads(out["params"])
    assert params["params_from"] == "entity search"
    # The chosen value is stored with the model and logged with its parameters.
    assert load_model(out["model"]).hyper == params["hyperparameters"]
    # Deterministic: the same rows give the same choice.
    again = train_entity(trending(), TrainSpec.from_config(config)).iloc[0]
    assert json.loads(again["params"]) == params


class FlakyModel(ForecastModel):
    """Fails for x > 0.5, and is best near x = 0.3: a search must record the failures and go on."""

    name = "flaky"
    hyperparameters = {"x": Hyperparameter(0.9, "test knob", low=0.0, high=1.0)}

    def _fit(self, history, y):
        if self.hyper["x"] > 0.5:
            raise ValueError(f"x={self.hyper['x']:.2f} is too large")
        self.level_ = float(y[-24:].mean()) + 50 * abs(self.hyper["x"] - 0.3)

    def _forecast(self, future, horizon):
        return Forecast(np.full(horizon, self.level_))

    def _state(self):
        return {"level": self.level_}

    def _restore(self, state):
        self.level_ = state["level"]


def test_failing_trials_are_recorded_and_the_search_goes_on(monkeypatch):
    monkeypatch.setitem(MODEL_CLASSES, "flaky", FlakyModel)
    spec = TrainSpec.from_config(small_config())
    spec = replace(spec, models=("seasonal_naive", "flaky"),
                   search=EntitySearch({"flaky": model_space("flaky", None)}, max_evals=12, timeout=0,
                                       trial_timeout=0, early_stop=0, seed=0))
    out = train_entity(trending(), spec).iloc[0]
    flaky = json.loads(out["metrics"])["flaky"]
    assert flaky["search_trials"] == 12
    assert 1 <= flaky["search_failed_trials"] < 12          # the default x=0.9 fails: trial 0 at least
    assert "search_default_loss" not in flaky               # ... so there is no default loss
    assert flaky["failed_windows"] == 0                     # the chosen x backtested cleanly
    assert out["champion"] in ("flaky", "seasonal_naive") and out["status"] == "ok"

    # When every trial fails, the candidate carries the failure and the entity still trains.
    spec = replace(spec, search=replace(spec.search, space={"flaky": model_space(
        "flaky", {"x": {"uniform": [0.6, 1.0]}})}, max_evals=3))
    out = train_entity(trending(), spec).iloc[0]
    metrics, notes = json.loads(out["metrics"]), json.loads(out["notes"])
    assert out["champion"] == "seasonal_naive" and metrics["flaky"]["failed_windows"] == 2
    assert any("every search trial failed" in n for n in notes)


def test_a_trial_past_its_time_limit_is_cut_short_and_fails():
    with pytest.raises(TrialTimeout):
        with time_limit(0.2):
            time.sleep(30)           # interrupted by the alarm, not waited out
    spec = TrainSpec.from_config(small_config())
    folds = {"e0": sample_folds(trending(), spec)}
    result = sample_loss("theta", {}, folds, spec, trial_timeout=1e-4)
    assert result["status"] == "fail" and "trial_timeout" in result["error"]
    ok = sample_loss("theta", {"theta": 2.0}, folds, spec, trial_timeout=0)
    assert ok["status"] == "ok" and ok["loss"] > 0 and set(ok["entity_losses"]) == {"e0"}


def test_stratified_sample_is_seeded_and_covers_every_stratum():
    rng = np.random.default_rng(3)
    stats = pd.DataFrame({"entity_id": [f"m{i:03d}" for i in range(90)],
                          "observed": np.repeat([200, 2000, 20000], 30), "cv": rng.uniform(0, 1, 90)})
    stats.loc[0, "observed"] = 10                             # too short for one backtest window
    sample = stratified_sample(stats, 9, seed=1, min_length=100)
    assert sample == stratified_sample(stats, 9, seed=1, min_length=100) and len(sample) == 9
    assert sample != stratified_sample(stats, 9, seed=2, min_length=100)
    lengths = stats.set_index("entity_id").loc[sample, "observed"]
    assert lengths.value_counts().to_dict() == {200: 3, 2000: 3, 20000: 3} and "m000" not in sample
    assert stratified_sample(stats.head(5), 9, seed=1, min_length=100) == ["m001", "m002", "m003", "m004"]
    with pytest.raises(ConfigError, match="no entity has the 10000 observations"):
        stratified_sample(stats.head(5), 9, seed=1, min_length=10000)


@pytest.mark.spark
def test_per_entity_search_gives_the_same_models_on_every_backend(tmp_path, spark):
    config = make_config(tmp_path / "lake", horizon=24, backtest={"windows": 2, "step": 24, "metric": "mae"},
                         models=["seasonal_naive", "theta"], training={"max_history": 24 * 21, "workers": 2},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 3, "periods": 24 * 28, "seed": 5}},
                         tuning={"per_entity": {"models": ["theta"], "max_evals": 4}})
    ingest(config, backend_for(config, "local"))
    chosen = {}
    for backend in ("local", "spark", "ray"):
        train(config, backend=backend, run_id=backend, spark=spark if backend == "spark" else None)
        rows = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", backend)])
        chosen[backend] = {r.entity_id: (r.champion, json.loads(r.metrics)["theta"]["mae"],
                                         load_model(r.model).hyper) for r in rows.itertuples()}
        assert all(json.loads(r.metrics)["theta"]["search_trials"] >= 1 for r in rows.itertuples())
    assert chosen["local"] == chosen["spark"] == chosen["ray"] and len(chosen["local"]) == 3


@pytest.mark.spark
def test_tune_with_spark_trials_logs_nested_runs_and_the_next_training_uses_it(tmp_path, spark):
    config = make_config(tmp_path / "lake", horizon=24, backtest={"windows": 2, "step": 24, "metric": "mae"},
                         models=["seasonal_naive", "theta", "ets"], backend="spark",
                         training={"max_history": 24 * 21},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 5, "periods": 24 * 28, "seed": 9}},
                         tuning={"sample": 3, "max_evals": 4, "early_stop": 0, "parallelism": 2,
                                 "space": {"theta": {"theta": {"uniform": [1.0, 3.0]}},
                                           "ets": {"trend": {"choice": ["auto", "none"]}}}})
    ingest(config, backend_for(config, "local"))
    report = tune(config, show_progress=False, say=lambda line: None, spark=spark)
    assert report.runner == "SparkTrials(parallelism=2)" and len(report.entities) == 3
    assert [m.model for m in report.models] == ["theta", "ets"]
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
    assert sorted(model_runs["tags.manymodels.model"]) == ["ets", "theta"]
    trials = runs[runs["tags.mlflow.parentRunId"].isin(model_runs["run_id"])]
    assert len(trials) == 8 and (trials["status"] == "FINISHED").all() and trials["metrics.mae"].notna().all()
    assert (trials["tags.configured"] == "true").sum() == 2
    theta_trials = trials[trials["tags.manymodels.model"] == "theta"]
    assert theta_trials["params.theta"].astype(float).between(1.0, 3.0).all()

    # The table, and the next training run takes its parameters and says so.
    table = store.runs(config.lake, config.name)
    assert set(table["tuning_run_id"]) == {report.run_id} and sorted(table["model"]) == ["ets", "theta"]
    tuned_theta = json.loads(table.set_index("model").loc["theta", "params"])
    trained = train(config, backend="local", run_id="after-tuning")
    assert trained.tuning_run == report.run_id
    rows = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", "after-tuning")])
    for row in rows.itertuples():
        params = json.loads(row.params)
        assert params["tuning_run"] == report.run_id
        if row.champion == "theta":
            assert load_model(row.model).hyper == tuned_theta and params["params_from"].startswith("tuning run")

    untuned = replace(config, training=replace(config.training, tuned_params="none"))
    assert train(untuned, backend="local", run_id="untuned").tuning_run is None
    unknown = replace(config, training=replace(config.training, tuned_params="nope"))
    with pytest.raises(ConfigError, match="names tuning run 'nope', which is not in _manymodels/tuning"):
        train(unknown, backend="local", run_id="x")

    # Every trial failing (past a 0.1 ms limit) is recorded, the search still runs all its trials,
    # and nothing is written: training keeps the earlier tuning run.
    strict = replace(config, tuning=replace(config.tuning, models=["theta"], trial_timeout=1e-4))
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
