"""The promotion gate on a real registry: a worse challenger is kept out, one within tolerance promoted."""
from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from engine.tracking.publish import backtest_windows
from engine.tracking.registry import gate


def test_gate_keeps_a_worse_challenger_and_promotes_one_within_tolerance(published):
    config, _, _ = published
    client = MlflowClient(config.mlflow.tracking_uri)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    champion = client.get_model_version_by_alias("test-router", "champion")   # the published lake's
    source, first = champion.source, float(champion.tags["manymodels.aggregate.mase"])
    windows = champion.tags["manymodels.backtest"]
    assert windows == backtest_windows(config) and f"windows {config.backtest.windows}," in windows
    worse = mlflow.register_model(source, "test-router").version
    decision = gate(client, "test-router", str(worse), "mase", first * 1.10, tolerance=0.05, backtest=windows)
    assert not decision.promoted and decision.champion_value == pytest.approx(first)
    assert client.get_model_version_by_alias("test-router", "champion").version == champion.version
    assert str(client.get_model_version_by_alias("test-router", "challenger").version) == str(worse)
    close = mlflow.register_model(source, "test-router").version
    decision = gate(client, "test-router", str(close), "mase", first * 1.04, tolerance=0.05, backtest=windows)
    assert decision.promoted and "within the 5.0% tolerance" in decision.reason
    assert str(client.get_model_version_by_alias("test-router", "champion").version) == str(close)
    client.set_registered_model_alias("test-router", "champion", champion.version)   # restore for other tests


def test_a_champion_measured_on_other_backtest_windows_is_no_yardstick(published):
    """A config that changed `backtest` gives figures on other windows: a worse-looking one is not
    worse like for like, so the gate promotes it and says why."""
    config, _, _ = published
    client = MlflowClient(config.mlflow.tracking_uri)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    champion = client.get_model_version_by_alias("test-router", "champion")
    first = float(champion.tags["manymodels.aggregate.mase"])
    other = mlflow.register_model(champion.source, "test-router").version
    decision = gate(client, "test-router", str(other), "mase", first * 1.50, tolerance=0.05,
                    backtest="horizon 24; windows 7, step 1; years 0; refit 1; select best; scoring 2")
    assert decision.promoted and "was measured on other backtest windows" in decision.reason
    assert str(client.get_model_version_by_alias("test-router", "champion").version) == str(other)
    client.set_registered_model_alias("test-router", "champion", champion.version)   # restore for other tests
