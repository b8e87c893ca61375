"""The bulk child-run path (MLflow's tracking-store plugin) against the ordinary one: MLflow's own
readers must not tell the runs apart."""
from __future__ import annotations

import math

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from engine.tracking import bulk, children
from engine.tracking.bulk import ChildRun, UnverifiedSchema
from engine.tracking.children import log_child_runs
from engine.tracking.client import experiment_id, prepared_uri


def sample_children(parent: str, n: int, prefix: str) -> list[ChildRun]:
    return [ChildRun(f"{prefix}{i}", {"mlflow.parentRunId": parent, "mlflow.runName": f"{prefix}{i}",
                                      "entity_id": f"{prefix}{i}", "champion": "ets", "reason": "r" * 6000},
                     {"champion": "ets", "n_obs": str(100 + i), "ets.season": "24", "long": "x" * 7000},
                     {"ets.mase": i / 7, "fit_seconds": 0.25, "inf.metric": math.inf, "neg.metric": -math.inf,
                      "nan.metric": math.nan, "big": 1e300})
            for i in range(n)]


def _same(value):
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def seen_by_mlflow(client: MlflowClient, run_id: str, parent: str) -> dict:
    """Everything MLflow's readers return for a run, less what differs by design (ids, clock)."""
    run = client.get_run(run_id)
    info = run.info
    assert info.artifact_uri.endswith(f"/{run_id}/artifacts") and info.start_time == info.end_time
    history = {k: [(m.value, m.step, m.timestamp - info.start_time) for m in client.get_metric_history(run_id, k)]
               for k in run.data.metrics}
    return {"info": (info.status, info.lifecycle_stage, info.run_name, info.user_id, info.experiment_id),
            "tags": run.data.tags, "params": run.data.params,
            "metrics": {k: _same(v) for k, v in run.data.metrics.items()},
            "history": {k: [tuple(map(_same, h)) for h in v] for k, v in history.items()},
            "inputs": run.inputs.dataset_inputs, "parent": client.get_parent_run(run_id).info.run_id == parent}


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'bulk.db'}"
    client = MlflowClient(prepared_uri(uri))
    experiment = experiment_id(client, "bulk")
    return uri, client, experiment, client.create_run(experiment).info.run_id


def test_bulk_and_ordinary_child_runs_read_back_the_same_through_every_mlflow_reader(store, capfd):
    uri, client, experiment, parent = store
    ordinary = log_child_runs(uri, experiment, sample_children(parent, 3, "e"), bulk=False)
    bulked = log_child_runs(uri, experiment, sample_children(parent, 3, "e"))
    assert bulk.plugin_uri(uri) == "manymodels+" + uri
    # The bulk path itself ran: no fallback to the ordinary one (which would read back the same).
    assert uri not in children._NO_BULK and "logged the ordinary way" not in capfd.readouterr().err
    for a, b in zip(ordinary, bulked):
        assert seen_by_mlflow(client, a, parent) == seen_by_mlflow(client, b, parent)
    seen = seen_by_mlflow(client, bulked[0], parent)
    assert seen["metrics"]["inf.metric"] == 1.7976931348623157e308 and seen["metrics"]["nan.metric"] == "nan"
    assert len(seen["params"]["long"]) == 6000 and len(seen["tags"]["reason"]) == 6000   # MLflow's truncation

    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}' and params.n_obs = '101' "
                                             "and metrics.`ets.mase` > 0.1", order_by=["attributes.start_time"])
    assert [r.info.run_id for r in found] == [ordinary[1], bulked[1]]
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    rows = frame.set_index("run_id").drop(columns=["start_time", "end_time", "artifact_uri"])
    assert rows.loc[ordinary].reset_index(drop=True).equals(rows.loc[bulked].reset_index(drop=True))


def test_the_plugin_uri_is_a_full_tracking_and_registry_store(store):
    uri, client, experiment, parent = store
    log_child_runs(uri, experiment, sample_children(parent, 2, "p"))
    plugin = MlflowClient("manymodels+" + uri)
    assert type(plugin._tracking_client.store).__name__ == "BulkStore"
    assert len(plugin.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")) == 2
    plugin.create_registered_model("through-the-plugin")
    assert [m.name for m in client.search_registered_models()] == ["through-the-plugin"]


def test_an_unverified_schema_is_refused_and_the_children_are_logged_the_ordinary_way(store, monkeypatch, capfd):
    uri, client, experiment, parent = store
    monkeypatch.setattr(bulk, "VERIFIED_SCHEMAS", frozenset({"0000newer000"}))   # as after an MLflow upgrade
    monkeypatch.setattr(children, "_NO_BULK", {})
    from mlflow.tracking._tracking_service.utils import _get_store
    with pytest.raises(UnverifiedSchema, match="verified with MLflow .* this is MLflow 3"):
        _get_store(bulk.plugin_uri(uri)).log_finished_runs(experiment, sample_children(parent, 1, "x"))
    ids = log_child_runs(uri, experiment, sample_children(parent, 4, "f"))
    assert "child runs are logged the ordinary way" in capfd.readouterr().err
    assert [client.get_run(i).data.tags["entity_id"] for i in ids] == ["f0", "f1", "f2", "f3"]


def test_a_bad_child_is_named_and_its_whole_chunk_is_left_out(store):
    uri, client, experiment, parent = store
    runs = sample_children(parent, 3, "b")
    runs[2].metrics["bad name!"] = 1.0
    with pytest.raises(MlflowException, match=r"bad name!.*runs\[2\]\.metrics\[6\]"):
        log_child_runs(uri, experiment, runs)
    assert client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'") == []
