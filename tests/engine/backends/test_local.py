"""The local backend survives a worker process that dies (OOM killer, segfault): the task is retried."""
from __future__ import annotations

import os

import pandas as pd
from engine.backends.local import LocalBackend
from engine.config import parse_config
from engine.models import model_costs
from engine.sources.synthetic import synthetic_panel
from engine.training.entity import TrainSpec
from engine.training.job import tag_with_plan
from engine.training.tasks import train_bucket
from partitions.plan import plan_partitions

CONFIG = parse_config({"name": "crash", "source": {"kind": "synthetic", "synthetic": {"entities": 4,
                                                                                    "periods": 24 * 14}},
                       "series": {"freq": "h", "season_lengths": [24]}, "horizon": 24,
                       "backtest": {"windows": 1, "step": 24}, "models": ["seasonal_naive"],
                       "training": {"workers": 2}})


def die_on_first_attempt(rows: pd.DataFrame, spec: TrainSpec, attempt: int = 0) -> pd.DataFrame:
    """A task whose first attempt kills its worker process outright, as the OOM killer would."""
    if attempt == 0 and rows["entity_id"].min() == "entity_0":
        os._exit(137)
    return train_bucket(rows, spec, attempt)


def planned():
    spec = TrainSpec.from_config(CONFIG)
    gold = synthetic_panel(CONFIG.source.synthetic)
    extents = LocalBackend(CONFIG.lake).extents(gold)
    plan = plan_partitions(dict(zip(extents["entity_id"], extents["observed"])), strategy="cost", cores=2,
                           tasks_per_core=1, models=model_costs(spec.models), fits_per_model=2,
                           max_history=spec.max_history)
    return gold, extents, plan, spec


def test_local_backend_reruns_tasks_of_a_dead_worker():
    gold, extents, plan, spec = planned()
    backend = LocalBackend(CONFIG.lake, 2, task=die_on_first_attempt)
    results = backend.train(tag_with_plan(backend, gold, extents, plan, spec), plan, spec)
    assert sorted(results["entity_id"]) == [f"entity_{i}" for i in range(4)]
    assert (results["status"] == "ok").all()
    crashed = results[results["entity_id"] == "entity_0"]
    assert crashed["attempt"].iloc[0] >= 1
