"""Per-entity cost estimates: rows x per-model cost, or learned from recorded fit seconds.

Costs are in seconds of one core. Before any run they come from `MODEL_COST`, a fixed and a
per-row part per fit measured by benchmarks/model_cost.py on hourly data (the fixed part
matters: a 10x longer history is far less than 10x the work for most models).
Once a run has recorded `fit_seconds` per entity, those replace the estimate: an entity's
cost is its last fit time scaled by its change in rows, and entities never trained before
get the estimate times the median ratio recorded/estimated of the others.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

# (fixed seconds, seconds per 1,000 history rows) per fit and forecast, one core, from
# benchmarks/model_cost.py (336 and 2,160 hourly rows). The ensemble's members are already
# counted as candidates; combining them costs next to nothing.
MODEL_COST = {"seasonal_naive": (0.0014, 0.0001), "ets": (0.98, 1.39), "theta": (0.055, 0.073),
              "arima": (0.88, 2.33), "mstl": (0.0, 0.35), "prophet": (0.022, 0.27), "ensemble": (0.0, 0.0),
              # gpu_additive: benchmarks/gpu_bench.py (one at a time, CPU); global_nn only applies a trained network.
              "gpu_additive": (0.004, 0.005), "global_nn": (0.002, 0.0)}
UNKNOWN_MODEL_COST = (0.5, 1.0)
# Fixed per-entity work (data preparation, metrics, serialization).
ENTITY_OVERHEAD_SECONDS = 0.01


def estimate_costs(rows: Mapping[str, int], models: Sequence[str], fits_per_model: int,
                   max_history: int) -> dict[str, float]:
    """Estimated seconds per entity from its row count (capped at the fitted history)."""
    fixed = sum(MODEL_COST.get(m, UNKNOWN_MODEL_COST)[0] for m in models) * fits_per_model
    per_krow = sum(MODEL_COST.get(m, UNKNOWN_MODEL_COST)[1] for m in models) * fits_per_model
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
