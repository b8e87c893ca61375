"""Shared fixtures: a session-scoped local Spark with Delta Lake, object-store servers on
127.0.0.1 (an S3 server and Azurite, started by scripts/object-store.sh), and config builders."""
from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.common import free_port
from engine.config import Config, parse_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "object-store.sh"
# moto accepts any key pair; these stand in for real credentials, read from the environment.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "manymodels-test", "AWS_SECRET_ACCESS_KEY": "manymodels-test-secret"}


def make_config(root: Path, **overrides) -> Config:
    """A small valid config on the lake folder `root`; keyword overrides replace top-level keys."""
    data = {"name": "test", "lake": {"root": str(root)},
            "mlflow": {"tracking_uri": f"sqlite:///{Path(root).parent / 'mlflow.db'}", "experiment": "test"},
            "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
            "source": {"kind": "synthetic", "exogenous": ["temperature"],
                       "synthetic": {"entities": 4, "periods": 24 * 28, "seed": 7}},
            "series": {"freq": "h", "season_lengths": [24, 168]},
            "backend": "local"}
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
