"""Thin frame backends for the medallion: the same pure functions over pandas or Spark.

Each backend differs only in how it reads, groups, joins and writes; the per-batch parsers
and per-entity cleaners in `engine.medallion.cleaning` and `engine.sources` are shared.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import pandas as pd
import pyarrow as pa

from engine.lake import DeltaRsLake, SparkLake, bronze_table, observed_before
from engine.medallion.schemas import spark_ddl

GroupFn = Callable[[pd.DataFrame], pd.DataFrame]


class LocalFrames:
    """pandas frames, Delta through delta-rs: no JVM."""

    def __init__(self, lake: DeltaRsLake):
        self.lake = lake

    def from_pandas(self, frame: pd.DataFrame):
        return frame

    def to_pandas(self, frame) -> pd.DataFrame:
        return frame

    def read(self, table: str, version: Optional[int] = None):
        return self.lake.read(table, version=version)

    def read_bronze(self, dataset: str, exclude_batches: Sequence[str]) -> pd.DataFrame:
        rows = self.lake.read(bronze_table(dataset))
        return rows[~rows["_batch_id"].isin(list(exclude_batches))]

    def apply_by(self, frame: pd.DataFrame, key: str, fn: GroupFn, schema: pa.Schema) -> pd.DataFrame:
        parts = [fn(group) for _, group in frame.groupby(key, sort=True)]
        parts = [p for p in parts if len(p)]
        if not parts:
            return schema.empty_table().to_pandas()
        return pa.Table.from_pandas(pd.concat(parts, ignore_index=True)[schema.names], schema=schema,
                                    preserve_index=False).to_pandas()

    def add_exogenous(self, frame: pd.DataFrame, shared: pd.DataFrame, holidays: Optional[pd.DataFrame]):
        out = frame.merge(shared, on="ds", how="left") if len(shared.columns) > 1 else frame
        if holidays is not None:
            dates = set(holidays["date"])
            out = out.assign(is_holiday=out["ds"].dt.date.isin(dates).astype("float64"))
        return out

    def overwrite(self, table: str, frame: pd.DataFrame, schema: pa.Schema,
                  clustered_by: Optional[str] = None) -> int:
        return self.lake.overwrite(table, frame, schema, clustered_by)

    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int:
        return self.lake.insert_new(table, frame, keys)

    def summarize(self, frame: pd.DataFrame, flags: Sequence[str]) -> dict:
        return {"rows": len(frame), "entities": int(frame["entity_id"].nunique()),
                **{f: int(frame[f].sum()) for f in flags}}

    def last_observed(self, frame: pd.DataFrame, before: Optional[pd.Timestamp] = None) -> Optional[pd.Timestamp]:
        seen = observed_before(frame, before)
        seen = seen.loc[seen["y"].notna(), "ds"]
        return seen.max() if len(seen) else None

    def is_empty(self, frame: pd.DataFrame) -> bool:
        return frame.empty

    def lengths(self, frame: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in frame.groupby("entity_id").size().items()}

    def persist(self, frame):
        return frame

    def release(self, frame) -> None:
        return None


class SparkFrames:
    """Spark frames, Delta through delta-spark: groups run in `applyInPandas`."""

    def __init__(self, lake: SparkLake):
        self.lake, self.spark = lake, lake.spark

    def from_pandas(self, frame: pd.DataFrame):
        return self.spark.createDataFrame(_strings_for_empty_columns(frame))

    def to_pandas(self, frame) -> pd.DataFrame:
        return frame.toPandas()

    def read(self, table: str, version: Optional[int] = None):
        return self.lake.read(table, version=version)

    def read_bronze(self, dataset: str, exclude_batches: Sequence[str]):
        from pyspark.sql import functions as F
        rows = self.lake.read(bronze_table(dataset))
        return rows.filter(~F.col("_batch_id").isin(list(exclude_batches))) if exclude_batches else rows

    def apply_by(self, frame, key: str, fn: GroupFn, schema: pa.Schema):
        # A plain function: Spark reads the arity of what it gets, and a callable object's
        # __call__ counts `self`, which would make Spark pass the group key too.
        return frame.groupBy(key).applyInPandas(lambda rows: fn(rows), spark_ddl(schema))

    def add_exogenous(self, frame, shared: pd.DataFrame, holidays: Optional[pd.DataFrame]):
        from pyspark.sql import functions as F
        if len(shared.columns) > 1:
            frame = frame.join(F.broadcast(self.spark.createDataFrame(shared)), on="ds", how="left")
        if holidays is not None:
            dates = [d.isoformat() for d in holidays["date"]]
            frame = frame.withColumn("is_holiday", F.to_date("ds").cast("string").isin(dates).cast("double"))
        return frame

    def overwrite(self, table: str, frame, schema: pa.Schema, clustered_by: Optional[str] = None) -> int:
        return self.lake.overwrite(table, frame, schema, clustered_by)

    def insert_new(self, table: str, frame: pd.DataFrame, keys: Sequence[str]) -> int:
        return self.lake.insert_new(table, self.from_pandas(frame), keys)

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

    def persist(self, frame):
        return frame.persist()

    def release(self, frame) -> None:
        frame.unpersist()


def _strings_for_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Spark cannot infer a type for a column with no values; raw columns are strings."""
    empty = [c for c in frame.columns if frame[c].isna().all() and frame[c].dtype == object]
    return frame.astype({c: "string" for c in empty}) if empty else frame
