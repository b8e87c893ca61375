"""One cell of the cluster benchmark, in its own process: train (and publish) once, print a JSON line.

    python benchmarks/cluster_cell.py '<json cell>'

Run by `benchmarks/cluster.py`, which starts a standalone cluster when the cell needs one and
passes its URL and its workers' process ids (their executors' memory is sampled with the driver's).
The cell's process tree is sampled every 0.2 s: the driver (this Python process and the JVM it
launched) and the executors (Python workers, executor JVMs, Ray workers), each at its peak.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partitions.packing import makespan  # noqa: E402

RESULT = "CELL-RESULT "
# Raised when the engine changes what a run measures, so the report can prefer comparable runs:
# 2 = result writes replace a run's files only (replaceWhere) instead of a MERGE over every run's;
# 3 = MLflow child runs in bulk (engine/tracking/bulk.py) and the statsforecast zoo.
MEASURE_VERSION = 3


class MemorySampler(threading.Thread):
    """Peak resident memory of the driver (this process, its SparkSubmit JVM) and of everything
    else below it or below `extra_roots` (executors), sampled until `stop()`."""

    def __init__(self, extra_roots: list[int], every: float = 0.2):
        super().__init__(daemon=True)
        self.roots, self.every = [psutil.Process(), *map(psutil.Process, extra_roots)], every
        self.peak_driver = self.peak_executors = 0
        self.stage: Optional[str] = None        # set by the caller: the driver's peak per stage too
        self.stage_peaks: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.sample()

    def sample(self) -> None:
        driver = executors = 0
        me = self.roots[0].pid
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    is_driver = proc.pid == me or (proc.ppid() == me and "SparkSubmit" in " ".join(proc.cmdline()))
                except psutil.Error:
                    continue
                if is_driver:
                    driver += rss
                elif proc.pid != root.pid:      # a standalone Worker daemon itself is not an executor
                    executors += rss
        self.peak_driver = max(self.peak_driver, driver)
        self.peak_executors = max(self.peak_executors, executors)
        if self.stage is not None:
            self.stage_peaks[self.stage] = max(self.stage_peaks.get(self.stage, 0), driver)

    def stop(self) -> None:
        self.sample()
        self._done.set()


def task_times(models: pd.DataFrame, plan, spark) -> np.ndarray:
    """Seconds of each task: the planned buckets' fit seconds; the naive plan's Spark tasks are
    its hash partitions of entity ids (how `groupBy(entity_id)` places them)."""
    seconds = models.set_index("entity_id")["fit_seconds"]
    if plan.strategy == "entity" and spark is not None:
        from pyspark.sql import functions as F
        parts = int(spark.conf.get("spark.sql.shuffle.partitions"))
        placed = (spark.createDataFrame(pd.DataFrame({"entity_id": seconds.index}))
                  .select("entity_id", F.expr(f"pmod(hash(entity_id), {parts})").alias("p")).toPandas())
        return seconds.groupby(placed.set_index("entity_id")["p"]).sum().to_numpy()
    return seconds.groupby(pd.Series(plan.assignment)).sum().to_numpy()


def run_cell(cell: dict) -> dict:
    from engine.config import parse_config
    from engine.lake import DeltaRsLake
    from engine.training.job import train
    from engine.training.tables import MODELS

    config = parse_config(cell["config"])
    sampler = MemorySampler(cell.get("worker_pids", []))
    sampler.start()
    spark = None
    started = time.perf_counter()
    if config.backend == "spark":
        from engine.spark import get_spark
        spark = get_spark(config.spark, config.lake)
    session_seconds = time.perf_counter() - started
    report = train(config, backend=config.backend, spark=spark)
    mlflow_seconds = 0.0
    if cell.get("mlflow", True):
        from engine.tracking.publish import publish
        t0 = time.perf_counter()
        publish(config, report.run_id, train_seconds=report.seconds, backend=config.backend)
        mlflow_seconds = time.perf_counter() - t0
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", report.run_id)])
    tasks = task_times(models, report.plan, spark)
    sampler.stop()
    if spark is not None:
        spark.stop()
    if config.backend == "ray":
        import ray
        ray.shutdown()
    fit = models["fit_seconds"].to_numpy()
    p50 = float(np.median(tasks))
    return {"measure_version": MEASURE_VERSION, "entities": report.entities,
            "failures": int(report.statuses.get("failed", 0)), "cores": report.plan.cores, "tasks": len(tasks),
            "wall_seconds": report.seconds["total"], "train_seconds": report.seconds["train"],
            "plan_seconds": report.seconds["plan"], "write_seconds": report.seconds["write"],
            "session_seconds": session_seconds, "mlflow_seconds": mlflow_seconds,
            "entities_per_second": report.entities / report.seconds["total"],
            "fit_seconds_total": float(fit.sum()), "fit_seconds_p50": float(np.median(fit)),
            "fit_seconds_p95": float(np.quantile(fit, 0.95)),
            "task_seconds_p50": p50, "task_seconds_p95": float(np.quantile(tasks, 0.95)),
            "task_seconds_max": float(tasks.max()), "straggler_ratio": float(tasks.max() / p50) if p50 else 0.0,
            "simulated_makespan": makespan(list(tasks), report.plan.cores),
            "driver_peak_mb": sampler.peak_driver / 2 ** 20, "executor_peak_mb": sampler.peak_executors / 2 ** 20}


if __name__ == "__main__":
    print(RESULT + json.dumps(run_cell(json.loads(sys.argv[1]))), flush=True)
