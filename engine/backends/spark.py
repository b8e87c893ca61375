"""The Spark backend: Spark DataFrames, Delta through delta-spark, per-entity work in
`applyInPandas` with exactly one planned bucket per task, searches on SparkTrials."""
from __future__ import annotations

import io
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.backends.base import Backend, GroupFn
from engine.lake import BRONZE_META, PART, PART_KEY, SparkLake, bronze_table, insert_predicate, observed_before
from engine.medallion.schemas import spark_ddl
from engine.training.tasks import TASK_RESULT_SCHEMA, Progress, Task, train_bucket
from partitions.plan import PartitionPlan

STAGE_ROWS = 1_000_000     # above this many rows a driver-side frame reaches Spark as staged Parquet files
SCHEMA_SAMPLE = 1_000      # rows createDataFrame infers the staged frame's column types from
STAGING = "_staging"       # folder under the lake root for those files, deleted after each use
TASK_ROWS = 1_000_000      # rows per task of a per-entity step whose input size is known


class SparkBackend(Backend):
    """Spark frames, Delta through delta-spark: groups run in `applyInPandas`."""

    name = "spark"

    def __init__(self, spark, lake=None, task: Optional[Task] = None):
        self.spark = spark
        self.lake = SparkLake(spark, lake) if lake is not None else None
        self.task = task or train_bucket

    @classmethod
    def from_config(cls, config, spark=None) -> "SparkBackend":
        from engine.spark import get_spark
        return cls(spark or get_spark(config.spark, config.lake), config.lake)

    # -- frames ---------------------------------------------------------------------------
    def from_pandas(self, frame: pd.DataFrame):
        return self.spark.createDataFrame(_strings_for_empty_columns(frame))

    def to_pandas(self, frame) -> pd.DataFrame:
        return frame.toPandas()

    def read(self, table: str, version: Optional[int] = None, entities: Optional[Sequence[str]] = None):
        rows = self.lake.read(table, version=version)
        return self.keep_entities(rows, entities) if entities is not None else rows

    def read_bronze(self, dataset: str, exclude_batches: Sequence[str]):
        from pyspark.sql import functions as F
        rows = self.lake.read(bronze_table(dataset))
        return rows.filter(~F.col("_batch_id").isin(list(exclude_batches))) if exclude_batches else rows

    def select(self, frame, columns: Sequence[str]):
        return frame.select(*columns)

    def keep_entities(self, frame, entities: Sequence[str]):
        from pyspark.sql import functions as F
        return frame.filter(F.col("entity_id").isin(list(entities)))

    def apply_by(self, frame, key: str, fn: GroupFn, schema: pa.Schema, rows: Optional[int] = None):
        # spark.shuffle_partitions suits small panels; 67M gold rows in 4 tasks made partitions
        # of 17M rows, whose cached blocks ran local mode's 1 GB JVM out of memory. A known size
        # gets at least one task per TASK_ROWS rows (the groupBy reuses this partitioning).
        tasks = -(-rows // TASK_ROWS) if rows else 0
        if tasks > int(self.spark.conf.get("spark.sql.shuffle.partitions")):
            frame = frame.repartition(tasks, key)
        # A plain function: Spark reads the arity of what it gets, and a callable object's
        # __call__ counts `self`, which would make Spark pass the group key too.
        return frame.groupBy(key).applyInPandas(lambda group: fn(group), spark_ddl(schema))

    def map_groups(self, frame, key: str, fn: GroupFn, schema: pa.Schema):
        return self.apply_by(frame, key, fn, schema)

    def map_batches(self, frame, fn: GroupFn, schema: pa.Schema):
        def batches(parts):
            for part in parts:
                yield fn(part)
        return frame.mapInPandas(batches, spark_ddl(schema))

    def add_exogenous(self, frame, shared: pd.DataFrame, holidays: Optional[pd.DataFrame]):
        from pyspark.sql import functions as F
        if len(shared.columns) > 1:
            frame = frame.join(F.broadcast(self.spark.createDataFrame(shared)), on="ds", how="left")
        if holidays is not None:
            dates = [d.isoformat() for d in holidays["date"]]
            frame = frame.withColumn("is_holiday", F.to_date("ds").cast("string").isin(dates).cast("double"))
        return frame

    def bronze_ranges(self, frame, rows: int):
        from pyspark.sql import functions as F
        part = F.floor(F.col("_row") / rows).cast("long")
        return (frame.withColumn(PART, part)
                .withColumn(PART_KEY, F.concat_ws(":", F.col("_batch_id"), part.cast("string"))))

    def bronze_columns(self, frame) -> dict[str, tuple[str, ...]]:
        from pyspark.sql import functions as F
        raw = [c for c in frame.columns if c not in BRONZE_META]
        # One pass: per batch, how many rows hold a value in each column.
        counts = frame.groupBy("_batch_id").agg(*(F.count(F.col(f"`{c}`")).alias(f"n{i}") for i, c in enumerate(raw)))
        return {row["_batch_id"]: tuple(c for i, c in enumerate(raw) if row[f"n{i}"]) for row in counts.collect()}

    def overwrite(self, table: str, frame, schema: pa.Schema, clustered_by: Optional[str] = None,
                  entities: Optional[Sequence[str]] = None) -> int:
        return self.lake.overwrite(table, frame, schema, clustered_by, entities)

    def holds_batch(self, table: str, batch_id: str) -> bool:
        from pyspark.sql import functions as F
        if not self.lake.exists(table):
            return False
        return bool(self.lake.read(table).filter(F.col("_batch_id") == batch_id).select("_row").take(1))

    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int:
        condition = insert_predicate(frame, keys)
        with self._on_spark(frame) as rows:
            return self.lake.insert_new(table, rows, keys, condition)

    @contextmanager
    def _on_spark(self, frame: pd.DataFrame):
        """`frame` as a Spark DataFrame while the block runs. `createDataFrame` ships every row
        through the driver's JVM and keeps them there (a 6.7M-row bronze batch ran the default 1 GB
        driver out of heap), so a large frame goes as Parquet files under the lake's `_staging/`
        (on the lake's own store: no shared disk needed), which the executors read and which are
        deleted afterwards. Either way the columns have the types `createDataFrame` gives them."""
        if len(frame) <= STAGE_ROWS or self.lake is None:
            yield self.from_pandas(frame)
            return
        from pyspark.sql import functions as F
        frame = _strings_for_empty_columns(frame)
        schema = self.from_pandas(frame.head(SCHEMA_SAMPLE)).schema
        folder = f"{STAGING}/{uuid.uuid4().hex}"
        store = self.lake.store
        try:
            for part, start in enumerate(range(0, len(frame), STAGE_ROWS)):
                chunk = pa.Table.from_pandas(frame.iloc[start:start + STAGE_ROWS], preserve_index=False)
                buffer = io.BytesIO()
                # Spark reads microsecond timestamps (pandas' nanoseconds it refuses).
                pq.write_table(chunk, buffer, coerce_timestamps="us", allow_truncated_timestamps=True)
                store.put_object(f"{folder}/part-{part:05d}.parquet", buffer.getvalue())
            staged = self.spark.read.parquet(store.spark_path(folder))
            # Naive timestamps read back as TIMESTAMP_NTZ; the cast reads them in the session's
            # time zone, as createDataFrame does.
            yield staged.select(*(F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields))
        finally:
            store.delete_prefix(folder)

    def summarize(self, frame, flags: Sequence[str]) -> dict:
        from pyspark.sql import functions as F
        row = frame.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("entity_id").alias("entities"),
                        *(F.sum(F.col(f).cast("long")).alias(f) for f in flags)).first()
        return {k: int(row[k] or 0) for k in row.asDict()}

    def last_observed(self, frame, before: Optional[pd.Timestamp] = None) -> Optional[pd.Timestamp]:
        from pyspark.sql import functions as F
        seen = F.col("y").isNotNull() & ~F.isnan("y")
        # toPandas, not collect: it honours the session time zone (UTC) instead of the host's.
        last = observed_before(frame, before).filter(seen).agg(F.max("ds").alias("last")).toPandas()["last"].iloc[0]
        return None if pd.isna(last) else pd.Timestamp(last).tz_localize("UTC")

    def is_empty(self, frame) -> bool:
        return frame.isEmpty()

    def lengths(self, frame) -> dict[str, int]:
        return {r["entity_id"]: int(r["count"]) for r in frame.groupBy("entity_id").count().collect()}

    def edge_stats(self, silver) -> pd.DataFrame:
        from pyspark.sql import functions as F
        on_grid = ~F.col("flag_off_grid")
        valid = on_grid & F.col("y").isNotNull() & ~F.isnan("y")
        stats = silver.groupBy("entity_id").agg(
            F.count(F.lit(1)).alias("received"), F.count(F.when(on_grid, 1)).alias("rows"),
            F.max(on_grid & F.col("flag_bad_id")).alias("bad_id"), F.count(F.when(valid, 1)).alias("valid"),
            F.max(F.when(on_grid, F.col("ds"))).alias("last_received"),
            F.max(F.when(valid, F.col("ds"))).alias("last_valid"),
            F.max(F.when(on_grid & F.col("flag_invalid"), F.col("ds"))).alias("last_invalid"))
        # Only the entities with a problem reach the driver (cleaning.edge_rows says which).
        worth = ((F.col("rows") == 0) | F.col("bad_id") | (F.col("valid") == 0)
                 | (F.col("last_invalid") > F.col("last_valid")))
        return self.to_pandas(stats.filter(worth))

    def extents(self, gold) -> pd.DataFrame:
        from pyspark.sql import functions as F
        observed = F.col("y").isNotNull() & ~F.isnan("y")
        return (gold.groupBy("entity_id")
                .agg(F.count(F.lit(1)).alias("rows"), F.sum(observed.cast("int")).alias("observed"),
                     F.max(F.when(observed, F.col("ds"))).alias("last_observed"),
                     F.avg(F.when(observed, F.col("y"))).alias("mean"),
                     F.stddev(F.when(observed, F.col("y"))).alias("std"))
                .toPandas().assign(observed=lambda f: f["observed"].fillna(0).astype(int)))

    def persist(self, frame):
        return frame.persist()

    def release(self, frame) -> None:
        frame.unpersist()

    # -- per-entity work ------------------------------------------------------------------
    @property
    def cores(self) -> int:
        from engine.spark import spark_cores
        return spark_cores(self.spark)

    def tag_with_plan(self, gold, mapping: pd.DataFrame):
        from pyspark.sql import functions as F
        small = F.broadcast(self.spark.createDataFrame(mapping, "entity_id string, bucket int, cutoff timestamp"))
        tagged = gold.join(small, on="entity_id")
        return tagged.filter(F.col("cutoff").isNull() | (F.col("ds") >= F.col("cutoff"))).drop("cutoff")

    def train(self, planned, plan: PartitionPlan, spec, progress: Optional[Progress] = None):
        """`planned` has a ``bucket`` column; returns a persisted result frame."""
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
            results = planned.drop("bucket").groupBy("entity_id").applyInPandas(lambda rows: run_task(rows), schema)
        else:
            from partitions.spark import SHUFFLE_CONF, partition_keys
            keys = partition_keys(self.spark, plan.buckets)
            mapping = self.spark.createDataFrame([(b, keys[b]) for b in range(plan.buckets)], "bucket int, _key long")
            self.spark.conf.set("spark.sql.shuffle.partitions", str(plan.buckets))
            for key, value in SHUFFLE_CONF.items():
                self.spark.conf.set(key, value)
            keyed = planned.join(F.broadcast(mapping), on="bucket")
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

    def ship(self, folder: str) -> Callable[[], str]:
        from pyspark import SparkFiles
        # A cluster takes no local folder in addFile ("does not support local directories when not
        # running local mode"): ship the folder as one zip that every executor unpacks.
        archive = shutil.make_archive(str(Path(folder).parent / f"{Path(folder).parent.name}-model"), "zip", folder)
        name = Path(archive).name
        self.spark.sparkContext.addArchive(archive)
        return lambda: SparkFiles.get(name)

    # -- hyperparameter search ------------------------------------------------------------
    def share(self, value):
        return self.spark.sparkContext.broadcast(value)

    def unshare(self, handle) -> None:
        handle.unpersist()

    def run_once(self, fn: Callable[[], Any]) -> Any:
        return self.spark.sparkContext.parallelize([0], 1).map(lambda _: fn()).collect()[0]

    def trials(self, parallelism: int, timeout: Optional[float]):
        from hyperopt import SparkTrials
        return SparkTrials(parallelism=parallelism, timeout=timeout, spark_session=self.spark)

    def search_parallelism(self, configured: int) -> int:
        return configured or self.cores

    def describe_trials(self, parallelism: int) -> str:
        return f"SparkTrials(parallelism={parallelism})"

    @property
    def trials_own_timeout(self) -> bool:
        return True


def _strings_for_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Spark cannot infer a type for a column with no values; raw columns are strings."""
    empty = [c for c in frame.columns if frame[c].isna().all() and frame[c].dtype == object]
    return frame.astype({c: "string" for c in empty}) if empty else frame
