"""Per-entity cost estimates: rows x per-model cost, or learned from recorded fit seconds.

Costs are in seconds of one core. Before any run they come from each model's declared cost
(`ForecastModel.cost` in the engine: a fixed and a per-row part per fit measured by
benchmarks/model_cost.py on hourly data; the fixed part matters: a 10x longer history is far
less than 10x the work for most models). This package knows no models: callers pass the costs.
Once a run has recorded `fit_seconds` per entity, those replace the estimate: an entity's
cost is its last fit time scaled by its change in rows, and entities never trained before
get the estimate times the median ratio recorded/estimated of the others.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

ModelCost = tuple[float, float]    # (fixed seconds, seconds per 1,000 history rows) per fit and forecast
# Fixed per-entity work (data preparation, metrics, serialization).
ENTITY_OVERHEAD_SECONDS = 0.01


def estimate_costs(rows: Mapping[str, int], models: Mapping[str, ModelCost], fits_per_model: int,
                   max_history: int) -> dict[str, float]:
    """Estimated seconds per entity from its row count (capped at the fitted history); `models`:
    the cost of each candidate."""
    fixed = sum(cost[0] for cost in models.values()) * fits_per_model
    per_krow = sum(cost[1] for cost in models.values()) * fits_per_model
    return {e: ENTITY_OVERHEAD_SECONDS + fixed + per_krow * min(n, max_history) / 1000.0 for e, n in rows.items()}


def learn_costs(estimated: Mapping[str, float], rows: Mapping[str, int],
                recorded: Optional[Mapping[str, tuple[int, float]]]) -> dict[str, float]:
    """Replace estimates by recorded `(n_obs, fit_seconds)` of a previous run where known."""
    if not recorded:
        return dict(estimated)
    seen = {e: r for e, r in recorded.items() if e in estimated and r[1] > 0 and r[0] > 0}
    ratios = [seen[e][1] / estimated[e] for e in seen if estimated[e] > 0]
    scale = float(np.median(ratios)) if ratios else 1.0
    costs = {}
    for entity, estimate in estimated.items():
        if entity in seen:
            n_obs, seconds = seen[entity]
            costs[entity] = seconds * max(rows.get(entity, n_obs), 1) / n_obs
        else:
            costs[entity] = estimate * scale
    return costs
