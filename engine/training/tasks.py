"""One planned task of the training stage: every entity of a bucket through the pure per-entity
function, one after another. Every backend (engine.backends) runs exactly this on its cores."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import pyarrow as pa

from engine.training.entity import RESULT_SCHEMA, TrainSpec, train_entity

TASK_RESULT_SCHEMA = RESULT_SCHEMA.append(pa.field("attempt", pa.int64()))

Progress = Callable[[int], None]   # called with the number of entities just finished
Task = Callable[..., pd.DataFrame]  # (rows, spec, attempt) -> results; `train_bucket` outside tests


def train_bucket(rows: pd.DataFrame, spec: TrainSpec, attempt: int = 0) -> pd.DataFrame:
    """All entities of one task, one after another, with BLAS pinned to one thread so that
    one task per core does not oversubscribe the machine."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        parts = [train_entity(group, spec) for _, group in rows.groupby("entity_id", sort=True)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RESULT_SCHEMA.names)
    return out.assign(attempt=attempt)
