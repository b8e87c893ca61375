"""A three-level hierarchy (feeders -> substations -> system) through training on the local and
Spark backends: published forecasts add up exactly, and the routing model serves what is published."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from engine.backends import backend_for
from engine.errors import ConfigError
from engine.hierarchy import Backtest
from engine.lake import DeltaRsLake
from engine.medallion.pipeline import ingest
from engine.routing.bundle import write_bundle
from engine.routing.pyfunc import save_routing_model
from engine.training.job import train
from engine.training.reconcile import OBSERVED, TreeReport, band_coverage
from engine.training.tables import MODELS
from tests.conftest import make_config, run_forecasts

PARENTS = {"system": ["north", "south"], "north": ["f1", "f2"], "south": ["f3", "f4"]}
HORIZON = 24


def write_feeders(folder) -> None:
    """Four feeders' hourly load (daily cycles of their own, noise) and the sums above them."""
    rng = np.random.default_rng(21)
    t = np.arange(24 * 28)
    ds = pd.date_range("2024-01-01", periods=len(t), freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    feeders = {f"f{i}": 50 + 10 * i + 15 * np.sin(2 * np.pi * (t + 3 * i) / 24) + rng.normal(0, 3, len(t))
               for i in range(1, 5)}
    load = {**feeders, "north": feeders["f1"] + feeders["f2"], "south": feeders["f3"] + feeders["f4"]}
    load["system"] = load["north"] + load["south"]
    folder.mkdir(parents=True, exist_ok=True)
    pd.concat(pd.DataFrame({"entity_id": name, "ds": ds, "y": y}) for name, y in load.items()).to_csv(
        folder / "load.csv", index=False)


SETTINGS = dict(horizon=HORIZON, backtest={"windows": 3, "step": HORIZON, "metric": "mase"},
                models=["seasonal_naive", "theta", "ets"], training={"workers": 2})


@pytest.fixture(scope="module")
def hierarchy_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("hierarchy")
    write_feeders(root / "in")
    SETTINGS["source"] = {"kind": "csv", "path": str(root / "in")}
    config = make_config(root / "lake", **SETTINGS, hierarchy={"parents": PARENTS})
    ingest(config, backend_for(config, "local"))
    return config


def assert_own_coverage(tree, models: pd.DataFrame, nodes: list[str]) -> None:
    """The tree's coverage before reconciling is each champion's own, as its scores had it (the bands
    kept are the ones scored); gold.models' scores now hold the reconciled bands' coverage."""
    scores = models.set_index("entity_id")["scores"].map(json.loads)
    assert set(tree.coverage) == {80, 95}
    for level, (own, reconciled) in tree.coverage.items():
        assert own == pytest.approx(np.mean([scores[n][f"unreconciled_coverage_{level}"] for n in nodes]), rel=1e-12)
        assert reconciled == pytest.approx(np.mean([scores[n][f"coverage_{level}"] for n in nodes]), rel=1e-12)


def assert_adds_up(forecasts: pd.DataFrame) -> None:
    wide = {c: forecasts.pivot(index="ds", columns="entity_id", values=c) for c in ("yhat", "yhat_lower_80")}
    yhat = wide["yhat"]
    for parent, children in PARENTS.items():
        np.testing.assert_allclose(yhat[parent], yhat[children].sum(axis=1), rtol=1e-9)
    assert (wide["yhat_lower_80"] <= yhat + 1e-9).all().all()


@pytest.mark.spark
def test_a_three_level_hierarchy_is_published_coherent_on_both_backends_and_served_as_published(
        hierarchy_config, spark, tmp_path):
    config = hierarchy_config
    alone = train(make_config(config.lake.root, **SETTINGS), backend="local", run_id="tree-alone")
    assert not alone.hierarchy
    with pytest.raises(AssertionError):      # each entity forecast on its own does not add up
        assert_adds_up(run_forecasts(config, "tree-alone"))
    local = train(config, backend="local", run_id="tree-local")
    published = run_forecasts(config, "tree-local")
    assert len(published) == 7 * HORIZON and set(published["entity_id"]) == {*PARENTS, "f1", "f2", "f3", "f4"}
    assert_adds_up(published)
    (tree,) = local.hierarchy
    assert tree.root == "system" and tree.entities == 7 and tree.method in tree.scores
    assert tree.method == min(tree.scores, key=tree.scores.get)
    assert tree.describe().startswith(f"hierarchy system (7 entities): reconciled by {tree.method} (backtest RMSE")
    assert (published["reconciliation"] == tree.method).all()
    models = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", "tree-local")])
    assert [json.loads(n)[-1] for n in models["notes"]] == [tree.describe()] * 7     # recorded as data too
    assert_own_coverage(tree, models, [*PARENTS, "f1", "f2", "f3", "f4"])
    assert "; interval coverage in backtests, own -> reconciled: 80% " in tree.describe()
    assert local.coverage() == {lvl: pytest.approx(moved) for lvl, (_, moved) in tree.coverage.items()}

    spark_report = train(config, backend="spark", run_id="tree-spark", spark=spark)
    on_spark = run_forecasts(config, "tree-spark")
    assert spark_report.hierarchy[0].method == tree.method
    pd.testing.assert_frame_equal(on_spark.drop(columns="run_id"), published.drop(columns="run_id"))

    # The routing model, loaded by MLflow, serves the reconciled forecasts and says so.
    write_bundle(models, tmp_path / "bundle", run_id="tree-local", freq=config.series.freq,
                 levels=tuple(config.training.levels), horizon=HORIZON, max_steps=0, shard_size=3)
    save_routing_model(tmp_path / "bundle", tmp_path / "model", cache_size=8)
    router = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    request = published[["entity_id", "ds"]].assign(ds=published["ds"].dt.tz_localize(None))
    served = router.predict(request)
    for column in ("yhat", "yhat_lower_80", "yhat_upper_95"):
        # To float32's precision: statsforecast computes parts of a restored ETS/Theta forecast in it.
        np.testing.assert_allclose(served[column].to_numpy(), published[column].to_numpy(), rtol=1e-5)
    assert (served["reconciliation"] == tree.method).all()
    # Past the published horizon the entity's own forecast is served, and not called reconciled.
    later = pd.DataFrame({"entity_id": ["f1"], "ds": [request["ds"].max() + pd.Timedelta(hours=HORIZON)]})
    assert router.predict(later)["reconciliation"].isna().all()


def test_a_hierarchy_naming_an_entity_gold_lacks_stops_training_in_one_line(hierarchy_config):
    config = make_config(hierarchy_config.lake.root, **{**SETTINGS, "models": ["seasonal_naive"], "hierarchy": {
        "parents": {**PARENTS, "system": ["north", "south", "east"]}}})
    with pytest.raises(ConfigError, match="hierarchy.parents' names 1 entity not in gold.series: 'east'"):
        train(config, backend="local", run_id="tree-unknown")


def test_a_parent_whose_history_is_not_its_childrens_sum_is_left_unreconciled_and_named(hierarchy_config):
    # A declaration that forgot a feeder: the system's load is not north + f3.
    forgot = {"system": ["north", "f3"], "north": ["f1", "f2"]}
    settings = {**SETTINGS, "models": ["seasonal_naive"]}
    config = make_config(hierarchy_config.lake.root, **settings, hierarchy={"parents": forgot})
    (tree,) = train(config, backend="local", run_id="tree-forgot").hierarchy
    assert not tree.method and tree.gap > 0.2
    assert tree.describe().startswith(f"hierarchy system (5 entities): not reconciled, its history does not add up: "
                                      f"system is {tree.gap:.1%} away from the sum of the 3 entities under it")
    published = run_forecasts(config, "tree-forgot").pivot(index="ds", columns="entity_id", values="yhat")
    assert run_forecasts(config, "tree-forgot")["reconciliation"].isna().all()
    notes = DeltaRsLake(config.lake).read(MODELS, filters=[("run_id", "=", "tree-forgot")]).set_index("entity_id")
    assert json.loads(notes.loc["north", "notes"])[-1] == tree.describe()
    outside = [line for n in notes.loc[["south", "f4"], "notes"] for line in json.loads(n)]   # not in the tree
    assert outside and not any(line.startswith("hierarchy") for line in outside)
    assert not np.allclose(published["system"], published[["north", "f3"]].sum(axis=1), rtol=1e-3)

    # A tolerance above the gap (a parent that meters losses, say) reconciles it all the same.
    # Conformal bands here: their coverage is held out from each window, as in the scores.
    conformal = {**settings, "training": {"workers": 2, "intervals": "conformal"}}
    loose = make_config(hierarchy_config.lake.root, **conformal,
                        hierarchy={"parents": forgot, "tolerance": round(tree.gap + 0.05, 2)})
    (tree,) = train(loose, backend="local", run_id="tree-loose").hierarchy
    assert_own_coverage(tree, DeltaRsLake(loose.lake).read(MODELS, filters=[("run_id", "=", "tree-loose")]),
                        ["system", "north", "f1", "f2", "f3"])
    assert tree.method and f"; its history adds up to within {tree.gap:.2%}" in tree.describe()
    published = run_forecasts(loose, "tree-loose").pivot(index="ds", columns="entity_id", values="yhat")
    np.testing.assert_allclose(published["system"], published[["north", "f3"]].sum(axis=1), rtol=1e-9)


def test_a_trees_line_says_why_a_listed_method_was_left_out():
    tree = TreeReport("system", [*PARENTS, "f1", "f2", "f3", "f4"], method="bottom_up",
                      scores={"top_down": 1.02, "bottom_up": 0.98},
                      failures={"erm": "gave values below zero for a nonnegative hierarchy"}, gap=0.0)
    assert tree.describe() == ("hierarchy system (7 entities): reconciled by bottom_up (backtest RMSE relative to "
                               "unreconciled: bottom_up 0.980, top_down 1.020); its history adds up to within 0.00%; "
                               "erm out: gave values below zero for a nonnegative hierarchy")


def test_band_coverage_moves_each_band_with_its_reconciled_mean_and_floors_it():
    # Two entities, two windows of four hours; the second entity is floored at zero, its last hour is
    # missing in the first window, and the second window's first hour was imputed (not scored).
    actual = np.array([[10.0, 12.0, 9.0, 11.0], [1.0, 0.0, 2.0, np.nan]])
    forecast = np.array([[10.0, 10.0, 10.0, 10.0], [1.0, 1.0, 1.0, 1.0]])
    band = np.stack([forecast - 1.5, forecast + 1.5], axis=1)        # (entities, lower/upper, hours)
    reconciled = forecast + np.array([[2.0], [-2.0]])
    observed = np.isfinite(actual)
    windows = [Backtest(forecast, actual), Backtest(forecast, np.nan_to_num(actual, nan=1.0))]
    bands = [{OBSERVED: observed, 80: band}, {OBSERVED: np.array([[False] + [True] * 3] * 2), 80: band}]
    coverage = band_coverage(windows, bands, [reconciled] * 2, np.array([-np.inf, 0.0]))
    # First window. Own: entity 1 covers 10, 9, 11 (not 12): 3/4; entity 2 covers 1, 0, 2: 3/3. Moved:
    # entity 1's band is 10.5..13.5: 12, 11: 2/4; entity 2's is -2.5..0.5 floored to 0..0.5: 0: 1/3.
    # Second window, hours 2-4. Own: 2/3 and 3/3; moved: 12, 11: 2/3 and 0: 1/3.
    assert set(coverage) == {80}
    np.testing.assert_allclose(coverage[80], [[(3 / 4 + 2 / 3) / 2, 1], [(2 / 4 + 2 / 3) / 2, 1 / 3]])
    assert band_coverage(windows, [{OBSERVED: observed}] * 2, [reconciled] * 2, np.zeros(2)) == {}
