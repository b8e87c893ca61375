"""`manymodels serve`: MLflow's scoring server for the champion over REST, and its errors."""
from __future__ import annotations

import json
import http.client
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import yaml

from benchmarks.common import free_port
from tests.conftest import http_server, run_forecasts, tracking_uri


def post(port: int, payload, token: str | None = None) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

def test_serve_answers_over_rest_behind_its_guards_and_rejects_bad_requests(published, tmp_path):
    """One guarded server: a bearer token (probes stay open), a body bound and a row bound."""
    config, report, _ = published
    (tmp_path / "token").write_text("s3cret-token\n")
    port = free_port()
    command = [sys.executable, "-m", "engine", "serve", "--config", serve_config(published, tmp_path), "--port",
               str(port), "--token-file", str(tmp_path / "token"), "--max-body-mb", "0.01", "--max-rows", "24",
               "--workers", "2"]       # uvicorn's multi-process mode, with the no-delay protocol
    with http_server(command, port):                  # /ping answers without a token
        trained = run_forecasts(config, report.run_id)
        entity = trained["entity_id"].iloc[0]
        rows = trained[trained["entity_id"] == entity]
        good = [{"entity_id": entity, "ds": ts.strftime("%Y-%m-%dT%H:%M:%S"), "temperature": 55.0}
                for ts in rows["ds"]]
        token = "s3cret-token"
        status, answer = post(port, {"dataframe_records": good}, token)
        assert status == 200, answer
        predictions = pd.DataFrame(answer["predictions"])
        assert len(predictions) == 24 and set(predictions["entity_id"]) == {entity}
        assert np.isfinite(predictions["yhat"]).all()
        assert (predictions["yhat_lower"] <= predictions["yhat_upper"]).all()

        assert post(port, {"dataframe_records": good})[0] == 401
        status, answer = post(port, {"dataframe_records": good}, "wrong-token")
        assert status == 401 and "bearer token" in answer["message"]
        status, answer = post(port, {"dataframe_records": good + good[:1]}, token)
        assert status == 400 and "request has 25 rows; this endpoint answers at most 24" in answer["message"]
        big = {"dataframe_records": good[:6], "padding": "x" * 20_000}
        status, answer = post(port, big, token)
        assert status == 413 and "over 10,485 bytes" in answer["message"]
        # A streamed (chunked) body without Content-Length is bounded the same way.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/invocations", body=iter([json.dumps(big).encode()]), encode_chunked=True,
                           headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert connection.getresponse().status == 413
        connection.close()

        status, answer = post(port, {"dataframe_records": [{**good[0], "entity_id": "ghost"}]}, token)
        assert status == 400 and "unknown entity 'ghost'" in answer["message"]
        status, answer = post(port, {"dataframe_records": [{"entity_id": entity, "temperature": 1.0}]}, token)
        assert status == 400 and "ds" in answer["message"]
        status, answer = post(port, {"dataframe_records": [{**good[0], "ds": "2000-01-01T00:00:00"}]}, token)
        assert status == 400 and "is not after the training end" in answer["message"]
        status, answer = post(port, b"not json", token)
        assert status == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as ping:
            assert ping.status == 200    # still alive after the bad requests


def test_serve_without_a_champion_is_a_one_line_error(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"name": "serve", "mlflow": {"tracking_uri": tracking_uri(tmp_path / "m.db"),
                                                                "registered_model": "nothing-here"}}))
    out = subprocess.run([sys.executable, "-m", "engine", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "no model models:/nothing-here@champion" in out.stderr
    assert "Traceback" not in out.stderr


def serve_config(published, tmp_path) -> str:
    config = published[0]
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"name": "serve", "lake": {"root": str(config.lake.root)},
                                    "mlflow": {"tracking_uri": config.mlflow.tracking_uri,
                                               "registered_model": "test-router"}}))
    return str(path)


def test_serve_refuses_a_non_loopback_host_without_allow_remote(published, tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine", "serve", "--config", serve_config(published, tmp_path),
                          "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--host 0.0.0.0 would accept connections from other machines" in out.stderr
    assert "Traceback" not in out.stderr
