"""Batched fits inside a training task, with the per-entity function unchanged.

A model that `fits_ahead` (gpu_additive) fits many histories in one batched call far faster
than one at a time. Before a slice of a task's entities goes through `train_entity`, every fit
its backtests and final fit will ask of such a candidate (each fold's training rows, the whole
history) is fitted in batches; `train_entity` then finds each state where the model's own `fit`
looks first, and gets exactly the fit it would have made alone. What no fit took is dropped
when the slice is done.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

from engine.models import model_class

if TYPE_CHECKING:
    from engine.training.entity import EntityInputs, TrainSpec

SLICE = 256     # entities prepared and fitted ahead at a time: batches big enough, memory bounded


def ahead_candidates(spec: "TrainSpec") -> list[str]:
    """The candidates fitted ahead: those that can, with the same hyperparameters for every
    entity (a per-entity search picks its own per entity)."""
    searched = spec.search.space if spec.search is not None else {}
    return [name for name in spec.candidates if model_class(name).fits_ahead and name not in searched]


@contextmanager
def fitted_ahead(spec: "TrainSpec", inputs: Iterable[Optional["EntityInputs"]]) -> Iterator[int]:
    """While the block runs, the fits `train_entity` will make of the candidates that fit ahead
    are ready for these entities' inputs (None: one that could not be prepared). Yields how
    many were fitted."""
    names = ahead_candidates(spec)
    prepared = [i for i in inputs if i is not None]
    fitted = 0
    try:
        for name in names:
            cls = model_class(name)
            histories = [h for i in prepared for h in _fits_of(i, cls.refreshable)]
            fitted += cls.fit_ahead(spec.model, spec.hyperparameters.get(name), histories)
        yield fitted
    finally:
        for name in names:
            model_class(name).forget_ahead()


def _fits_of(inputs: "EntityInputs", refreshable: bool) -> list:
    """The histories a candidate is fitted on for this entity: the backtest windows that refit
    (`backtest.refit`; every window for a model that cannot be refreshed) and the whole history
    (its final fit, when it wins)."""
    if not inputs.folds:
        return [inputs.history]         # too short or constant: fitted on the whole history, if at all
    due = [f.train for f in inputs.folds if not refreshable or f.refit]
    return [*due, inputs.history]
