"""The lake on object storage: the nightly job, analysts' pulls, the lease, replays and faults
against real servers on 127.0.0.1 (moto's S3 server, Azurite), with no lake folder on disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from engine.config import LakeConfig, StorageConfig, load_config, parse_config
from engine.errors import ConfigError
from engine.faults import ENV as CRASH_ENV
from engine.lake import DeltaRsLake, SparkLake
from engine.nightly.lease import LakeBusy, LakeLease, holder_of
from engine.nightly.ledger import NIGHTS
from engine.storage import LakeStore, StorageError
from engine.training.tables import FORECASTS
from benchmarks.common import free_port
from tests.conftest import NIGHT_1, NIGHT_2, assert_exactly_once, nightly, summary_line, tracking_uri

HORIZON = 24


def store_config(tmp_path: Path, server, name: str, backend: str = "local", **extra) -> str:
    """A nightly config whose lake is a fresh bucket/container on `server`; MLflow stays on sqlite."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "lake": {"root": server.new_root(name), "storage": server.storage()}, "backend": backend,
        "spark": {"master": "local[2]", "ui": False, "shuffle_partitions": 2},
        "mlflow": {"tracking_uri": tracking_uri(tmp_path / "mlflow.db"), "experiment": f"{name}-test",
                   "registered_model": f"{name}-router"},
        "source": {"kind": "synthetic", "exogenous": ["temperature"],
                   "synthetic": {"entities": 3, "periods": 24 * 24, "seed": 4}},
        "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": HORIZON,
        "backtest": {"windows": 1, "step": 24}, "models": ["seasonal_naive", "theta"],
        "training": {"workers": 2}, **extra}))
    return str(path)


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=timeout)


def pull_csv(config: str, tmp_path: Path, *args: str) -> pd.DataFrame:
    out = tmp_path / f"pull-{len(list(tmp_path.glob('pull-*')))}.csv"
    done = cli("forecasts", "pull", "--config", config, "--format", "csv", "--output", str(out), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return pd.read_csv(out)


def assert_no_local_lake(tmp_path: Path, config: str) -> None:
    """Nothing of the lake landed on the local disk (no folder named after the URI, no lock file)."""
    root = load_config(config).lake.root
    leaked = [p for p in Path.cwd().glob("s3*:") if p.is_dir()] + list(tmp_path.rglob("_manymodels"))
    assert not leaked, f"lake {root} wrote local files: {leaked}"


# --- the whole nightly ----------------------------------------------------------------------------


# ADLS (the reference architecture) by default; S3 also runs in the cluster and tracking-server tests.
@pytest.mark.parametrize("kind", [pytest.param("s3", marks=pytest.mark.slow), "azure"])
def test_local_backend_nightly_on_object_storage_then_replay_pull_and_time_travel(tmp_path, kind, request):
    server = request.getfixturevalue("s3_server" if kind == "s3" else "azurite")
    config = store_config(tmp_path, server, f"rs-{kind}")
    first = summary_line(nightly(config, "--as-of", NIGHT_1))
    second = summary_line(nightly(config, "--as-of", NIGHT_2))
    assert "version 1 promoted" in first and "3 entities" in second
    lake = DeltaRsLake(load_config(config).lake)
    assert_exactly_once(lake)
    assert set(lake.read(NIGHTS)["stage"]) == {"train", "mlflow", "score", "done"}

    # Both nights were replays of history (--as-of); running the second again changes nothing.
    versions = {t: lake.version(t) for t in (FORECASTS, "gold/series", NIGHTS)}
    again = nightly(config, "--as-of", NIGHT_2)
    summary_line(again)
    assert "is already complete for these inputs" in again.stdout
    assert {t: lake.version(t) for t in versions} == versions

    # Analysts pull from the bucket without Spark: the latest origin, then the first night's.
    latest = pull_csv(config, tmp_path)
    assert len(latest) == 3 * HORIZON and latest["forecast_origin"].nunique() == 1
    earlier = pull_csv(config, tmp_path, "--origin", "2022-01-19T23:00")
    assert len(earlier) == 3 * HORIZON and earlier["y"].notna().all()       # the second night saw its actuals

    # Delta time travel on the store: gold at its first version ends a day earlier.
    first_gold = lake.read("gold/series", version=lake.version("gold/series") - 1)
    assert first_gold["ds"].max() < lake.read("gold/series")["ds"].max()
    assert_no_local_lake(tmp_path, config)


# The default suite runs the same night on Spark against S3 on a standalone cluster (below).
@pytest.mark.slow
def test_spark_nightly_on_s3_then_pull_without_a_jvm(tmp_path, s3_server, spark):
    config = store_config(tmp_path, s3_server, "spark-s3", backend="spark")
    summary = summary_line(nightly(config, "--as-of", NIGHT_1, timeout=600))
    assert "version 1 promoted" in summary and "3 entities" in summary
    lake_config = load_config(config).lake
    lake = DeltaRsLake(lake_config)
    assert_exactly_once(lake)
    # Spark (s3a://) and delta-rs (s3://) read the same tables.
    via_spark = SparkLake(spark, lake_config).read(FORECASTS).count()
    assert via_spark == len(lake.read(FORECASTS)) == 3 * HORIZON
    # The pull runs in a process that never imports pyspark.
    probe = ("import sys, runpy; sys.argv = ['manymodels', 'forecasts', 'pull', '--config', sys.argv[1], "
             "'--format', 'csv', '--output', sys.argv[2]]\n"
             "from engine.cli import main\ncode = main(sys.argv[1:])\n"
             "assert 'pyspark' not in sys.modules, 'pull imported pyspark'\nsys.exit(code)")
    out = tmp_path / "pulled.csv"
    done = subprocess.run([sys.executable, "-c", probe, config, str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(pd.read_csv(out)) == 3 * HORIZON


# --- one night at a time ------------------------------------------------------------------------


def test_two_nightly_processes_race_on_s3_one_runs_the_other_exits_75_naming_the_holder(tmp_path, s3_server):
    config = store_config(tmp_path, s3_server, "race")
    lake = load_config(config).lake
    command = [sys.executable, "-m", "engine", "nightly", "--config", config, "--no-progress", "--as-of", NIGHT_1]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **{CRASH_ENV: ""}))
    deadline = time.monotonic() + 120
    while holder_of(lake) is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    second = nightly(config, "--as-of", NIGHT_1)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 75, second.stdout + second.stderr
    assert second.stderr.startswith("busy: another job (manymodels nightly 'race', pid ")
    assert f"pid {first.pid} on " in second.stderr and "this run made no change" in second.stderr
    assert "Traceback" not in second.stderr
    assert_exactly_once(DeltaRsLake(lake))


def test_a_killed_holder_does_not_block_the_next_night(tmp_path, s3_server):
    config = store_config(tmp_path, s3_server, "killed")
    killed = nightly(config, "--as-of", NIGHT_1, crash_at="after-write:score")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert holder_of(load_config(config).lake) is not None         # its lease was never released
    summary = summary_line(nightly(config, "--as-of", NIGHT_1))      # same host, holder gone: taken at once
    assert "3 entities" in summary
    assert_exactly_once(DeltaRsLake(load_config(config).lake))


def test_a_lease_held_from_another_machine_expires_after_its_ttl(s3_server):
    lake = LakeConfig(root=s3_server.new_root("expiry"), storage=StorageConfig(**s3_server.storage()))
    remote = LakeLease(lake, "manymodels nightly 'elsewhere'", ttl=2.0, host="another-machine")
    remote.__enter__()
    remote._stop.set()                 # the machine died: no renewal, no release
    remote._renewer.join()
    with pytest.raises(LakeBusy, match="manymodels nightly 'elsewhere', pid .* on another-machine"):
        with LakeLease(lake, "second", timeout=0):
            pass
    with LakeLease(lake, "third", timeout=10):          # waits out the ttl, then takes the lake
        assert "third" in holder_of(lake)
    assert holder_of(lake) is None


def test_renewals_keep_a_long_job_holding_the_lease(s3_server):
    lake = LakeConfig(root=s3_server.new_root("renew"), storage=StorageConfig(**s3_server.storage()))
    with LakeLease(lake, "long job", ttl=1.5) as lease:
        time.sleep(3.5)                 # more than twice the ttl
        with pytest.raises(LakeBusy, match="long job"):
            with LakeLease(lake, "intruder", timeout=0, host="another-machine"):
                pass
        lease.ensure_held()


# --- faults -------------------------------------------------------------------------------------


def test_an_unsupported_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unsupported scheme hdfs:// .*use a local path, file://, s3://"):
        parse_config({"name": "x", "lake": {"root": "hdfs://namenode/lake"}})
    with pytest.raises(ConfigError, match="lake.storage.account"):
        parse_config({"name": "x", "lake": {"root": "az://container/lake"}})
    with pytest.raises(ConfigError, match="environment variable name"):
        parse_config({"name": "x", "lake": {"root": "s3://b/lake", "storage": {
            "credentials": {"secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}}})


def test_spark_and_delta_rs_get_their_own_schemes_from_one_root():
    s3 = LakeStore.of(LakeConfig(root="s3a://bucket/a/lake"))
    assert (s3.rs_path("gold/series"), s3.spark_path("gold/series")) == ("s3://bucket/a/lake/gold/series",
                                                                         "s3a://bucket/a/lake/gold/series")
    adls = LakeStore.of(LakeConfig(root="abfss://lake@acct.dfs.core.windows.net/x"))
    assert adls.rs_path("t") == "az://lake/x/t" and adls.spark_path("t") == "abfss://lake@acct.dfs.core.windows.net/x/t"
    assert adls.storage_options()["azure_storage_account_name"] == "acct"
    assert LakeStore.of(LakeConfig(root="az://lake/x", storage=StorageConfig(account="acct"))).spark_root == \
        adls.spark_root
    assert LakeStore.of(LakeConfig(root="file:///tmp/lake")).rs_root == "/tmp/lake"
    gcs = LakeStore.of(LakeConfig(root="gs://bucket/lake"))
    assert gcs.rs_path("t") == gcs.spark_path("t") == "gs://bucket/lake/t"
    assert gcs.spark_conf()["spark.hadoop.fs.gs.impl"] == "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"


def test_credentials_come_from_the_named_variables_into_both_clients(monkeypatch):
    monkeypatch.setenv("MY_KEY", "account-key-value")
    store = LakeStore.of(LakeConfig(root="abfss://lake@acct.dfs.core.windows.net/x",
                                    storage=StorageConfig(credentials={"account_key": "MY_KEY"})))
    assert store.storage_options()["azure_storage_account_key"] == "account-key-value"
    assert store.spark_conf()["spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net"] == "account-key-value"
    assert store.spark_packages() == ["org.apache.hadoop:hadoop-azure:3.5.0"]
    assert "account-key-value" not in store.describe()
    assert LakeStore.of(LakeConfig(root="./lake")).spark_packages() == []
    with pytest.raises(StorageError, match="emulator"):
        LakeStore.of(LakeConfig(root="az://c/x", storage=StorageConfig(emulator=True))).spark_packages()


def one_line_error(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_an_unknown_bucket_or_container_and_wrong_credentials_are_one_line_each(tmp_path, s3_server, azurite,
                                                                               monkeypatch):
    s3 = store_config(tmp_path, s3_server, "nobucket")
    data = yaml.safe_load(Path(s3).read_text())
    data["lake"]["root"] = "s3://no-such-bucket/lake"
    Path(s3).write_text(yaml.safe_dump(data))
    line = one_line_error(cli("ingest", "--config", s3), 2)
    assert line == (f"error: S3 at {s3_server.endpoint}, lake s3://no-such-bucket/lake: the bucket does not exist; "
                    "create it, or fix lake.root")

    az = store_config(tmp_path, azurite, "badkey")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "d3Jvbmcta2V5LW5vdC10aGUtZW11bGF0b3JzLWtleQ==")
    line = one_line_error(cli("nightly", "--config", az, "--no-progress"), 2)
    assert "refused the credentials: set AZURE_STORAGE_ACCOUNT_KEY" in line and "d3Jvbmct" not in line


def test_an_unreachable_endpoint_fails_fast_with_one_line(tmp_path, s3_server):
    config = store_config(tmp_path, s3_server, "unreachable")
    data = yaml.safe_load(Path(config).read_text())
    data["lake"]["storage"]["endpoint"] = f"http://127.0.0.1:{free_port()}"      # nothing listens there
    Path(config).write_text(yaml.safe_dump(data))
    started = time.monotonic()
    line = one_line_error(cli("nightly", "--config", config, "--no-progress", timeout=120), 1)
    assert time.monotonic() - started < 60
    assert line.startswith("error: cannot reach S3 at http://127.0.0.1:") and "check lake.storage.endpoint" in line


def test_the_store_stopping_mid_night_then_a_rerun_finishes_the_night_exactly_once(tmp_path, azurite):
    config = store_config(tmp_path, azurite, "outage", models=["seasonal_naive", "theta", "ets"])
    command = [sys.executable, "-m", "engine", "nightly", "--config", config, "--no-progress", "--as-of", NIGHT_1]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, **{CRASH_ENV: ""}))
    lake = DeltaRsLake(load_config(config).lake)
    deadline = time.monotonic() + 180
    while not lake.exists("gold/series") and time.monotonic() < deadline:       # mid-night: after ingest
        time.sleep(0.2)
    azurite.stop()
    try:
        out, err = job.communicate(timeout=300)
    finally:
        azurite.start()
    assert job.returncode == 1, out + err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    summary = summary_line(nightly(config, "--as-of", NIGHT_1))
    assert "3 entities" in summary
    assert_exactly_once(lake)
    done = lake.read(NIGHTS)
    assert (done["stage"] == "done").sum() == 1


@pytest.mark.spark
@pytest.mark.slow      # a master, two workers and a nightly on them (~4 min)
def test_a_two_worker_standalone_cluster_trains_and_scores_against_the_s3_lake(tmp_path, s3_server):
    """Master, two workers and the driver share no lake folder: every table is on the S3 server,
    the workers run in folders of their own, and the model reaches them through Spark, not a disk."""
    from benchmarks.standalone import StandaloneCluster

    config = store_config(tmp_path, s3_server, "cluster", backend="spark")
    with StandaloneCluster(workers=2, cores=1, log_dir=str(tmp_path / "cluster")) as cluster:
        data = yaml.safe_load(Path(config).read_text())
        data["spark"]["master"] = cluster.url
        Path(config).write_text(yaml.safe_dump(data))
        summary = summary_line(nightly(config, "--as-of", NIGHT_1, timeout=900))
        apps = list((tmp_path / "cluster" / "work").glob("app-*/*"))
    assert "3 entities (ok 3)" in summary and "version 1 promoted" in summary
    assert "champion scored 72 rows" in summary
    assert len({p.name for p in apps}) >= 2                      # executors on both workers, each in its own folder
    assert_exactly_once(DeltaRsLake(load_config(config).lake))
    assert not list(tmp_path.rglob("_delta_log"))                # no table on the local disk


def test_the_cluster_example_config_works_once_its_bucket_and_endpoint_are_replaced(s3_server, spark):
    root = Path(__file__).resolve().parents[2]
    bucket = s3_server.new_root("example").split("/")[2]
    config = load_config(root / "configs" / "cluster.example.yaml", {
        "lake.root": f"s3://{bucket}/manymodels/lakehouse", "lake.storage.endpoint": s3_server.endpoint,
        "lake.storage.path_style": True, "lake.storage.allow_http": True})
    LakeStore.of(config.lake).check()
    import pyarrow as pa
    rows = pd.DataFrame({"entity_id": ["zone_1"], "y": [1.5]})
    schema = pa.schema([("entity_id", pa.string()), ("y", pa.float64())])
    DeltaRsLake(config.lake).overwrite("gold/probe", rows, schema)
    assert SparkLake(spark, config.lake).read("gold/probe").toPandas().equals(rows)
