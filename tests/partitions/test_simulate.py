"""The scaling simulator: the cost plan against the naive one, and where the driver caps scaling."""
from __future__ import annotations

import numpy as np
import pytest

from partitions.simulate import Overheads, lpt_task_costs, simulate

MEASURED = np.random.default_rng(0).lognormal(np.log(0.2), 0.4, 5000)


def test_lpt_buckets_hold_every_entity_and_come_heaviest_first():
    true = np.random.default_rng(1).random(1000)
    tasks = lpt_task_costs(true, true, 16)
    assert len(tasks) == 16 and sum(tasks) == pytest.approx(true.sum())
    assert max(tasks) / min(tasks) < 1.02 and tasks[0] == max(tasks)


@pytest.mark.parametrize("entities", [10_000, 100_000])
def test_with_skew_the_cost_plan_beats_the_naive_plan_at_every_size(entities):
    for cores in (8, 64, 512):
        cost = simulate(MEASURED, entities, cores, skew=True, strategy="cost", overheads=Overheads(0.0))
        naive = simulate(MEASURED, entities, cores, skew=True, strategy="naive", overheads=Overheads(0.0),
                         partitions=2 * cores)
        assert cost["makespan_seconds"] < naive["makespan_seconds"]
        assert cost["makespan_seconds"] >= cost["ideal_seconds"] * 0.999


def test_serial_driver_work_flattens_scaling():
    free = [simulate(MEASURED, 100_000, c, skew=False, strategy="cost", overheads=Overheads(0.01))["efficiency"]
            for c in (8, 1024)]
    driven = [simulate(MEASURED, 100_000, c, skew=False, strategy="cost",
                       overheads=Overheads(0.01, driver_per_entity=0.002, job_seconds=20))["efficiency"]
              for c in (8, 1024)]
    assert free[1] > 0.8 and driven[0] > 0.9 and driven[1] < 0.1   # at 1,024 cores: 220 s of driver work, 21 s of fits
    with pytest.raises(ValueError, match="unknown strategy"):
        simulate(MEASURED, 10, 2, skew=False, strategy="random", overheads=Overheads())
