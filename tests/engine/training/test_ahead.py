"""Batched gpu_additive fits inside a training task give, bit for bit, the per-entity path's results."""
from __future__ import annotations

import dataclasses

import pandas as pd
from threadpoolctl import threadpool_limits

from engine.config import EntitySearchConfig, parse_config
from engine.sources.synthetic import synthetic_panel
from engine.training import ahead
from engine.training.entity import TrainSpec, train_entity
from engine.training.tasks import train_bucket
from gpu import additive

CONFIG = parse_config({"name": "ahead", "source": {"kind": "synthetic", "exogenous": ["temperature"],
                                                   "synthetic": {"entities": 10, "periods": 24 * 21}},
                       "series": {"freq": "h", "season_lengths": [24, 168]}, "horizon": 24,
                       "backtest": {"windows": 2, "step": 24}, "models": ["gpu_additive", "seasonal_naive"],
                       "training": {"max_history": 336}})


def awkward_panel() -> pd.DataFrame:
    """Aligned entities plus the ones that do not batch alike: a later start, a gap in the
    target and in temperature, a constant series, one too short to backtest."""
    gold = synthetic_panel(CONFIG.source.synthetic)
    start = gold["ds"].min()
    late = (gold["entity_id"] == "entity_01") & (gold["ds"] < start + pd.Timedelta(days=4))
    gold = gold[~late].copy()
    gold.loc[(gold["entity_id"] == "entity_02") & gold["ds"].dt.day.eq(10), "y"] = None
    gold.loc[(gold["entity_id"] == "entity_03") & gold["ds"].dt.day.eq(12), "temperature"] = None
    gold.loc[gold["entity_id"] == "entity_04", "y"] = 7.0
    gold = gold[(gold["entity_id"] != "entity_05") | (gold["ds"] < start + pd.Timedelta(days=2))]
    return gold


def test_a_task_fits_gpu_additive_in_batches_with_the_per_entity_results_bit_for_bit(monkeypatch):
    spec = TrainSpec.from_config(CONFIG)
    gold = awkward_panel()
    calls = []
    fit_batch = additive.fit_batch
    monkeypatch.setattr(additive, "fit_batch", lambda t, y, *a, **k: calls.append(len(y)) or fit_batch(t, y, *a, **k))
    monkeypatch.setattr(ahead, "SLICE", 4)          # several slices: states do not leak between them

    with threadpool_limits(limits=1):
        alone = pd.concat([train_entity(group, spec) for _, group in gold.groupby("entity_id", sort=True)],
                          ignore_index=True)
    assert set(calls) == {1} and len(calls) > 20
    calls.clear()
    batched = train_bucket(gold, spec)

    columns = [c for c in alone.columns if c != "fit_seconds"]
    pd.testing.assert_frame_equal(batched[columns], alone[columns])        # models' bytes and forecasts too
    assert (alone["champion"] == "gpu_additive").any() and alone["status"].eq("fallback").sum() == 2
    assert max(calls) >= 3                                                # fits in batches of several
    assert sum(calls) < 2 * len(alone) * (CONFIG.backtest.windows + 1)   # none fitted twice over
    from engine.models.gpu_additive import _AHEAD
    assert not _AHEAD                                                    # nothing left behind


def test_only_candidates_with_one_set_of_hyperparameters_are_fitted_ahead():
    """A per-entity search picks each entity's own hyperparameters: nothing to batch by."""
    assert ahead.ahead_candidates(TrainSpec.from_config(CONFIG)) == ["gpu_additive"]
    searched = dataclasses.replace(CONFIG, tuning=dataclasses.replace(
        CONFIG.tuning, per_entity=EntitySearchConfig(models=["gpu_additive"])))
    assert ahead.ahead_candidates(TrainSpec.from_config(searched)) == []
