"""Skew: makespan of the cost-aware plan vs the ideal and vs naive groupBy(entity_id).

    python benchmarks/skew.py [--entities 400] [--heavy-share 0.05] [--factor 10]

A synthetic panel where `heavy-share` of the entities have `factor` x the history. The same
training runs on the Spark backend three times: the cost plan with estimated costs, the
cost plan with costs learned from the first run's fit seconds, and the naive one group per
entity. For each: measured stage wall time, and the makespan simulated from the measured
per-entity fit seconds (cost plan: its buckets in order; naive: Spark's hash placement of
entity ids over the shuffle partitions), both against the ideal = total fit seconds / cores.
Target: cost plan <= 1.15 x ideal. Appends rows to benchmarks/results/skew.csv.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import med, record, say  # noqa: E402
from benchmarks.engine_overhead import benchmark_config  # noqa: E402
from engine.models import model_costs  # noqa: E402
from engine.sources.synthetic import synthetic_panel  # noqa: E402
from engine.backends.local import LocalBackend  # noqa: E402
from engine.backends.spark import SparkBackend  # noqa: E402
from engine.training.entity import TrainSpec  # noqa: E402
from engine.training.job import tag_with_plan  # noqa: E402
from partitions.packing import ideal_makespan, makespan  # noqa: E402
from partitions.plan import plan_partitions  # noqa: E402


def skewed_panel(config, entities: int, heavy_share: float, factor: int, periods: int) -> pd.DataFrame:
    panel = synthetic_panel(config.source.synthetic)      # every entity has the long history
    return keep_heavy(panel, heavy_share, periods)


def keep_heavy(panel: pd.DataFrame, heavy_share: float, periods: int, seed: int = 3) -> pd.DataFrame:
    """`heavy_share` of the entities keep their whole history; the rest only their last `periods` hours."""
    ids = sorted(panel["entity_id"].unique())
    rng = np.random.default_rng(seed)
    heavy = set(rng.choice(ids, max(1, int(len(ids) * heavy_share)), replace=False))
    keep_from = panel.groupby("entity_id")["ds"].transform("max") - pd.Timedelta(hours=periods - 1)
    light = ~panel["entity_id"].isin(heavy)
    return panel[~light | (panel["ds"] >= keep_from)].reset_index(drop=True)


def naive_makespan(spark, seconds: pd.Series, cores: int) -> tuple[float, int]:
    """Spark's placement of groupBy(entity_id): pmod(hash(entity_id), shuffle partitions)."""
    from pyspark.sql import functions as F
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    placed = (spark.createDataFrame(pd.DataFrame({"entity_id": seconds.index}))
              .select("entity_id", F.expr(f"pmod(hash(entity_id), {partitions})").alias("p")).toPandas())
    loads = seconds.groupby(placed.set_index("entity_id")["p"]).sum()
    return makespan([loads.get(p, 0.0) for p in range(partitions)], cores), partitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=400)
    parser.add_argument("--heavy-share", type=float, default=0.05)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--periods", type=int, default=24 * 14, help="hourly rows of a light entity")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--models", default="seasonal_naive,theta")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = benchmark_config(args.entities, args.cores, args.periods * args.factor, args.models.split(","))
    spec = TrainSpec.from_config(config)
    gold = skewed_panel(config, args.entities, args.heavy_share, args.factor, args.periods)
    pandas = LocalBackend(config.lake)     # tags the rows in pandas; training runs on Spark
    extents = pandas.extents(gold)
    rows = dict(zip(extents["entity_id"], extents["observed"]))
    from engine.spark import get_spark
    spark = get_spark(config.spark, config.lake)
    backend = SparkBackend(spark)
    say(f"{args.entities} entities, {args.heavy_share:.0%} with {args.factor}x history "
        f"({args.periods} vs {args.periods * args.factor} rows), models {args.models}, {args.cores} cores")
    warm = plan_partitions(dict(list(rows.items())[: args.cores * 2]), strategy="cost", cores=args.cores,
                           tasks_per_core=1, models=model_costs(spec.models), fits_per_model=1,
                           max_history=spec.max_history)
    backend.train(spark.createDataFrame(tag_with_plan(pandas, gold[gold["entity_id"].isin(warm.assignment)], extents[
        extents["entity_id"].isin(warm.assignment)], warm, spec)), warm, spec).unpersist()  # warm workers
    results = []
    for repeat in range(args.repeats):
        results += run_plans(spark, backend, gold, extents, rows, spec, config, args, repeat)
    for label in dict.fromkeys(r["plan"] for r in results):
        mine = [r for r in results if r["plan"] == label]
        say(f"median {label:17s}: simulated {med(r['simulated_ratio'] for r in mine):.3f} x ideal, "
            f"measured {med(r['wall_ratio'] for r in mine):.3f} x ideal ({len(mine)} runs; target <= 1.15 for cost)")
    say(f"results: {record('skew', results)}")


def run_plans(spark, backend, gold, extents, rows, spec, config, args, repeat: int) -> list[dict]:
    recorded, results = None, []
    for label, strategy in (("cost (estimated)", "cost"), ("cost (learned)", "cost"), ("naive entity", "entity")):
        plan = plan_partitions(rows, strategy=strategy, cores=args.cores,
                               tasks_per_core=config.partitions.tasks_per_core, models=model_costs(spec.models),
                               fits_per_model=spec.windows + 1, max_history=spec.max_history,
                               recorded=recorded if label == "cost (learned)" else None)
        frame = spark.createDataFrame(tag_with_plan(LocalBackend(config.lake), gold, extents, plan, spec)).persist()
        frame.count()
        started = time.perf_counter()
        out = backend.train(frame, plan, spec)
        fitted = out.select("entity_id", "n_obs", "fit_seconds").toPandas().set_index("entity_id")
        wall = time.perf_counter() - started
        out.unpersist()
        frame.unpersist()
        seconds = fitted["fit_seconds"]
        ideal = ideal_makespan(seconds.to_dict(), args.cores)
        if strategy == "cost":
            loads = seconds.groupby(pd.Series(plan.assignment)).sum()
            simulated, tasks = makespan([loads[b] for b in sorted(loads.index)], args.cores), plan.buckets
        else:
            simulated, tasks = naive_makespan(spark, seconds, args.cores)
        if recorded is None:
            recorded = {e: (int(r.n_obs), float(r.fit_seconds)) for e, r in fitted.iterrows()}
        results.append({"plan": label, "repeat": repeat, "entities": args.entities,
                        "heavy_share": args.heavy_share,
                        "factor": args.factor, "cores": args.cores, "tasks": tasks,
                        "ideal_seconds": round(ideal, 2), "simulated_makespan": round(simulated, 2),
                        "simulated_ratio": round(simulated / ideal, 3), "wall_seconds": round(wall, 2),
                        "wall_ratio": round(wall / ideal, 3)})
        say(f"  {label:17s} {tasks:4d} tasks: makespan {simulated:7.1f}s simulated "
            f"({simulated / ideal:.3f} x ideal {ideal:.1f}s), measured wall {wall:7.1f}s ({wall / ideal:.3f} x ideal)")
    return results


if __name__ == "__main__":
    main()
