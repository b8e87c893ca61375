"""The cluster benchmark harness: the smallest matrix cell end to end (real Spark, Delta, MLflow,
a process per run, memory sampling, the report and its plots), so the harness cannot rot."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.cluster import Matrix, MatrixError

ROOT = Path(__file__).resolve().parents[2]


# A whole benchmark cell (ingest, train, report) on Spark: `make test-slow` runs it.
@pytest.mark.slow
@pytest.mark.spark
def test_the_smallest_cell_runs_records_a_row_and_draws_the_report(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/cluster.py", "--matrix", "configs/bench/ci.yaml",
                          "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
                          "--sim-cores", "8", "64", "--sim-entities", "1000", "20000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "results" / "cluster.csv")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["matrix"], row["shape"], row["cores"], row["entities"]) == ("ci", "local-1", 1, 12)
    assert row["failures"] == 0 and row["leftover_processes"] == 0 and not isinstance(row["error"], str)
    assert row["entities_per_second"] > 0 and row["mlflow_seconds"] > 0 and row["tasks"] == 4
    assert row["straggler_ratio"] >= 1 and row["task_seconds_p95"] >= row["task_seconds_p50"] > 0
    assert row["driver_peak_mb"] > 100 and row["executor_peak_mb"] > 10      # a JVM; Python workers
    assert row["cost_per_1000_entities"] > 0 and row["cpus"] >= 1 and row["commit"]
    report = (tmp_path / "results" / "cluster_ci.md").read_text()
    assert row["tasks_per_core"] == 4
    assert "| synthetic-12 | seasonal_naive+theta | cost, 4/core | local-1 | 1 |" in report
    simulated = pd.read_csv(tmp_path / "results" / "cluster_ci_simulated.csv")
    assert len(simulated) == 2 * 2 * 2 * 2 * 2      # cores x entities x skew x plan x driver
    lean = simulated.set_index(["entities", "cores", "skew", "strategy", "driver"])["job_seconds"]
    assert (lean.xs("no child runs", level="driver") < lean.xs("measured", level="driver")).all()
    for plot in ("scaling", "stages", "simulated"):
        assert (tmp_path / "results" / "plots" / f"cluster_ci_{plot}.png").stat().st_size > 10_000


def test_a_wrong_matrix_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("shapes: [local-two]\npanels: [{name: p, kind: synthetic}]\nmodels: [[theta]]\n")
    with pytest.raises(MatrixError, match="shape 'local-two' must be local-N, standalone-N or ray-N"):
        Matrix.load(bad)
    bad.write_text("shapes: [local-1]\npanels: [{name: p, kind: synthetic}]\nmodels: [[theta]]\nspeed: 3\n")
    with pytest.raises(MatrixError, match=r"unknown key\(s\) \['speed'\]"):
        Matrix.load(bad)
    out = subprocess.run([sys.executable, "benchmarks/cluster.py", "--matrix", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "unknown key" in out.stderr
    out = subprocess.run([sys.executable, "benchmarks/cluster.py", "--matrix", "configs/bench/ci.yaml",
                          "--panels", "nope", "--report-only"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--panels ['nope'] are not in the matrix's panels ['synthetic-12']" in out.stderr


def test_the_simulators_overheads_are_recovered_from_runs_with_different_tasks_per_core():
    """Runs built from a known stage cost (9 s + 0.5 s per task per core) and driver cost
    (20 s + 30 ms per entity): the report's lines must give those back."""
    from benchmarks.cluster_report import overheads

    runs = []
    for entities, tasks_per_core, cores in itertools.product((200, 1000), (1, 4, 16), (1, 2)):
        makespan = entities * 0.1 / cores
        runs.append({"backend": "local", "entities": entities, "tasks": tasks_per_core * cores, "cores": cores,
                     "simulated_makespan": makespan, "train_seconds": makespan + 9 + 0.5 * tasks_per_core,
                     "session_seconds": 5.0, "plan_seconds": 10 + 0.01 * entities, "write_seconds": 5.0,
                     "mlflow_seconds": 0.02 * entities, "fit_seconds_p50": 0.1, "fit_seconds_p95": 0.2})
    frame = pd.DataFrame(runs).assign(measure_version=2)
    stale = frame.assign(measure_version=1, write_seconds=frame["write_seconds"] * 3)   # older engine: ignored
    costs, p50, sigma, split, mlflow = overheads(frame, pd.concat([frame, stale]))
    assert costs.stage_seconds == pytest.approx(9) and costs.task_seconds == pytest.approx(0.5)
    assert costs.job_seconds == pytest.approx(20) and costs.driver_per_entity == pytest.approx(0.03)
    assert mlflow == pytest.approx(0.02) and p50 == 0.1 and sigma == pytest.approx(np.log(2) / 1.645)
    assert "3 task counts per core (12 newest runs)" in split and "2 panel sizes (12 newest runs)" in split



def test_the_driver_before_and_after_differs_only_in_each_versions_driver_line():
    """Two measure versions whose runs carry a known driver line (version 2: 20 s + 30 ms per
    entity; version 3: 20 s + 2 ms per entity): the table gives those lines back, and with
    everything else shared, the cheaper driver is the more efficient job on every core count."""
    from benchmarks.cluster_report import before_after_markdown, driver_before_after

    runs = []
    for version, per_entity in ((2, 0.030), (3, 0.002)):
        for entities, tasks_per_core in itertools.product((1000, 10000), (1, 4)):
            makespan = entities * 0.05 / 2
            runs.append({"backend": "local", "measure_version": version, "entities": entities,
                         "tasks": 2 * tasks_per_core, "cores": 2, "simulated_makespan": makespan,
                         "train_seconds": makespan + 9 + 0.5 * tasks_per_core, "session_seconds": 5.0,
                         "plan_seconds": 10.0, "write_seconds": 5.0, "mlflow_seconds": per_entity * entities,
                         "fit_seconds_p50": 0.05, "fit_seconds_p95": 0.1})
    every = pd.DataFrame(runs)
    table = driver_before_after(every[every["measure_version"] == 3], every, cores=(64, 1024), entities=100_000)
    lines = table.set_index(["measure_version", "cores"])
    assert lines.loc[(2, 64), "driver_ms_per_entity"] == pytest.approx(30)
    assert lines.loc[(3, 64), "driver_ms_per_entity"] == pytest.approx(2)
    assert lines.loc[(3, 64), "driver_job_seconds"] == pytest.approx(20)
    for cores in (64, 1024):
        assert lines.loc[(2, cores), "makespan_seconds"] == lines.loc[(3, cores), "makespan_seconds"]
        assert lines.loc[(3, cores), "efficiency"] > lines.loc[(2, cores), "efficiency"]
    assert lines.loc[(3, 64), "serial_seconds"] == pytest.approx(20 + 100_000 * 0.002)
    assert "| 3 | 2.0 | 20.0 |" in before_after_markdown(table)
