"""Batch scoring with the champion into gold.forecasts, locally and on Spark, and its clear errors."""
from __future__ import annotations

import pandas as pd
import pytest
from deltalake import DeltaTable

from engine.lake import DeltaRsLake
from engine.scoring.batch import score
from engine.training.tables import FORECASTS
from tests.conftest import run_forecasts


def test_score_merges_the_champion_forecasts_into_gold(published):
    config, report, _ = published
    trained = run_forecasts(config, report.run_id)
    DeltaTable(DeltaRsLake(config.lake).path(FORECASTS)).delete(f"run_id = '{report.run_id}'")
    assert run_forecasts(config, report.run_id).empty
    result = score(config, backend="local")
    assert result.rows == len(trained) == 4 * 24 and result.run_id == report.run_id
    pd.testing.assert_frame_equal(run_forecasts(config, report.run_id), trained)
    again = score(config, backend="local")          # MERGE: a rerun adds no rows
    assert again.rows == len(trained) and len(run_forecasts(config, report.run_id)) == len(trained)

@pytest.mark.spark
def test_score_on_spark_for_selected_entities(published, spark):
    config, report, _ = published
    trained = run_forecasts(config, report.run_id)
    picked = sorted(trained["entity_id"].unique())[:2]
    DeltaTable(DeltaRsLake(config.lake).path(FORECASTS)).delete(
        f"run_id = '{report.run_id}' AND entity_id = '{picked[0]}'")
    result = score(config, entities=picked, backend="spark", spark=spark)
    assert result.entities == 2 and result.rows == 48
    pd.testing.assert_frame_equal(run_forecasts(config, report.run_id), trained)

def test_unknown_model_or_entity_is_a_clear_error(published):
    from engine.errors import ConfigError
    config, _, _ = published
    with pytest.raises(ConfigError, match="not in models:/test-router@champion"):
        score(config, entities=["nope"], backend="local")
    with pytest.raises(ConfigError, match="cannot load models:/test-router@staging"):
        score(config, model_uri="models:/test-router@staging", backend="local")
