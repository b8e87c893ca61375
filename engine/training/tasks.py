"""One planned task of the training stage: every entity of a bucket through the pure per-entity
function, one after another (or, for candidates that fit in batches, as a panel that gives the
same rows). Every backend (engine.backends) runs exactly this on its cores."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import pandas as pd
import pyarrow as pa

from engine.models import model_class
from engine.training.ahead import SLICE, ahead_candidates, fitted_ahead
from engine.training.entity import RESULT_COLUMNS, RESULT_SCHEMA, EntityInputs, TrainSpec, entity_result
from engine.training.panel import panel_candidates, train_panel

TASK_RESULT_SCHEMA = RESULT_SCHEMA.append(pa.field("attempt", pa.int64()))

Progress = Callable[[int], None]   # called with the number of entities just finished
Task = Callable[..., pd.DataFrame]  # (rows, spec, attempt) -> results; `train_bucket` outside tests


def train_bucket(rows: pd.DataFrame, spec: TrainSpec, attempt: int = 0) -> pd.DataFrame:
    """All entities of one task, one after another, with BLAS pinned to one thread so that
    one task per core does not oversubscribe the machine. When every candidate fits in batches,
    the entities on one clean grid are trained as a panel (engine.training.panel); with a
    candidate that fits in batches, a slice of the others at a time is prepared and its fits
    batched first (engine.training.ahead)."""
    rows = plain_ids(rows)
    # Each entity's row positions, in groupby's sorted order; its own frame is cut only when it goes
    # through `train_entity` (a panel's entities never need one: 80 us each).
    groups = list(rows.groupby("entity_id", sort=True).indices.items())
    results: dict[int, dict] = {}
    with one_thread(spec):
        if panel_candidates(spec):
            results.update(train_panel(rows, groups, spec))
        rest = [i for i in range(len(groups)) if i not in results]
        if ahead_candidates(spec):
            for start in range(0, len(rest), SLICE):
                chunk = rest[start:start + SLICE]
                frames = [rows.iloc[groups[i][1]] for i in chunk]
                inputs = [_inputs(frame, spec) for frame in frames]
                with fitted_ahead(spec, inputs):
                    results.update((i, entity_result(frame, spec, prepared))
                                   for i, frame, prepared in zip(chunk, frames, inputs))
        else:
            results.update((i, entity_result(rows.iloc[groups[i][1]], spec)) for i in rest)
    out = pd.DataFrame([results[i] for i in range(len(groups))], columns=RESULT_COLUMNS)
    return out.assign(attempt=attempt)


def plain_ids(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with `entity_id` as strings: the local backend plans on gold whose ids are a
    Categorical (`read_gold`), and the per-entity code groups and compares plain ids."""
    if isinstance(rows["entity_id"].dtype, pd.CategoricalDtype):
        return rows.assign(entity_id=rows["entity_id"].astype(object))
    return rows


@contextmanager
def one_thread(spec: TrainSpec) -> Iterator[None]:
    """BLAS and OpenMP on one thread while a task runs (one task per core), torch's own pool too
    when a candidate trains with it: a worker imports torch at its first fit, after threadpoolctl
    has pinned the libraries loaded by then (on 2 cores, two tasks of two torch threads each took
    40% longer)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        torch = None
        if any(model_class(name).needs_torch for name in spec.models):
            try:
                import torch
            except ImportError:     # such a candidate then fails for each entity and says why
                pass
        if torch is None:
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _inputs(rows: pd.DataFrame, spec: TrainSpec) -> Optional[EntityInputs]:
    """None when the rows cannot be prepared: `train_entity` records why, as for any entity."""
    try:
        return EntityInputs.of(rows, spec)
    except Exception:  # noqa: BLE001 - the per-entity function meets the same error and isolates it
        return None
