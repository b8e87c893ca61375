"""Training backends: thin adapters that run `train_bucket` on each planned task.

Every backend gets the same inputs (gold rows with a ``bucket`` column from the partition
plan) and returns rows of `TASK_RESULT_SCHEMA`: the pure function's result plus the task
attempt that produced it. They differ only in how tasks are shipped to cores:

* ``local`` - a process pool (spawned workers, BLAS pinned to one thread each);
* ``spark`` - ``groupBy(bucket key).applyInPandas``, one bucket per shuffle partition;
* ``ray``   - ``ray.data`` ``groupby("bucket").map_groups``.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Callable, Optional

import pandas as pd
import pyarrow as pa

from engine.errors import ManymodelsError, WorkersLost
from engine.medallion.schemas import spark_ddl
from engine.processes import die_with_parent
from engine.training.entity import RESULT_SCHEMA, TrainSpec, train_entity
from partitions.plan import PartitionPlan

TASK_RESULT_SCHEMA = RESULT_SCHEMA.append(pa.field("attempt", pa.int64()))
# A local worker that dies (OOM, killed) breaks the pool: its tasks rerun up to this many times.
LOCAL_MAX_ATTEMPTS = 3

Progress = Callable[[int], None]   # called with the number of entities just finished
Task = Callable[..., pd.DataFrame]  # (rows, spec, attempt) -> results; `train_bucket` outside tests


def train_bucket(rows: pd.DataFrame, spec: TrainSpec, attempt: int = 0) -> pd.DataFrame:
    """All entities of one task, one after another, with BLAS pinned to one thread so that
    one task per core does not oversubscribe the machine."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        parts = [train_entity(group, spec) for _, group in rows.groupby("entity_id", sort=True)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_SCHEMA.names)
    return out.assign(attempt=attempt)


def resolve_cores(workers: int) -> int:
    return workers or os.cpu_count() or 1


class LocalBackend:
    """A pool of spawned Python processes on this machine; no JVM."""

    name = "local"

    def __init__(self, workers: int = 0, task: Optional[Task] = None):
        self.workers = resolve_cores(workers)
        self.task = task or train_bucket

    @property
    def cores(self) -> int:
        return self.workers

    def train(self, gold: pd.DataFrame, plan: PartitionPlan, spec: TrainSpec,
              progress: Optional[Progress] = None) -> pd.DataFrame:
        tasks = {bucket: rows.drop(columns="bucket") for bucket, rows in gold.groupby("bucket", sort=True)}
        attempts = {bucket: 0 for bucket in tasks}
        results: list[pd.DataFrame] = []
        while tasks:
            try:
                self._run_pool(tasks, attempts, spec, results, progress)
            except BrokenProcessPool:
                for bucket in tasks:
                    attempts[bucket] += 1
                    if attempts[bucket] >= LOCAL_MAX_ATTEMPTS:
                        raise WorkersLost(
                            f"a training worker died {LOCAL_MAX_ATTEMPTS} times on a task with entities "
                            f"{plan.entities_in(bucket)[:10]}: most likely out of memory; lower "
                            "training.workers or training.max_history") from None
        return pd.concat(results, ignore_index=True) if results else TASK_RESULT_SCHEMA.empty_table().to_pandas()

    def _run_pool(self, tasks, attempts, spec, results, progress) -> None:
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(os.getpid(),)) as pool:
            running = {pool.submit(self.task, rows, spec, attempts[b]): b for b, rows in tasks.items()}
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    bucket = running.pop(future)
                    frame = future.result()
                    results.append(frame)
                    del tasks[bucket]
                    if progress:
                        progress(len(frame))


def _init_worker(parent_pid: int) -> None:
    """A worker dies with the job (kill -9 included) and runs BLAS on one thread."""
    from threadpoolctl import threadpool_limits
    die_with_parent(parent_pid)
    threadpool_limits(limits=1)


class SparkBackend:
    """``groupBy(key).applyInPandas`` with exactly one planned bucket per task."""

    name = "spark"

    def __init__(self, spark, task: Optional[Task] = None):
        self.spark = spark
        self.task = task or train_bucket

    @property
    def cores(self) -> int:
        from engine.spark import spark_cores
        return spark_cores(self.spark)

    def train(self, gold, plan: PartitionPlan, spec: TrainSpec, progress: Optional[Progress] = None):
        """`gold` is a Spark DataFrame with a ``bucket`` column; returns a persisted result frame."""
        from pyspark.sql import functions as F
        schema = spark_ddl(TASK_RESULT_SCHEMA)
        entities_done = self.spark.sparkContext.accumulator(0)
        task = self.task

        def run_task(rows: pd.DataFrame) -> pd.DataFrame:
            from pyspark import TaskContext
            context = TaskContext.get()
            out = task(rows.drop(columns=["bucket", "_key"], errors="ignore"), spec,
                       context.attemptNumber() if context else 0)
            entities_done.add(len(out))
            return out

        previous = {k: self.spark.conf.get(k, None) for k in ("spark.sql.shuffle.partitions",
                                                            "spark.sql.adaptive.coalescePartitions.enabled")}
        if plan.strategy == "entity":
            # The naive baseline: one group per entity, Spark's own partitioning and AQE.
            results = gold.drop("bucket").groupBy("entity_id").applyInPandas(lambda rows: run_task(rows), schema)
        else:
            from partitions.spark import SHUFFLE_CONF, partition_keys
            keys = partition_keys(self.spark, plan.buckets)
            mapping = self.spark.createDataFrame([(b, keys[b]) for b in range(plan.buckets)], "bucket int, _key long")
            self.spark.conf.set("spark.sql.shuffle.partitions", str(plan.buckets))
            for key, value in SHUFFLE_CONF.items():
                self.spark.conf.set(key, value)
            keyed = gold.join(F.broadcast(mapping), on="bucket")
            results = keyed.groupBy("_key").applyInPandas(lambda rows: run_task(rows), schema)
        try:
            results = results.persist()
            self._count_with_progress(results, plan, entities_done, progress)
        finally:
            for key, value in previous.items():
                if value is None:
                    self.spark.conf.unset(key)
                else:
                    self.spark.conf.set(key, value)
        return results

    def _count_with_progress(self, results, plan: PartitionPlan, entities_done,
                             progress: Optional[Progress]) -> None:
        """Materialize the results while reporting entities of finished tasks (an accumulator
        the tasks add to; Spark merges it on the driver as each task completes)."""
        done = threading.Event()
        failure: list[BaseException] = []

        def materialize() -> None:
            try:
                results.count()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=materialize, daemon=True)
        worker.start()
        total, reported = len(plan.assignment), 0
        while not done.wait(0.5):
            finished = min(entities_done.value, total - 1)   # a retried task may count twice
            if progress and finished > reported:
                progress(finished - reported)
                reported = finished
        worker.join()
        if failure:
            raise failure[0]
        if progress:
            progress(total - reported)


class RayBackend:
    """``ray.data`` on a local Ray instance (or the cluster in RAY_ADDRESS)."""

    name = "ray"

    def __init__(self, workers: int = 0):
        self.workers = resolve_cores(workers)

    @property
    def cores(self) -> int:
        return self.workers

    def train(self, gold: pd.DataFrame, plan: PartitionPlan, spec: TrainSpec,
              progress: Optional[Progress] = None) -> pd.DataFrame:
        try:
            import ray
        except ImportError:
            raise ManymodelsError("backend 'ray' needs Ray: pip install -e '.[ray]' "
                                  "(or pick backend local or spark)") from None
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if not ray.is_initialized():
            ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else self.workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = progress is not None
        dataset = ray.data.from_pandas([rows for _, rows in gold.groupby("bucket", sort=True)])
        results = (dataset.groupby("bucket")
                   .map_groups(lambda rows: train_bucket(rows.drop(columns="bucket"), spec), batch_format="pandas")
                   .to_pandas())
        if progress:
            progress(len(results))
        return results


def make_backend(name: str, config, spark=None):
    """The backend named in the config (`spark` needs the session)."""
    if name == "local":
        return LocalBackend(config.training.workers)
    if name == "ray":
        return RayBackend(config.training.workers)
    if name == "spark":
        return SparkBackend(spark)
    raise ValueError(f"Unknown training backend: {name!r}")
