"""The benchmark harness's Spark standalone cluster: real master and workers on 127.0.0.1
running the real training job, and nothing left running after it stops."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from benchmarks.standalone import StandaloneCluster


def manymodels(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=600)


# The default suite runs a standalone cluster against the S3 lake (tests/engine/test_storage.py).
@pytest.mark.slow
@pytest.mark.spark
def test_training_runs_on_a_two_worker_standalone_cluster_and_stop_leaves_nothing(tmp_path):
    config = tmp_path / "job.yaml"
    settings = {"name": "standalone", "lake": {"root": str(tmp_path / "lake")}, "backend": "spark",
                "spark": {"ui": False, "shuffle_partitions": 2},
                "source": {"kind": "synthetic", "exogenous": ["temperature"],
                           "synthetic": {"entities": 4, "periods": 24 * 21, "seed": 3}},
                "series": {"freq": "h", "season_lengths": [24]}, "horizon": 24,
                "backtest": {"windows": 1, "step": 24, "metric": "mae"}, "models": ["seasonal_naive", "theta"]}
    config.write_text(yaml.safe_dump(settings))
    assert manymodels("ingest", "--config", str(config), "--backend", "local").returncode == 0

    cluster = StandaloneCluster(workers=2, cores=1, log_dir=str(tmp_path / "cluster"))
    with cluster:
        assert len([w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]) == 2
        settings["spark"]["master"] = cluster.url
        config.write_text(yaml.safe_dump(settings))
        out = manymodels("train", "--config", str(config), "--no-mlflow", "--no-progress")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "on 2 cores" in out.stdout and "entities: 4 (ok 4)" in out.stdout
        assert len(cluster.leftovers()) >= 3          # master, workers (and their executors) run
    assert cluster.processes == [] and cluster.leftovers() == []


PROBE = """
import sys
from engine.config import SparkConfig
from engine.spark import get_spark, spark_cores
spark = get_spark(SparkConfig(master=sys.argv[1], ui=False))
print(spark.sparkContext.defaultParallelism, spark_cores(spark))
spark.stop()
"""


@pytest.mark.slow
@pytest.mark.spark
def test_a_one_core_worker_is_planned_as_one_core_not_sparks_parallelism_floor_of_two(tmp_path):
    # Its own process: the suite's local session would otherwise be the active one.
    with StandaloneCluster(workers=1, cores=1, log_dir=str(tmp_path / "cluster")) as cluster:
        out = subprocess.run([sys.executable, "-c", PROBE, cluster.url], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["2", "1"]       # Spark's floor of 2 on a cluster; one real slot
    assert cluster.leftovers() == []
