"""Engine overhead: Spark backend throughput vs a bare process-pool loop over the same fit code.

    python benchmarks/engine_overhead.py [--entities 1000] [--repeats 3]

Both sides run `engine.training.entity.train_entity` on the same synthetic panel with the
same candidate models and the same number of cores: the bare side is an already-warm
ProcessPoolExecutor mapping it over per-entity frames held in memory (the strictest
baseline); the Spark side is the training stage as the job runs it: gold read from Delta,
rows per entity counted, the cost plan, groupBy(bucket).applyInPandas, results materialized.
Target: ratio >= 0.9.
Appends one row per repeat to benchmarks/results/engine_overhead.csv.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.models import model_costs  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402
from engine.backends.local import init_worker  # noqa: E402
from engine.backends.spark import SparkBackend  # noqa: E402
from engine.training.entity import TrainSpec, train_entity  # noqa: E402
from engine.training.job import tag_with_plan  # noqa: E402
from partitions.plan import plan_partitions  # noqa: E402


def benchmark_config(entities: int, cores: int, periods: int, models: list[str]):
    return parse_config({
        "name": "bench", "spark": {"master": f"local[{cores}]", "ui": False, "shuffle_partitions": 8},
        "source": {"kind": "synthetic", "exogenous": ["temperature"],
                   "synthetic": {"entities": entities, "periods": periods, "seed": 1}},
        "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
        "backtest": {"windows": 2, "step": 24, "metric": "mase"}, "models": models,
        "training": {"max_history": periods, "workers": cores}})


def bare_pool(pool, frames, spec, cores: int) -> float:
    """The strictest baseline: an already-warm pool, timing only the map over entities."""
    started = time.perf_counter()
    chunk = max(1, len(frames) // (cores * 8))
    results = list(pool.map(train_entity, frames, [spec] * len(frames), chunksize=chunk))
    assert len(results) == len(frames)
    return time.perf_counter() - started


def spark_backend(spark, lake_root: str, config, spec, cores: int) -> float:
    """The training stage as `manymodels train` runs it on Spark: read gold from Delta, count
    rows per entity, plan, tag rows with buckets, run the backend, materialize the results."""
    from engine.lake import GOLD_SERIES
    started = time.perf_counter()
    backend = SparkBackend(spark, lake_root)
    gold = backend.read(GOLD_SERIES)
    extents = backend.extents(gold)
    plan = plan_partitions(dict(zip(extents["entity_id"], extents["observed"])), strategy="cost", cores=cores,
                           tasks_per_core=config.partitions.tasks_per_core, models=model_costs(spec.models),
                           fits_per_model=spec.windows + 1, max_history=spec.max_history)
    results = backend.train(tag_with_plan(backend, gold, extents, plan, spec), plan, spec)
    assert results.count() == len(extents)
    results.unpersist()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--periods", type=int, default=24 * 21, help="hourly rows per entity")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="seasonal_naive,theta")
    args = parser.parse_args()

    config = benchmark_config(args.entities, args.cores, args.periods, args.models.split(","))
    spec = TrainSpec.from_config(config)
    gold = synthetic_panel(config.source.synthetic)
    frames = [g for _, g in gold.groupby("entity_id", sort=True)]
    from engine.lake import GOLD_SERIES, DeltaRsLake
    from engine.medallion.schemas import gold_schema
    from engine.spark import get_spark
    lake_root = tempfile.mkdtemp(prefix="manymodels-bench-")
    DeltaRsLake(lake_root).overwrite(GOLD_SERIES, gold.assign(is_imputed=False), gold_schema(["temperature"]),
                                     clustered_by="entity_id")
    spark = get_spark(config.spark, config.lake)
    say(f"{args.entities} entities x {args.periods} hourly rows, models {args.models}, {args.cores} cores")
    pool = ProcessPoolExecutor(args.cores, mp_context=get_context("spawn"), initializer=init_worker,
                               initargs=(os.getpid(),))
    bare_pool(pool, frames[: args.cores * 4], spec, args.cores)       # warm the workers' imports
    spark_backend(spark, lake_root, config, spec, args.cores)                 # warm Spark and its workers
    rows = []
    for repeat in range(args.repeats):
        # Alternate which side goes first so that drift on a shared machine hits both alike.
        if repeat % 2 == 0:
            bare = bare_pool(pool, frames, spec, args.cores)
            on_spark = spark_backend(spark, lake_root, config, spec, args.cores)
        else:
            on_spark = spark_backend(spark, lake_root, config, spec, args.cores)
            bare = bare_pool(pool, frames, spec, args.cores)
        rows.append({"entities": args.entities, "periods": args.periods, "models": args.models,
                     "cores": args.cores, "repeat": repeat, "bare_seconds": round(bare, 2),
                     "spark_seconds": round(on_spark, 2), "bare_entities_per_s": round(args.entities / bare, 2),
                     "spark_entities_per_s": round(args.entities / on_spark, 2),
                     "ratio": round(bare / on_spark, 3)})
        say(f"  repeat {repeat}: bare pool {args.entities / bare:.2f} entities/s, "
            f"spark {args.entities / on_spark:.2f} entities/s, ratio {bare / on_spark:.3f}")
    bare_rate = med(r["bare_entities_per_s"] for r in rows)
    spark_rate = med(r["spark_entities_per_s"] for r in rows)
    say(f"median: bare pool {bare_rate:.2f} entities/s, spark backend {spark_rate:.2f} entities/s; "
        f"median of the paired ratios {med(r['ratio'] for r in rows):.3f} (target >= 0.9), "
        f"ratio of the medians {spark_rate / bare_rate:.3f}")
    pool.shutdown()
    shutil.rmtree(lake_root, ignore_errors=True)
    say(f"results: {record('engine_overhead', rows)}")


if __name__ == "__main__":
    main()
