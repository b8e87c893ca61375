"""Hierarchies: the declared tree checked in one line, and forecasts reconciled to add up exactly."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.hierarchy import RECONCILERS, Backtest, Tree, incoherence, reconcile
from tests.conftest import small_config

THREE_LEVELS = {"system": ["north", "south"], "north": ["f1", "f2"], "south": ["f3", "f4"]}


@pytest.mark.parametrize("parents, message", [
    ({"a": ["b", "c"], "d": ["b"]}, "'b' is listed under two parents, 'a' and 'd'"),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, "has a cycle: b -> a -> c -> b \\(child -> parent\\)"),
    ({"a": ["a"]}, "'a' lists itself as its own child"),
    ({"a": []}, "'a' lists no children"),
])
def test_a_bad_hierarchy_is_one_config_error_naming_it(parents, message):
    with pytest.raises(ConfigError, match=f"hierarchy.parents' {message}"):
        small_config(hierarchy={"parents": parents})
    with pytest.raises(ConfigError, match="hierarchy.methods.*unknown: \\['magic'\\]"):
        small_config(hierarchy={"parents": THREE_LEVELS, "methods": ["magic"]})
    for tolerance in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="hierarchy.tolerance' must be a fraction of the parent's load"):
            small_config(hierarchy={"parents": THREE_LEVELS, "tolerance": tolerance})
    with pytest.raises(ConfigError, match="hierarchy.tolerance' must be a number, got '1%'"):
        small_config(hierarchy={"parents": THREE_LEVELS, "tolerance": "1%"})


def test_an_entity_the_data_lacks_is_named():
    config = small_config(hierarchy={"parents": THREE_LEVELS})
    lengths = {n: 24 * 28 for n in ("system", "north", "south", "f1", "f2", "f3")}
    with pytest.raises(ConfigError, match="hierarchy.parents' names 1 entity not in gold.series: 'f4'"):
        config.check_against_data(lengths)


def test_the_summing_matrix_lists_aggregates_top_down_then_the_bottom():
    summing = Tree(THREE_LEVELS).summing("system")
    assert summing.nodes == ["system", "north", "south", "f1", "f2", "f3", "f4"]
    np.testing.assert_array_equal(summing.S[:3], [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(summing.S[3:], np.eye(4))
    assert [list(t) for t in summing.tags.values()] == [[0], [1, 2], [3, 4, 5, 6]]


def coherent_panel(seed: int, noise: float):
    """Base forecasts with noise of each node's own (so they do not add up) and the actuals they aim at."""
    summing = Tree(THREE_LEVELS).summing("system")
    rng = np.random.default_rng(seed)
    t = np.arange(24)
    bottom = np.vstack([100 + 10 * i + 20 * np.sin(2 * np.pi * t / 24 + i) for i in range(4)])
    actual = summing.S @ (bottom + rng.normal(0, 2, bottom.shape))
    return summing, actual + rng.normal(0, noise, actual.shape) * np.sqrt(summing.S.sum(axis=1))[:, None], actual


@pytest.mark.parametrize("method", RECONCILERS)
def test_every_method_makes_children_sum_to_their_parents_exactly(method):
    summing, base, _ = coherent_panel(0, 5.0)
    windows = [Backtest(*coherent_panel(w + 1, 5.0)[1:]) for w in range(3)]
    for nonnegative in (False, True):
        result = reconcile(summing, base, windows, [method], nonnegative=nonnegative)
        if method == "erm" and nonnegative:
            # Fitted on three small windows, ERM sends a feeder below zero: out, and bottom-up instead.
            assert result.method == "bottom_up"
            assert result.failures["erm"] == "gave values below zero for a nonnegative hierarchy"
        else:
            assert result.method == method and not result.failures
        mean = result.mean
        np.testing.assert_allclose(mean[0], mean[1] + mean[2], rtol=1e-12)
        np.testing.assert_allclose(mean[1], mean[3] + mean[4], rtol=1e-12)
        np.testing.assert_allclose(mean[2], mean[5] + mean[6], rtol=1e-12)
        assert not nonnegative or (mean >= 0).all()


def test_the_method_with_the_best_backtest_is_chosen_and_beats_unreconciled():
    summing, base, actual = coherent_panel(0, 5.0)
    windows = [Backtest(*coherent_panel(w + 1, 5.0)[1:]) for w in range(3)]
    result = reconcile(summing, base, windows, list(RECONCILERS), nonnegative=True)
    assert result.method == min(result.scores, key=result.scores.get)
    assert result.scores[result.method] < 1.0           # better than each entity forecast alone
    # On fresh data too: reconciling the noisy base forecasts brings them closer to the actuals.
    assert np.sqrt(np.mean((result.mean - actual) ** 2)) < np.sqrt(np.mean((base - actual) ** 2))


def test_without_backtests_the_tree_is_built_bottom_up_and_says_so():
    summing, base, _ = coherent_panel(0, 5.0)
    result = reconcile(summing, base, [], list(RECONCILERS), nonnegative=False)
    assert result.method == "bottom_up" and "no backtest window" in result.note
    np.testing.assert_allclose(result.mean[3:], base[3:])
    assert set(result.failures) == set(RECONCILERS) and not result.scores


def test_large_trees_leave_out_the_methods_that_need_node_by_node_matrices(monkeypatch):
    import engine.hierarchy as hierarchy
    monkeypatch.setattr(hierarchy, "MAX_DENSE_NODES", 5)     # the 7-node tree counts as large
    summing, base, _ = coherent_panel(0, 5.0)
    windows = [Backtest(*coherent_panel(w + 1, 5.0)[1:]) for w in range(3)]
    result = reconcile(summing, base, windows, list(RECONCILERS), nonnegative=True)
    assert set(result.scores) == {"bottom_up", "top_down"} and result.method in result.scores
    assert result.failures["mint_shrink"] == "the tree has 7 entities; mint_shrink is used up to 5"


def test_incoherence_is_each_parents_gap_from_the_sum_of_its_bottom_nodes():
    summing, _, actual = coherent_panel(0, 5.0)
    assert incoherence(summing, [Backtest(actual, actual)]) == {"system": 0.0, "north": 0.0, "south": 0.0}
    # North also meters 5% losses its feeders do not (so does the system above it); an hour a feeder
    # lacks is left out, and no window measures nothing.
    metered = actual.copy()
    metered[[0, 1]] += 0.05 * actual[1]
    metered[3, 5] = np.nan
    gaps = incoherence(summing, [Backtest(metered, metered), Backtest(actual, actual)])
    kept = np.isfinite(metered[3])
    losses = np.concatenate([0.05 * actual[1][kept], np.zeros(24)])
    assert gaps["south"] == 0.0
    assert gaps["north"] == pytest.approx(losses.mean() / np.concatenate([metered[1][kept], actual[1]]).mean())
    assert gaps["system"] == pytest.approx(losses.mean() / np.concatenate([metered[0][kept], actual[0]]).mean())
    assert incoherence(summing, []) == {}
