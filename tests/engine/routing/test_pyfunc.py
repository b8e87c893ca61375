"""The registered routing model, loaded with MLflow's own `pyfunc.load_model`, answers what training published."""
from __future__ import annotations

import mlflow
import numpy as np
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


def test_the_scoring_server_writes_answers_byte_for_byte_as_mlflow_does():
    """The one-pass writer against MLflow's own (json.dump of to_dict records), on the values
    JSON spells oddly: NaN, infinities, None, quotes, non-ASCII text, '%' in a column name."""
    import io

    from mlflow.pyfunc import scoring_server

    from engine.routing.pyfunc import _write_frames_in_one_pass, records_json
    frame = pd.DataFrame({"entity_id": ["zone \"1\"", "Zürich", "a\\b"], "yhat": [1.5, np.nan, 1e16],
                          "yhat_lower": [-np.inf, np.inf, 0.1 + 0.2], "status": ["ok", None, "failed"],
                          "50%": [1.0, 2.0, 3.0]})
    _write_frames_in_one_pass()
    mlflow_bytes, ours = io.StringIO(), io.StringIO()
    scoring_server.predictions_to_json.__wrapped__(frame, mlflow_bytes)
    scoring_server.predictions_to_json(frame, ours)
    assert ours.getvalue() == mlflow_bytes.getvalue()
    assert records_json(frame.assign(other=[1, 2, 3])) is None       # integers: MLflow's writer
