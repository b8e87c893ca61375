"""Child runs: what each holds, and many logged in parallel, in order, over MLflow's per-request limits."""
from __future__ import annotations

import json

import pandas as pd
from mlflow.tracking import MlflowClient

from engine.tracking.children import ChildRun, child_runs, log_child_runs


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


def test_a_child_runs_unprefixed_figures_are_the_champions_as_published():
    # Conformal bands (held out) and a reconciled hierarchy change the champion's published scores.
    metrics = {"ets": {"mase": 1.2, "coverage_80": 0.91}, "theta": {"mase": 1.4, "coverage_80": 0.70}}
    scores = {"mase": 1.2, "coverage_80": 0.81, "unreconciled_coverage_80": 0.78, "intervals": "conformal"}
    row = dict(entity_id="zone_3", champion="ets", status="ok", reason=None, error=None, n_obs=100, windows=3,
               params="{}", metrics=json.dumps(metrics), fit_seconds=0.5, scores=json.dumps(scores))
    old = {**row, "scores": None}               # rows from before scores existed
    published, before = (run.metrics for run in child_runs(pd.DataFrame([row, old]), "p", "r"))
    assert published["coverage_80"] == 0.81 and published["unreconciled_coverage_80"] == 0.78
    assert published["ets.coverage_80"] == 0.91 and "intervals" not in published
    assert before["coverage_80"] == 0.91 and before["mase"] == 1.2
