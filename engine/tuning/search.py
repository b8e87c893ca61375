"""A cluster trial of `manymodels tune` (engine.tuning.job): one SparkTrials trial scores one
parameter set by `sample_loss`, the mean backtest loss over a sample of entities, with the same
backtest and trial machinery as the per-entity search (engine.training.search).
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from engine.training.backtest import Fold, backtest_folds, usable_windows
from engine.training.history import prepare_scored
from engine.training.search import TrialFailed, TrialTimeout, entity_loss, time_limit


def sample_folds(rows: pd.DataFrame, spec) -> Optional[list[Fold]]:
    """One entity's backtest folds as training would build them; None if it cannot be backtested."""
    history, future, _, unobserved = prepare_scored(rows, spec)
    windows = usable_windows(history, spec)
    if windows < 1:
        return None
    return backtest_folds(history, spec, windows, future.attrs.get("scenario", ()), unobserved)


def sample_loss(name: str, params: Mapping[str, Any], entities: Mapping[str, list[Fold]], spec,
                trial_timeout: float) -> dict[str, Any]:
    """A cluster trial: the mean backtest loss of `params` over the sampled entities' folds.
    Returns a hyperopt result dict (STATUS_FAIL with the reason when any entity fails)."""
    from hyperopt import STATUS_FAIL, STATUS_OK
    from threadpoolctl import threadpool_limits
    started, losses = time.perf_counter(), {}
    try:
        with threadpool_limits(limits=1), time_limit(trial_timeout) as check:
            for entity, folds in entities.items():
                try:
                    losses[entity] = entity_loss(name, params, folds, spec, check)[0]
                except TrialFailed as exc:
                    raise TrialFailed(f"entity {entity}: {exc}") from None
    except (TrialFailed, TrialTimeout) as exc:
        return {"status": STATUS_FAIL, "error": str(exc), "entities_done": len(losses),
                "seconds": time.perf_counter() - started}
    return {"status": STATUS_OK, "loss": float(np.mean(list(losses.values()))), "entity_losses": losses,
            "seconds": time.perf_counter() - started}
