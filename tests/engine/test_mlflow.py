"""MLflow end to end on a real sqlite store: parent and child runs, the registered routing
model and its gate, batch scoring into gold.forecasts (local and Spark), the REST server."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.scoring.batch import score, scoring_request
from engine.tracking.children import ChildRun, log_child_runs
from engine.tracking.publish import publish
from engine.tracking.registry import gate
from engine.training.entity import TrainSpec
from engine.training.job import train
from engine.training.tables import FORECASTS, MODELS
from tests.conftest import make_config

SETTINGS = dict(horizon=24, backtest={"windows": 1, "step": 24, "metric": "mase"},
                models=["seasonal_naive", "theta", "arima"], training={"max_history": 24 * 14, "workers": 1},
                source={"kind": "synthetic", "exogenous": ["temperature"],
                        "synthetic": {"entities": 4, "periods": 24 * 21, "seed": 5}},
                routing={"shard_size": 3})
FORECAST_COLUMNS = ["entity_id", "ds", "yhat", "yhat_lower", "yhat_upper", "model", "run_id", "forecast_origin"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    config = make_config(root / "lake", mlflow={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
                                                "experiment": "routing-test", "registered_model": "test-router"},
                         **SETTINGS)
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    result = publish(config, report.run_id, train_seconds=report.seconds, backend="local")
    return config, report, result


def run_forecasts(config, run_id: str) -> pd.DataFrame:
    frame = DeltaRsLake(config.lake).read(FORECASTS, filters=[("run_id", "=", run_id)])
    return frame.sort_values(["entity_id", "ds"], ignore_index=True)


def test_parent_run_holds_the_job_and_one_child_run_per_entity(published):
    config, report, result = published
    client = MlflowClient(config.mlflow.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["manymodels.run_id"] == report.run_id
    assert parent.data.tags["manymodels.gold_version"] == str(report.gold_version)
    assert parent.data.params["horizon"] == "24" and parent.data.params["backtest.metric"] == "mase"
    assert parent.data.metrics["entities"] == 4 and parent.data.metrics["status.ok"] == 4
    assert sum(v for k, v in parent.data.metrics.items() if k.startswith("champions.")) == 4
    assert parent.data.tags["gate.decision"] == "promoted" and "gate.challenger" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"entities.json", "failures.json", "config.json"} <= artifacts

    children = client.search_runs([result.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result.parent_run_id}'", max_results=100)
    assert len(children) == 4 and result.children == 4
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", report.run_id)])
    by_entity = {r.entity_id: r for r in models.itertuples()}
    for child in children:
        row = by_entity[child.data.tags["entity_id"]]
        assert child.info.status == "FINISHED" and child.info.run_name == row.entity_id
        assert child.data.tags["champion"] == row.champion and child.data.tags["status"] == row.status
        assert child.data.params["champion"] == row.champion and child.data.params["n_obs"] == str(row.n_obs)
        for candidate, values in json.loads(row.metrics).items():
            assert child.data.metrics[f"{candidate}.mase"] == pytest.approx(values["mase"])
        assert child.data.metrics["mase"] == pytest.approx(json.loads(row.metrics)[row.champion]["mase"])


def test_routing_model_is_registered_with_signature_and_example(published):
    config, report, result = published
    client = MlflowClient(config.mlflow.tracking_uri)
    champion = client.get_model_version_by_alias("test-router", "champion")
    assert str(champion.version) == result.version == "1"
    assert champion.tags["manymodels.gate"] == "promoted" and "manymodels.aggregate.mase" in champion.tags
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    info = mlflow.models.get_model_info("models:/test-router@champion")
    inputs = {c.name: (str(c.type), c.required) for c in info.signature.inputs.inputs}
    assert inputs == {"entity_id": ("DataType.string", True), "ds": ("DataType.datetime", True),
                      "temperature": ("DataType.double", False)}
    assert info.saved_input_example_info is not None


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
    pd.testing.assert_frame_equal(out[FORECAST_COLUMNS], trained[FORECAST_COLUMNS], check_dtype=False)
    router = model.unwrap_python_model().router
    assert router.bundle.loaded_shards() == 2 and len(router.cache) == 4


def test_gate_keeps_a_worse_challenger_and_promotes_one_within_tolerance(published):
    config, _, result = published
    client = MlflowClient(config.mlflow.tracking_uri)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    source = client.get_model_version("test-router", result.version).source
    first = float(client.get_model_version("test-router", result.version).tags["manymodels.aggregate.mase"])
    worse = mlflow.register_model(source, "test-router").version
    decision = gate(client, "test-router", str(worse), "mase", first * 1.10, tolerance=0.05)
    assert not decision.promoted and decision.champion_value == pytest.approx(first)
    assert str(client.get_model_version_by_alias("test-router", "champion").version) == result.version
    assert str(client.get_model_version_by_alias("test-router", "challenger").version) == str(worse)
    close = mlflow.register_model(source, "test-router").version
    decision = gate(client, "test-router", str(close), "mase", first * 1.04, tolerance=0.05)
    assert decision.promoted and "within the 5.0% tolerance" in decision.reason
    assert str(client.get_model_version_by_alias("test-router", "champion").version) == str(close)
    client.set_registered_model_alias("test-router", "champion", result.version)   # restore for other tests


def test_score_merges_the_champion_forecasts_into_gold(published):
    config, report, _ = published
    trained = run_forecasts(config, report.run_id)
    DeltaTable(DeltaRsLake(config.lake).path(FORECASTS)).delete(f"run_id = '{report.run_id}'")
    assert run_forecasts(config, report.run_id).empty
    result = score(config, backend="local")
    assert result.rows == len(trained) == 4 * 24 and result.run_id == report.run_id
    pd.testing.assert_frame_equal(run_forecasts(config, report.run_id), trained)
    again = score(config, backend="local")          # MERGE: a rerun adds no rows
    assert again.rows == len(trained) and len(run_forecasts(config, report.run_id)) == len(trained)


@pytest.mark.spark
def test_score_on_spark_for_selected_entities(published, spark):
    config, report, _ = published
    trained = run_forecasts(config, report.run_id)
    picked = sorted(trained["entity_id"].unique())[:2]
    DeltaTable(DeltaRsLake(config.lake).path(FORECASTS)).delete(
        f"run_id = '{report.run_id}' AND entity_id = '{picked[0]}'")
    result = score(config, entities=picked, backend="spark", spark=spark)
    assert result.entities == 2 and result.rows == 48
    pd.testing.assert_frame_equal(run_forecasts(config, report.run_id), trained)


def test_unknown_model_or_entity_is_a_clear_error(published):
    from engine.errors import ConfigError
    config, _, _ = published
    with pytest.raises(ConfigError, match="not in models:/test-router@champion"):
        score(config, entities=["nope"], backend="local")
    with pytest.raises(ConfigError, match="cannot load models:/test-router@staging"):
        score(config, model_uri="models:/test-router@staging", backend="local")


def test_child_runs_can_be_switched_off(published):
    config, report, _ = published
    quiet = dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, child_runs=False))
    result = publish(quiet, report.run_id)
    client = MlflowClient(config.mlflow.tracking_uri)
    assert result.children == 0 and not client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert client.get_run(result.parent_run_id).data.metrics["entities"] == 4


def test_many_child_runs_are_logged_in_order_with_progress(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fan.db'}"
    from engine.tracking.client import experiment_id, prepared_uri
    client = MlflowClient(prepared_uri(uri))
    experiment = experiment_id(client, "fan-out")
    parent = client.create_run(experiment).info.run_id
    runs = [ChildRun(f"e{i}", {"mlflow.parentRunId": parent, "entity_id": f"e{i}"}, {"champion": "ets"},
                     {"ets.mase": float(i), "inf.metric": float("inf")}) for i in range(240)]
    runs[0].params.update({f"p{k}": str(k) for k in range(150)})    # over MLflow's 100 per request
    ticks = []
    ids = log_child_runs(uri, experiment, runs, workers=2, tick=ticks.append)
    assert len(set(ids)) == 240 and sum(ticks) == 240
    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    assert len(found) == 240 and {r.data.metrics["ets.mase"] for r in found} == set(map(float, range(240)))
    assert [client.get_run(i).data.tags["entity_id"] for i in ids[:3]] == ["e0", "e1", "e2"]
    assert len(client.get_run(ids[0]).data.params) == 151


def post(port: int, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serve_answers_over_rest_and_rejects_bad_requests_with_400(published, tmp_path):
    config, report, _ = published
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"name": "serve", "lake": {"root": str(config.lake.root)},
                                    "mlflow": {"tracking_uri": config.mlflow.tracking_uri,
                                               "registered_model": "test-router"}}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config", str(path), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "server did not answer /ping within 120 s"
            time.sleep(0.5)
        trained = run_forecasts(config, report.run_id)
        entity = trained["entity_id"].iloc[0]
        rows = trained[trained["entity_id"] == entity]
        good = [{"entity_id": entity, "ds": ts.strftime("%Y-%m-%dT%H:%M:%S"), "temperature": 55.0}
                for ts in rows["ds"]]
        status, answer = post(port, {"dataframe_records": good})
        assert status == 200, answer
        predictions = pd.DataFrame(answer["predictions"])
        assert len(predictions) == 24 and set(predictions["entity_id"]) == {entity}
        assert np.isfinite(predictions["yhat"]).all()
        assert (predictions["yhat_lower"] <= predictions["yhat_upper"]).all()

        status, answer = post(port, {"dataframe_records": [{**good[0], "entity_id": "ghost"}]})
        assert status == 400 and "unknown entity 'ghost'" in answer["message"]
        status, answer = post(port, {"dataframe_records": [{"entity_id": entity, "temperature": 1.0}]})
        assert status == 400 and "ds" in answer["message"]
        status, answer = post(port, {"dataframe_records": [{**good[0], "ds": "2000-01-01T00:00:00"}]})
        assert status == 400 and "is not after the training end" in answer["message"]
        status, answer = post(port, b"not json")
        assert status == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as ping:
            assert ping.status == 200    # still alive after the bad requests
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_serve_without_a_champion_is_a_one_line_error(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"name": "serve", "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}",
                                                                "registered_model": "nothing-here"}}))
    out = subprocess.run([sys.executable, "-m", "engine", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "no model models:/nothing-here@champion" in out.stderr
    assert "Traceback" not in out.stderr
