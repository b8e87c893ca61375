"""The partition plan: which entities run together in one task, and in which order.

Strategies (config `partitions.strategy`):
* ``cost`` - estimated (or learned) cost per entity, LPT-packed into
  ``cores x partitions.tasks_per_core`` buckets; giant entities end up alone.
* ``entity`` - the naive baseline: one group per entity, spread by the engine's hash
  partitioner (Spark: ``groupBy(entity_id)`` over ``spark.sql.shuffle.partitions``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from partitions.costs import ModelCost, estimate_costs, learn_costs
from partitions.packing import bucket_costs, giants, ideal_makespan, makespan, pack_lpt


@dataclass(frozen=True)
class PartitionPlan:
    strategy: str
    buckets: int
    cores: int
    assignment: dict[str, int]          # entity -> bucket (cost: 0 is the heaviest)
    costs: dict[str, float]             # estimated seconds per entity
    isolated: list[str] = field(default_factory=list)
    learned: bool = False

    @property
    def bucket_costs(self) -> dict[int, float]:
        return bucket_costs(self.assignment, self.costs)

    def entities_in(self, bucket: int) -> list[str]:
        return sorted(e for e, b in self.assignment.items() if b == bucket)

    def estimated_makespan(self) -> float:
        loads = self.bucket_costs
        return makespan([loads[b] for b in sorted(loads)], self.cores)

    def ideal_makespan(self) -> float:
        return ideal_makespan(self.costs, self.cores)

    def describe(self) -> str:
        text = (f"{len(self.assignment)} entities in {self.buckets} tasks on {self.cores} cores "
                f"({self.strategy} plan, costs {'learned from the last run' if self.learned else 'estimated'})")
        if self.isolated:
            text += f"; {len(self.isolated)} heavy entit{'y' if len(self.isolated) == 1 else 'ies'} isolated"
        return text


def plan_partitions(rows: Mapping[str, int], *, strategy: str, cores: int, tasks_per_core: int,
                    models: Mapping[str, ModelCost], fits_per_model: int, max_history: int,
                    recorded: Optional[Mapping[str, tuple[int, float]]] = None) -> PartitionPlan:
    """Plan tasks for entities with `rows` history rows each; `recorded` is the last run's
    `(n_obs, fit_seconds)` per entity, when there is one; `models`: each candidate's cost."""
    if strategy not in ("cost", "entity"):
        raise ValueError(f"Unknown partition strategy: {strategy!r}")
    costs = learn_costs(estimate_costs(rows, models, fits_per_model, max_history), rows, recorded)
    learned = bool(recorded)
    if strategy == "entity":
        order = sorted(rows)
        return PartitionPlan("entity", len(order), cores, {e: i for i, e in enumerate(order)}, costs,
                             learned=learned)
    buckets = max(1, min(len(rows), cores * tasks_per_core))
    return PartitionPlan("cost", buckets, cores, pack_lpt(costs, buckets), costs,
                         isolated=giants(costs, buckets), learned=learned)
