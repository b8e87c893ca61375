"""The tracking server under MLflow's basic-auth app (scripts/tracking-server.sh, MLFLOW_APP=basic-auth):
the engine publishes with credentials from the environment, and without them says so in one line.
Slow (make test-slow): a basic-auth server hashes the password on every request, so a publish
through it takes over a minute here."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmarks.common import free_port
from engine.backends import backend_for
from engine.medallion.pipeline import ingest
from engine.tracking.publish import publish
from engine.training.job import train
from tests.conftest import make_config
from tests.engine.tracking.test_server import SCRIPT

pytestmark = pytest.mark.slow

SETTINGS = dict(horizon=24, backtest={"windows": 1, "step": 24, "metric": "mae"}, models=["seasonal_naive"],
                training={"max_history": 24 * 14, "workers": 1},
                source={"kind": "synthetic", "exogenous": ["temperature"],
                        "synthetic": {"entities": 2, "periods": 24 * 16, "seed": 3}})


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth-server")
    password = secrets.token_urlsafe(16)
    env = dict(os.environ, MLFLOW_APP="basic-auth", MLFLOW_AUTH_ADMIN_PASSWORD=password)
    started = subprocess.run([str(SCRIPT), "start", str(folder), str(free_port()), str(free_port()), "1"],
                             capture_output=True, text=True, timeout=600, env=env)
    assert started.returncode == 0, started.stderr + (folder / "mlflow.log").read_text(errors="replace")[-3000:]
    assert password not in (folder / "basic_auth.ini").read_text()
    yield started.stdout.strip().splitlines()[-1], password
    subprocess.run([str(SCRIPT), "destroy", str(folder)], capture_output=True, text=True, timeout=120)


def test_the_engine_publishes_with_credentials_from_the_environment(auth_server, tmp_path, monkeypatch):
    uri, password = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    config = make_config(tmp_path / "lake", mlflow={"tracking_uri": uri, "experiment": "auth",
                                                     "registered_model": "auth-router"}, **SETTINGS)
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    result = publish(config, report.run_id, backend="local")
    client = MlflowClient(uri)
    assert client.get_model_version_by_alias("auth-router", "champion").version == result.version
    assert result.children == 2


def test_without_credentials_the_job_fails_in_one_line(auth_server, tmp_path):
    uri, _ = auth_server
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "auth", "lake": {"root": str(tmp_path / "lake")},
                                    "mlflow": {"tracking_uri": uri, "experiment": "auth-none"}, **SETTINGS}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    out = subprocess.run([sys.executable, "-m", "engine", "nightly", "--config", str(path), "--no-progress"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr
    assert "MLFLOW_TRACKING_USERNAME" in out.stderr and "Traceback" not in out.stderr
