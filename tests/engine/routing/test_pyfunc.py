"""The registered routing model, loaded with MLflow's own `pyfunc.load_model`, answers what training published."""
from __future__ import annotations

import mlflow
import pandas as pd

from engine.lake import DeltaRsLake
from engine.scoring.batch import scoring_request
from engine.training.entity import TrainSpec
from tests.conftest import FORECAST_COLUMNS, run_forecasts


def test_registered_model_answers_what_training_published(published):
    config, report, _ = published
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/test-router@champion")
    spec = TrainSpec.from_config(config)
    gold = DeltaRsLake(config.lake).read("gold/series")
    trained = run_forecasts(config, report.run_id)
    origins = trained.groupby("entity_id")["forecast_origin"].first()
    requests = pd.concat([scoring_request(rows, origins[e], spec) for e, rows in gold.groupby("entity_id")])
    out = model.predict(requests).sort_values(["entity_id", "ds"], ignore_index=True)
    assert out["ds"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z").all()     # ISO 8601, for every MLflow client
    for column in ("ds", "forecast_origin"):
        out[column] = pd.to_datetime(out[column], utc=True)
    pd.testing.assert_frame_equal(out[FORECAST_COLUMNS], trained[FORECAST_COLUMNS], check_dtype=False)
    router = model.unwrap_python_model().router
    assert router.bundle.loaded_shards() == 2 and len(router.cache) == 4
