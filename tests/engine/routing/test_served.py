"""`manymodels serve`: MLflow's scoring server for the champion over REST, and its errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import yaml

from benchmarks.common import free_port
from tests.conftest import run_forecasts, tracking_uri


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
    path.write_text(yaml.safe_dump({"name": "serve", "mlflow": {"tracking_uri": tracking_uri(tmp_path / "m.db"),
                                                                "registered_model": "nothing-here"}}))
    out = subprocess.run([sys.executable, "-m", "engine", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "no model models:/nothing-here@champion" in out.stderr
    assert "Traceback" not in out.stderr
