"""Routing models of any size for the serving and load benchmarks.

`distinct` ETS models are really fitted (statsmodels, on synthetic hourly load with daily and
weekly cycles); entity i gets model i % distinct under its own id, so a 10,000-entity bundle
holds 10,000 real serialized models without 10,000 fits. Restoring and forecasting cost the
same per entity whichever fit a model came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from engine.models import ModelSpec, make_model
from engine.routing.bundle import write_bundle

SPEC = ModelSpec(freq="h", season_lengths=(24, 168), levels=(80, 95), exogenous=(), seed=0)
HISTORY = 24 * 28


def fitted_ets(distinct: int) -> list[tuple[bytes, pd.Timestamp]]:
    out = []
    for seed in range(distinct):
        rng = np.random.default_rng(seed)
        t = np.arange(HISTORY)
        y = (500 + 50 * np.sin(2 * np.pi * t / 24) + 20 * np.sin(2 * np.pi * t / 168) + rng.normal(0, 5, HISTORY)
             + seed * 10)
        ds = pd.date_range("2024-01-01", periods=HISTORY, freq="h", tz="UTC")
        model = make_model("ets", SPEC).fit(pd.DataFrame({"ds": ds, "y": y}))
        out.append((model.to_bytes(), ds[-1]))
    return out


def entity_id(i: int) -> str:
    return f"feeder-{i:06d}"


def build_bundle(folder: Path, entities: int, models: list[tuple[bytes, pd.Timestamp]], shard_size: int = 256):
    rows = pd.DataFrame({"entity_id": [entity_id(i) for i in range(entities)],
                         "champion": "ets", "status": "ok",
                         "forecast_origin": [models[i % len(models)][1] for i in range(entities)],
                         "model": [models[i % len(models)][0] for i in range(entities)]})
    return write_bundle(rows, folder, run_id="bench", freq="h", levels=SPEC.levels, horizon=24, max_steps=0,
                        shard_size=shard_size)
