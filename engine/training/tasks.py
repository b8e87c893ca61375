"""One planned task of the training stage: every entity of a bucket through the pure per-entity
function, one after another. Every backend (engine.backends) runs exactly this on its cores."""
from __future__ import annotations

from typing import Callable, Optional

import pandas as pd
import pyarrow as pa

from engine.training.ahead import SLICE, ahead_candidates, fitted_ahead
from engine.training.entity import RESULT_SCHEMA, EntityInputs, TrainSpec, train_entity

TASK_RESULT_SCHEMA = RESULT_SCHEMA.append(pa.field("attempt", pa.int64()))

Progress = Callable[[int], None]   # called with the number of entities just finished
Task = Callable[..., pd.DataFrame]  # (rows, spec, attempt) -> results; `train_bucket` outside tests


def train_bucket(rows: pd.DataFrame, spec: TrainSpec, attempt: int = 0) -> pd.DataFrame:
    """All entities of one task, one after another, with BLAS pinned to one thread so that
    one task per core does not oversubscribe the machine. With a candidate that fits in batches
    (engine.training.ahead), a slice of entities at a time is prepared and its fits batched first."""
    from threadpoolctl import threadpool_limits
    groups = list(rows.groupby("entity_id", sort=True))
    parts = []
    with threadpool_limits(limits=1):
        if not ahead_candidates(spec):
            parts = [train_entity(group, spec) for _, group in groups]
        else:
            for start in range(0, len(groups), SLICE):
                chunk = groups[start:start + SLICE]
                inputs = [_inputs(group, spec) for _, group in chunk]
                with fitted_ahead(spec, inputs):
                    parts += [train_entity(group, spec, prepared) for (_, group), prepared in zip(chunk, inputs)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_SCHEMA.names)
    return out.assign(attempt=attempt)


def _inputs(rows: pd.DataFrame, spec: TrainSpec) -> Optional[EntityInputs]:
    """None when the rows cannot be prepared: `train_entity` records why, as for any entity."""
    try:
        return EntityInputs.of(rows, spec)
    except Exception:  # noqa: BLE001 - the per-entity function meets the same error and isolates it
        return None
