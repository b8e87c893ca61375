"""Shared fixtures and helpers: a session-scoped local Spark with Delta Lake, object-store servers
on 127.0.0.1 (an S3 server and Azurite, started by scripts/object-store.sh), config builders,
free ports, and lakes trained once per session for the tests that only read them."""
from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.common import free_port
from engine.backends import backend_for
from engine.config import Config, load_config, parse_config
from engine.faults import ENV as CRASH_ENV
from engine.lake import DeltaRsLake
from engine.medallion.pipeline import ingest
from engine.tracking.publish import publish
from engine.training.job import train
from engine.models import ModelSpec
from engine.training.tables import BACKTESTS, FORECASTS, MODELS

# The suite's JVMs are short-lived and small: C1 alone compiles what they run with about 40% less
# CPU than the default tiered C2 (this 2-core machine runs the suite CPU-bound), and the serial
# collector spares GC threads. Every Spark driver the suite starts, here or in a subprocess, reads it.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "object-store.sh"
# moto accepts any key pair; these stand in for real credentials, read from the environment.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "manymodels-test", "AWS_SECRET_ACCESS_KEY": "manymodels-test-secret"}


def tracking_uri(path: Path) -> str:
    """A sqlite tracking URI at `path`. The file, if its folder exists and it does not, is a copy of
    an empty store migrated once per session: MLflow's first open of a new file runs every schema
    migration, about 4 s that each test's fresh store would otherwise pay."""
    path = Path(path)
    if path.parent.is_dir() and not path.exists():
        shutil.copyfile(_migrated_store(), path)
    return f"sqlite:///{path}"


@functools.lru_cache(maxsize=None)
def _migrated_store() -> Path:
    from mlflow.tracking import MlflowClient
    folder = Path(tempfile.mkdtemp(prefix="manymodels-mlflow-store-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()    # creates and migrates, as a first open does
    return path


def make_config(root: Path, **overrides) -> Config:
    """A small valid config on the lake folder `root`; keyword overrides replace top-level keys."""
    data = {"name": "test", "lake": {"root": str(root)},
            "mlflow": overrides.pop("mlflow", None) or {"tracking_uri": tracking_uri(Path(root).parent / "mlflow.db"),
                                                        "experiment": "test"},
            "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
            "source": {"kind": "synthetic", "exogenous": ["temperature"],
                       "synthetic": {"entities": 4, "periods": 24 * 28, "seed": 7}},
            "series": {"freq": "h", "season_lengths": [24, 168]},
            "backend": "local"}
    data.update(overrides)
    return parse_config(data)


def trending(n: int = 24 * 28, seed: int = 0) -> pd.DataFrame:
    """One hourly entity with a trend, a daily cycle and noise (and a temperature column)."""
    t = np.arange(n)
    y = 100 + 0.4 * t + 10 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(seed).normal(0, 2, n)
    return pd.DataFrame({"entity_id": f"e{seed}", "ds": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
                         "y": y, "temperature": 50.0})


def small_config(**overrides):
    """A small synthetic config without a lake folder (for the pure per-entity function)."""
    data = {"name": "t", "source": {"kind": "synthetic", "exogenous": ["temperature"]},
            "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
            "backtest": {"windows": 2, "step": 24, "metric": "mae"}, "models": ["seasonal_naive", "theta"],
            "training": {"max_history": 24 * 28}}
    data.update(overrides)
    return parse_config(data)


@pytest.fixture(scope="session")
def spark(s3_server):
    """One Spark session for the suite; it reaches the test S3 server too (the s3a connector and
    endpoint are session settings), so the object-store tests share it with everything else."""
    from engine.config import LakeConfig, SparkConfig, StorageConfig
    from engine.spark import get_spark

    lake = LakeConfig(root="s3://any-bucket/lake", storage=StorageConfig(**s3_server.storage()))
    session = get_spark(SparkConfig(master="local[2]", ui=False, shuffle_partitions=2), lake)
    yield session
    session.stop()


@dataclass
class ObjectStoreServer:
    """A server started by scripts/object-store.sh, and how a config reaches it."""

    kind: str              # s3 | azure
    endpoint: str
    folder: Path
    port: int

    def storage(self, **extra) -> dict:
        if self.kind == "s3":
            return {"endpoint": self.endpoint, "path_style": True, "allow_http": True, **extra}
        return {"endpoint": f"{self.endpoint}/devstoreaccount1", "emulator": True, **extra}

    def new_root(self, name: str) -> str:
        """A fresh bucket (S3) or container (Azure) for one test's lake."""
        bucket = f"{name}-{uuid.uuid4().hex[:8]}".lower().replace("_", "-")
        if self.kind == "s3":
            import boto3
            boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
            return f"s3://{bucket}/lake"
        from azure.storage.blob import BlobServiceClient

        from engine.storage import AZURITE_KEY
        BlobServiceClient(f"{self.endpoint}/devstoreaccount1", credential={
            "account_name": "devstoreaccount1", "account_key": AZURITE_KEY}).create_container(bucket)
        return f"az://{bucket}/lake"

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.folder)], check=True, timeout=60)

    def start(self) -> None:
        verb = "start-s3" if self.kind == "s3" else "start-azurite"
        subprocess.run([str(SCRIPT), verb, str(self.folder), str(self.port)], check=True, timeout=300,
                       capture_output=True, text=True)


def _serve(kind: str, folder: Path):
    server = ObjectStoreServer(kind, "", folder, free_port())
    server.start()
    server.endpoint = f"http://127.0.0.1:{server.port}"
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1; the credentials it is given come from the environment."""
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    server = _serve("s3", tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    server = _serve("azure", tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


PUBLISHED_SETTINGS = dict(horizon=24, backtest={"windows": 1, "step": 24, "metric": "mase"},
                          models=["seasonal_naive", "theta", "arima"], training={"max_history": 24 * 14, "workers": 1},
                          source={"kind": "synthetic", "exogenous": ["temperature"],
                                  "synthetic": {"entities": 4, "periods": 24 * 21, "seed": 5}},
                          routing={"shard_size": 3})
FORECAST_COLUMNS = ["entity_id", "ds", "yhat", "yhat_lower", "yhat_upper", "model", "run_id", "forecast_origin"]


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    """A lake trained and published once (4 synthetic entities, registered model `test-router`),
    shared by the tests that read it; a test that changes it puts it back."""
    root = tmp_path_factory.mktemp("mlflow")
    config = make_config(root / "lake", mlflow={"tracking_uri": tracking_uri(root / "mlflow.db"),
                                                "experiment": "routing-test", "registered_model": "test-router"},
                         **PUBLISHED_SETTINGS)
    ingest(config, backend_for(config, "local"))
    report = train(config, backend="local")
    result = publish(config, report.run_id, train_seconds=report.seconds, backend="local")
    return config, report, result


def run_forecasts(config, run_id: str) -> pd.DataFrame:
    frame = DeltaRsLake(config.lake).read(FORECASTS, filters=[("run_id", "=", run_id)])
    return frame.sort_values(["entity_id", "ds"], ignore_index=True)


def messy_rows() -> list[dict]:
    """Two meters, 48 hours; meter A carries one of every row-level problem."""
    rows = []
    for meter in ("A", "B"):
        for h in range(48):
            ts = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h)
            load = 100 + 10 * np.sin(2 * np.pi * h / 24) + (h % 5) * 0.5
            rows.append({"meter": meter, "time": ts.strftime("%Y-%m-%d %H:%M"), "kw": f"{load:.2f}", "temp": "20"})
    a = rows[:48]
    a[5]["kw"] = "-3.0"                                   # negative
    a[7]["kw"] = "n/a"                                    # non-numeric
    a[30]["kw"] = "5000"                                  # outlier
    a.append({**a[20], "kw": "999"})                      # duplicate with a different value (later wins)
    a.append({**a[21]})                                   # exact duplicate: harmless
    del a[12]                                             # gap at 12:00
    a.append({"meter": "A", "time": "2024-01-01 10:30", "kw": "101", "temp": "20"})  # off the hourly grid
    return a + rows[48:]


def csv_config(tmp_path, folder, kind: str = "csv"):
    return make_config(tmp_path / "lake", source={
        "kind": kind, "path": str(folder), "exogenous": ["temp"],
        "columns": {"entity": "meter", "time": "time", "target": "kw"}},
        series={"freq": "h", "season_lengths": [24]},
        quality={"outlier_window": 24, "outlier_z": 6.0, "max_fill_gap": 48})


HOURLY_SPEC = ModelSpec(freq="h", season_lengths=(24, 168), levels=(80, 95), exogenous=("temperature",), seed=3)


def hourly(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    temperature = 60 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n)
    y = (500 + 50 * np.sin(2 * np.pi * t / 24) + 20 * np.sin(2 * np.pi * t / 168) + 2 * temperature
         + rng.normal(0, 5, n))
    return pd.DataFrame({"ds": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"), "y": y,
                         "temperature": temperature})


NIGHT_1, NIGHT_2 = "2022-01-20", "2022-01-21"


TABLE_KEYS = {FORECASTS: ["entity_id", "ds", "forecast_origin"], MODELS: ["run_id", "entity_id"],
              BACKTESTS: ["run_id", "entity_id", "candidate", "window"]}


def nightly_config(tmp_path: Path, backend: str = "local", **extra) -> str:
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump({
        "name": "night", "lake": {"root": str(tmp_path / "lake")}, "backend": backend,
        "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
        "mlflow": {"tracking_uri": tracking_uri(tmp_path / "mlflow.db"), "experiment": "nightly-test",
                   "registered_model": "night-router"},
        "source": {"kind": "synthetic", "exogenous": ["temperature"],
                   "synthetic": {"entities": 3, "periods": 24 * 24, "seed": 4}},
        "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
        "backtest": {"windows": 1, "step": 24}, "models": ["seasonal_naive", "theta"],
        "training": {"workers": 2}, **extra}))
    return str(path)


def nightly(config: str, *args: str, crash_at: str = "", timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{CRASH_ENV: crash_at})
    return subprocess.run([sys.executable, "-m", "engine", "nightly", "--config", config, "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, start_new_session=True)


def summary_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


def lake_of(config: str) -> DeltaRsLake:
    return DeltaRsLake(load_config(config).lake)


def assert_exactly_once(lake: DeltaRsLake) -> None:
    for table, keys in TABLE_KEYS.items():
        rows = lake.read(table)
        assert len(rows) and not rows.duplicated(keys).any(), f"{table} has duplicate {keys} rows"


def table_versions(lake: DeltaRsLake) -> dict[str, int]:
    return {t: lake.version(t) for t in (*TABLE_KEYS, "gold/series", "bronze/synthetic")}


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (setup.cfg): one test process per core, at most 4 (each may start a Spark JVM)."""
    return max(1, min(os.cpu_count() or 1, 4))


@contextlib.contextmanager
def http_server(command: list[str], port: int, timeout: float = 120, env=None, cwd=None):
    """A server process (its own session) until the block ends, once GET /ping answers 200; the
    interpreter's folder leads PATH, as in an activated environment (MLflow runs `uvicorn`)."""
    env = dict(env or os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, env=env, cwd=cwd)
    try:
        deadline = time.time() + timeout
        while True:
            assert server.poll() is None, server.stdout.read()[-5000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, f"server did not answer /ping within {timeout} s"
            time.sleep(0.5)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
