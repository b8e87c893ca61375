"""The per-entity search inside the pure function: no worse than the configured parameters, failing
and timed-out trials recorded, the same models on every backend."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from engine.backends import backend_for
from engine.lake import DeltaRsLake
from engine.medallion.pipeline import ingest
from engine.models import MODEL_CLASSES, ForecastModel, Hyperparameter, load_model
from engine.models.base import Forecast
from engine.models.space import model_space
from engine.training.entity import TrainSpec, train_entity
from engine.training.job import train
from engine.training.search import EntitySearch, TrialTimeout, time_limit
from engine.training.tables import MODELS
from engine.tuning.search import sample_folds, sample_loss
from tests.conftest import make_config, small_config, trending


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
    ok = sample_loss("theta", {"variant": "standard"}, folds, spec, trial_timeout=0)
    assert ok["status"] == "ok" and ok["loss"] > 0 and set(ok["entity_losses"]) == {"e0"}

@pytest.mark.spark
@pytest.mark.slow      # backend parity of training itself stays in tests/engine/training/test_job.py
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
