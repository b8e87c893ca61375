"""Pack entities into buckets of similar total cost, and simulate how long a plan takes.

LPT (longest processing time first, Graham 1969): place entities from the most to the least
expensive, each into the currently cheapest bucket. Its makespan is within 4/3 of optimal,
and in practice within a few percent for panels with many entities. An entity costing more
than an even share of the total is "giant": LPT gives it a bucket of its own, which we report.
"""
from __future__ import annotations

import heapq
from typing import Mapping, Sequence

import numpy as np


def pack_lpt(costs: Mapping[str, float], buckets: int) -> dict[str, int]:
    """Entity -> bucket index; bucket 0 is the most expensive, so it is scheduled first."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    order = sorted(costs, key=lambda e: (-costs[e], e))
    heap = [(0.0, b) for b in range(min(buckets, len(order)) or 1)]
    assignment = {}
    for entity in order:
        load, bucket = heapq.heappop(heap)
        assignment[entity] = bucket
        heapq.heappush(heap, (load + costs[entity], bucket))
    return _by_cost(assignment, costs)


def _by_cost(assignment: dict[str, int], costs: Mapping[str, float]) -> dict[str, int]:
    """Renumber buckets by decreasing cost: tasks start in partition order, heavy first."""
    loads = bucket_costs(assignment, costs)
    rank = {b: i for i, b in enumerate(sorted(loads, key=lambda b: (-loads[b], b)))}
    return {e: rank[b] for e, b in assignment.items()}


def bucket_costs(assignment: Mapping[str, int], costs: Mapping[str, float]) -> dict[int, float]:
    loads: dict[int, float] = {}
    for entity, bucket in assignment.items():
        loads[bucket] = loads.get(bucket, 0.0) + costs[entity]
    return loads


def giants(costs: Mapping[str, float], buckets: int) -> list[str]:
    """Entities costing more than an even share of the total: each needs a bucket of its own."""
    share = sum(costs.values()) / max(buckets, 1)
    return sorted(e for e, c in costs.items() if c > share)


def makespan(task_costs: Sequence[float], cores: int) -> float:
    """Wall time of running tasks in the given order on `cores` workers, each taking the next
    task when it frees up (how Spark and a process pool schedule a stage)."""
    free = [0.0] * max(cores, 1)
    for cost in task_costs:
        start = heapq.heappop(free)
        heapq.heappush(free, start + cost)
    return max(free) if task_costs else 0.0


def ideal_makespan(costs: Mapping[str, float], cores: int) -> float:
    """Total work spread perfectly over the cores (no plan can beat it)."""
    return float(np.fromiter(costs.values(), dtype="float64").sum()) / max(cores, 1)
