"""The local backend survives a worker process that dies (OOM killer, segfault): the task is retried."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
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


@pytest.mark.parametrize("ids", ["strings", "categories"])
def test_extents_and_the_plan_tags_are_the_grouped_and_merged_ones(ids):
    """Grouped by integer codes and joined by position, as a groupby by id and a merge give them:
    unsorted rows, missing values, an entity never observed, one the plan leaves out; the same
    from ids held as a Categorical (`read_gold`'s), unsorted and with a category no row has."""
    rng = np.random.default_rng(5)
    ds = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
    gold = pd.DataFrame({"entity_id": np.repeat(["b", "a", "c", "d"], 30), "ds": np.tile(ds, 4),
                         "y": rng.normal(10, 2, 120)}).sample(frac=1, random_state=1).reset_index(drop=True)
    gold.loc[gold.sample(20, random_state=2).index, "y"] = np.nan
    gold.loc[gold["entity_id"] == "c", "y"] = np.nan
    backend = LocalBackend(CONFIG.lake)
    seen = gold[gold["y"].notna()]
    observed = seen.groupby("entity_id")["ds"].agg(["count", "max"]).join(
        seen.groupby("entity_id")["y"].agg(["mean", "std"]))
    expected = gold.groupby("entity_id").size().rename("rows").to_frame().join(observed, how="left").rename(
        columns={"count": "observed", "max": "last_observed"}).reset_index().assign(
        observed=lambda f: f["observed"].fillna(0).astype(int))
    given = gold if ids == "strings" else gold.assign(
        entity_id=pd.Categorical(gold["entity_id"], categories=["d", "zz", "b", "a", "c"]))
    extents = backend.extents(given)
    pd.testing.assert_frame_equal(extents.drop(columns=["mean", "std"]), expected.drop(columns=["mean", "std"]))
    # Sums by code rather than the groupby's compensated sums: the same to rounding, NaN alike.
    pd.testing.assert_frame_equal(extents[["mean", "std"]], expected[["mean", "std"]], rtol=1e-12)
    assert extents.set_index("entity_id").loc["c", ["observed", "mean", "std"]].isna().tolist() == [False, True, True]

    mapping = pd.DataFrame({"entity_id": ["a", "b", "c"], "bucket": np.array([0, 1, 0], dtype="int32"),
                            "cutoff": [ds[10], pd.NaT, ds[29]]})
    merged = gold.merge(mapping, on="entity_id")
    merged = merged[merged["cutoff"].isna() | (merged["ds"] >= merged["cutoff"])].drop(columns="cutoff")
    tagged = backend.tag_with_plan(given, mapping)
    pd.testing.assert_frame_equal(tagged.assign(entity_id=tagged["entity_id"].astype(object)),
                                  merged.reset_index(drop=True))
