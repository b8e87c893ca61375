"""Scaling simulator: the planner and the driver on clusters we do not have.

From measured per-entity fit seconds and measured overheads, simulate one training job on
`cores` cores for `entities` entities: per-entity costs drawn from the measured ones (with
`skew`, a share of heavy entities costing `factor` times more, which the planner knows from their
history length but not their exact cost), the cost plan (LPT into cores x tasks_per_core
buckets on the *estimated* costs) or the naive plan (each entity hashed to one of `partitions`
shuffle partitions), tasks scheduled greedily on the cores after a fixed start-up per stage, each
task paying a fixed overhead, plus the serial driver work: a fixed part per job and a part per
entity (collecting results, MLflow child runs). Efficiency is the
perfect parallel time of the work (total fit seconds / cores) over the simulated job time, so
it shows where scaling flattens: stragglers (makespan over the ideal) and the driver (serial
seconds, which no number of cores shortens).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from partitions.packing import makespan


@dataclass(frozen=True)
class Overheads:
    task_seconds: float = 0.05        # per task: scheduling, shipping rows, starting the Python function
    driver_per_entity: float = 0.0    # serial seconds per entity on the driver
    job_seconds: float = 0.0          # fixed per job: session, planning, table commits
    stage_seconds: float = 0.0        # fixed per training stage: shuffle, Python workers starting


def sample_costs(measured: np.ndarray, entities: int, rng: np.random.Generator, skew: bool,
                 heavy_share: float = 0.05, factor: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(true, estimated) seconds per entity. Estimates know the heavy entities (their rows) but
    not the spread within each class."""
    measured = np.asarray(measured, dtype="float64")
    true = rng.choice(measured, entities)
    heavy = rng.random(entities) < heavy_share if skew else np.zeros(entities, dtype=bool)
    true[heavy] *= factor
    estimated = np.where(heavy, factor, 1.0) * float(np.median(measured))
    return true, estimated


def lpt_task_costs(true: np.ndarray, estimated: np.ndarray, buckets: int) -> list[float]:
    """True load of each LPT bucket (packed on the estimates), heaviest planned bucket first."""
    buckets = max(1, min(buckets, len(true)))
    order = np.lexsort((np.arange(len(estimated)), -estimated))
    heap = [(0.0, b) for b in range(buckets)]
    planned, actual = [0.0] * buckets, [0.0] * buckets
    for est, cost in zip(estimated[order].tolist(), true[order].tolist()):      # plain floats: 1M in ~1 s
        load, b = heapq.heappop(heap)
        planned[b] = load + est
        actual[b] += cost
        heapq.heappush(heap, (planned[b], b))
    return list(np.asarray(actual)[np.argsort(-np.asarray(planned), kind="stable")])


def simulate(measured: np.ndarray, entities: int, cores: int, *, skew: bool, strategy: str,
             overheads: Overheads, tasks_per_core: int = 4, partitions: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    true, estimated = sample_costs(measured, entities, rng, skew)
    if strategy == "cost":
        tasks = lpt_task_costs(true, estimated, cores * tasks_per_core)
    elif strategy == "naive":
        placed = rng.integers(0, partitions, entities)
        tasks = list(np.bincount(placed, weights=true, minlength=partitions))
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    tasks_span = makespan([t + overheads.task_seconds for t in tasks], cores)
    span = overheads.stage_seconds + tasks_span
    serial = overheads.job_seconds + entities * overheads.driver_per_entity
    ideal = float(true.sum()) / cores
    return {"entities": entities, "cores": cores, "skew": skew, "strategy": strategy, "tasks": len(tasks),
            "ideal_seconds": ideal, "makespan_seconds": span, "serial_seconds": serial,
            "job_seconds": span + serial, "straggler_ratio": tasks_span / ideal if ideal else float("nan"),
            "efficiency": ideal / (span + serial) if span + serial else float("nan")}
