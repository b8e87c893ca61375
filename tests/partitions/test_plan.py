"""The planner: cost estimates, learned costs, LPT packing, giant isolation, Spark keys."""
from __future__ import annotations

import numpy as np
import pytest

from partitions.costs import estimate_costs, learn_costs
from partitions.packing import giants, ideal_makespan, makespan, pack_lpt
from partitions.plan import plan_partitions

# (fixed seconds, seconds per 1,000 rows) per model, as the engine's models declare them.
MODELS = {"seasonal_naive": (0.0014, 0.0001), "theta": (0.055, 0.073), "ets": (0.98, 1.39)}


def skewed_rows(entities: int = 1000, heavy_share: float = 0.05, seed: int = 0) -> dict[str, int]:
    """5% of the entities have 10x the history of the others."""
    rng = np.random.default_rng(seed)
    heavy = set(rng.choice(entities, int(entities * heavy_share), replace=False))
    return {f"e{i:04d}": 2000 * (10 if i in heavy else 1) for i in range(entities)}


def test_costs_grow_with_rows_up_to_the_history_cap():
    costs = estimate_costs({"short": 100, "long": 1000, "huge": 50_000}, MODELS, fits_per_model=4, max_history=1000)
    assert costs["short"] < costs["long"] == costs["huge"]


def test_learned_costs_replace_estimates_and_scale_unseen_entities():
    estimated = {"a": 1.0, "b": 2.0, "new": 4.0}
    rows = {"a": 100, "b": 200, "new": 400}
    learned = learn_costs(estimated, rows, {"a": (100, 3.0), "b": (100, 5.0), "gone": (10, 1.0)})
    assert learned["a"] == pytest.approx(3.0)
    assert learned["b"] == pytest.approx(10.0)            # twice the rows it had when it took 5 s
    assert learned["new"] == pytest.approx(4.0 * np.median([3.0, 2.5]))
    assert learn_costs(estimated, rows, None) == estimated


def test_lpt_balances_buckets_and_orders_them_heaviest_first():
    rng = np.random.default_rng(1)
    costs = {f"e{i}": float(c) for i, c in enumerate(rng.lognormal(0, 1, 500))}
    assignment = pack_lpt(costs, 8)
    loads = [sum(costs[e] for e, b in assignment.items() if b == bucket) for bucket in range(8)]
    assert loads == sorted(loads, reverse=True)
    assert max(loads) <= 1.02 * sum(loads) / 8
    assert set(assignment) == set(costs)


def test_giant_entities_get_a_bucket_of_their_own():
    costs = {"giant": 50.0, **{f"s{i}": 1.0 for i in range(60)}}
    assignment = pack_lpt(costs, 4)
    assert giants(costs, 4) == ["giant"]
    assert [e for e, b in assignment.items() if b == assignment["giant"]] == ["giant"]


def test_makespan_simulates_tasks_taken_in_order():
    assert makespan([4, 1, 1, 1, 1], cores=2) == 4
    assert makespan([1, 1, 1, 1, 4], cores=2) == 6
    assert ideal_makespan({"a": 3.0, "b": 3.0}, cores=2) == 3.0


def test_cost_plan_is_near_ideal_on_a_skewed_panel_and_beats_one_group_per_entity():
    rows = skewed_rows()
    kwargs = dict(cores=2, tasks_per_core=2, models=MODELS, fits_per_model=4, max_history=100_000)
    cost = plan_partitions(rows, strategy="cost", **kwargs)
    assert cost.buckets == 4 and cost.estimated_makespan() <= 1.15 * cost.ideal_makespan()
    naive = plan_partitions(rows, strategy="entity", **kwargs)
    assert naive.buckets == len(rows) and naive.ideal_makespan() == pytest.approx(cost.ideal_makespan())


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="Unknown partition strategy: 'random'"):
        plan_partitions({"a": 1}, strategy="random", cores=1, tasks_per_core=1, models=MODELS,
                        fits_per_model=1, max_history=10)


@pytest.mark.spark
def test_partition_keys_send_each_bucket_to_its_own_shuffle_partition(spark):
    from pyspark.sql import functions as F

    from partitions.spark import partition_keys
    buckets = 7
    keys = partition_keys(spark, buckets)
    frame = spark.createDataFrame([(b, k) for b, k in enumerate(keys)], "bucket int, key long")
    placed = (frame.repartition(buckets, "key").select("bucket", F.spark_partition_id().alias("p"))
              .collect())
    assert sorted((r["bucket"], r["p"]) for r in placed) == [(b, b) for b in range(buckets)]
