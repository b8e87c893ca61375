"""Publishing a training run to a real sqlite MLflow store: the parent run, a child run per entity, the
registered routing model with its signature, and child runs switched off."""
from __future__ import annotations

import dataclasses
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from engine.lake import DeltaRsLake
from engine.tracking.publish import publish
from engine.training.tables import MODELS


def test_parent_run_holds_the_job_and_one_child_run_per_entity(published):
    config, report, result = published
    client = MlflowClient(config.mlflow.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["manymodels.run_id"] == report.run_id
    assert parent.data.tags["manymodels.gold_version"] == str(report.gold_version)
    assert parent.data.params["horizon"] == "24" and parent.data.params["backtest.metric"] == "mase"
    assert parent.data.metrics["entities"] == 4 and parent.data.metrics["status.ok"] == 4
    # Each level's coverage in the champions' backtests, beside its nominal level.
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", report.run_id)])
    for level in (80, 95):
        covered = [json.loads(r.metrics)[r.champion][f"coverage_{level}"] for r in models.itertuples()]
        assert parent.data.metrics[f"coverage.{level}"] == pytest.approx(sum(covered) / 4)
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
    # ds and the regressors are Any: the router parses them (engine.routing.pyfunc explains why).
    assert inputs == {"entity_id": ("DataType.string", True), "ds": ("Any", True), "temperature": ("Any", False)}
    assert info.saved_input_example_info is not None

def test_child_runs_can_be_switched_off(published):
    config, report, _ = published
    client = MlflowClient(config.mlflow.tracking_uri)
    champion = client.get_model_version_by_alias("test-router", "champion").version
    quiet = dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, child_runs=False))
    result = publish(quiet, report.run_id)
    # The lake is shared by the session's tests: the champion they expect is put back.
    client.set_registered_model_alias("test-router", "champion", champion)
    assert result.children == 0 and not client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert client.get_run(result.parent_run_id).data.metrics["entities"] == 4
