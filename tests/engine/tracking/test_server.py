"""The same publish/register/serve path against a real `mlflow server` on PostgreSQL, started
and stopped by the project's own script (which installs PostgreSQL from Debian if needed)."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from engine.lake import DeltaRsLake
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.scoring.batch import score
from engine.tracking.bulk import ChildRun, post_finished_runs
from engine.tracking.children import log_child_runs
from engine.tracking.publish import publish
from engine.tracking.client import experiment_id
from engine.training.job import train
from engine.training.tables import FORECASTS
from tests.conftest import make_config
from tests.engine.tracking.test_bulk import sample_children as bulk_children, seen_by_mlflow

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "tracking-server.sh"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracking-server")
    started = subprocess.run([str(SCRIPT), "start", str(folder), str(free_port()), str(free_port()), "2"],
                             capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stderr + (folder / "mlflow.log").read_text(errors="replace")[-3000:]
    uri = started.stdout.strip().splitlines()[-1]
    assert uri.startswith("http://127.0.0.1:")
    yield uri
    subprocess.run([str(SCRIPT), "destroy", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("store", ["local", "s3"])
def test_publish_score_and_gate_work_the_same_on_a_postgres_tracking_server(server, tmp_path, store, request):
    # On S3, nothing of the night is on the local disk: tables in the bucket, models on the server.
    where = {"root": str(tmp_path / "lake")}
    if store == "s3":
        s3 = request.getfixturevalue("s3_server")
        where = {"root": s3.new_root("tracking"), "storage": s3.storage()}
    config = make_config(tmp_path / "lake", lake=where, horizon=24,
                         backtest={"windows": 1, "step": 24, "metric": "mae"},
                         models=["seasonal_naive", "theta"], training={"max_history": 24 * 14, "workers": 1},
                         source={"kind": "synthetic", "exogenous": ["temperature"],
                                 "synthetic": {"entities": 3, "periods": 24 * 16, "seed": 2}},
                         mlflow={"tracking_uri": server, "experiment": f"pg-{store}",
                                 "registered_model": f"pg-router-{store}"})
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    first = publish(config, report.run_id, backend="local")
    again = publish(config, report.run_id, backend="local")           # the same models: nothing new
    assert again.already and (again.parent_run_id, again.version) == (first.parent_run_id, first.version)
    # Other settings of what is logged make a second publish, gated against the first version.
    quiet = dataclasses.replace(config, mlflow=dataclasses.replace(config.mlflow, child_runs=False))
    second = publish(quiet, report.run_id, backend="local")
    assert not second.already and second.parent_run_id != first.parent_run_id

    client = MlflowClient(server)
    assert client._tracking_client.store.__class__.__name__ == "RestStore"
    children = client.search_runs([first.experiment_id], f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert sorted(c.data.tags["entity_id"] for c in children) == sorted(report.summary["entity_id"])
    assert all("seasonal_naive.mae" in c.data.metrics for c in children)
    assert first.decision.promoted and first.decision.reason == "first version"
    assert second.decision.promoted and second.decision.champion_version == first.version
    assert str(client.get_model_version_by_alias(f"pg-router-{store}", "champion").version) == second.version

    # The model's artifacts went through the server's artifact proxy; scoring reads them back.
    lake = DeltaRsLake(config.lake)
    trained = lake.read(FORECASTS).sort_values(["entity_id", "ds"], ignore_index=True)
    result = score(config, backend="local")
    assert result.rows == len(trained)
    pd.testing.assert_frame_equal(lake.read(FORECASTS).sort_values(["entity_id", "ds"], ignore_index=True), trained)
    mlflow.set_tracking_uri(server)
    assert mlflow.models.get_model_info(f"models:/pg-router-{store}@champion").signature is not None
    if store == "s3":
        assert not (tmp_path / "lake").exists()


def test_child_runs_go_through_the_servers_bulk_route_and_read_back_as_ordinary_ones(server):
    client = MlflowClient(server)
    experiment = experiment_id(client, "fan-out")
    parent = client.create_run(experiment).info.run_id
    ids = post_finished_runs(server, experiment, bulk_children(parent, 3, "direct"))   # the app plugin's route
    assert len(ids) == 3
    runs = [ChildRun(f"e{i}", {"mlflow.parentRunId": parent, "entity_id": f"e{i}"}, {"champion": "ets"},
                     {"ets.mase": float(i)}) for i in range(90)]
    ids = log_child_runs(server, experiment, runs, workers=2)
    assert [client.get_run(i).data.tags["entity_id"] for i in ids] == [f"e{i}" for i in range(90)]
    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    assert len(found) == 93 and all(r.info.status == "FINISHED" for r in found)

    ordinary = log_child_runs(server, experiment, bulk_children(parent, 2, "p"), workers=2, bulk=False)
    bulked = log_child_runs(server, experiment, bulk_children(parent, 2, "p"), workers=2)
    for a, b in zip(ordinary, bulked):
        assert seen_by_mlflow(client, a, parent) == seen_by_mlflow(client, b, parent)
