"""Spark side of a plan: one bucket per shuffle partition, exactly.

``groupBy(key)`` hashes keys into ``spark.sql.shuffle.partitions``; bucket ids 0..n-1 would
collide (two heavy buckets in one task, an empty task elsewhere). So each bucket gets a key
whose Spark hash lands on its own partition, the shuffle uses exactly n partitions, and
adaptive execution is told not to coalesce them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SHUFFLE_CONF = {"spark.sql.adaptive.coalescePartitions.enabled": "false"}


def partition_keys(spark: "SparkSession", buckets: int) -> list[int]:
    """`keys[i]` is a bigint that Spark's hash partitioner sends to partition i of `buckets`."""
    from pyspark.sql import functions as F
    span = 64 * buckets
    while True:
        rows = (spark.range(0, span).select("id", F.expr(f"pmod(hash(id), {buckets})").alias("p"))
                .groupBy("p").agg(F.min("id").alias("key")).collect())
        keys = {r["p"]: r["key"] for r in rows}
        if len(keys) == buckets:
            return [int(keys[i]) for i in range(buckets)]
        span *= 4
