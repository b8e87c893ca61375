"""Spark (delta-spark) and delta-rs on the same tables: same rows, same versions, same results."""
from __future__ import annotations

import pandas as pd
import pytest

from engine.lake import GOLD_SERIES, SILVER_SERIES, DeltaRsLake, SparkLake, bronze_table
from engine.backends.local import LocalBackend
from engine.backends.spark import SparkBackend
from engine.medallion.pipeline import ingest
from tests.conftest import csv_config, messy_rows

pytestmark = pytest.mark.spark


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["entity_id", "ds"]).reset_index(drop=True)


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pd.DataFrame(messy_rows()).to_csv(folder / "day1.csv", index=False)
    return folder


def test_spark_backend_matches_the_local_backend_and_readers_agree(spark, tmp_path, inputs):
    local_cfg = csv_config(tmp_path / "local", inputs)
    spark_cfg = csv_config(tmp_path / "spark", inputs)
    local_report = ingest(local_cfg, LocalBackend(local_cfg.lake), progress=lambda _: None)
    spark_report = ingest(spark_cfg, SparkBackend(spark, spark_cfg.lake), progress=lambda _: None)
    assert spark_report.silver == local_report.silver and spark_report.gold == local_report.gold

    for cfg in (local_cfg, spark_cfg):          # each table read by both engines
        rs, sp = DeltaRsLake(cfg.lake), SparkLake(spark, cfg.lake)
        for table in (bronze_table("csv"), SILVER_SERIES, GOLD_SERIES):
            assert rs.version(table) == sp.version(table)
        via_spark = sp.read(GOLD_SERIES).toPandas()
        via_rs = rs.read(GOLD_SERIES)
        pd.testing.assert_frame_equal(canonical(via_spark)[via_rs.columns], canonical(via_rs), check_dtype=False)

    local_gold = canonical(DeltaRsLake(local_cfg.lake).read(GOLD_SERIES))
    spark_gold = canonical(DeltaRsLake(spark_cfg.lake).read(GOLD_SERIES))
    pd.testing.assert_frame_equal(local_gold, spark_gold)


def test_spark_ingest_is_idempotent_and_time_travels(spark, tmp_path, inputs):
    cfg = csv_config(tmp_path, inputs)
    frames = SparkBackend(spark, cfg.lake)
    first = ingest(cfg, frames, progress=lambda _: None)
    again = ingest(cfg, frames, progress=lambda _: None)
    assert again.new_batches == 0 and again.gold_version == first.gold_version == 0
    pd.DataFrame([{"meter": "A", "time": "2024-01-01 00:00", "kw": "777", "temp": "20"}]).to_csv(
        inputs / "fix.csv", index=False)
    later = ingest(cfg, frames, progress=lambda _: None)
    assert later.gold_version == 1
    lake = SparkLake(spark, cfg.lake)
    def first_value(df):
        return df.filter("entity_id = 'A'").orderBy("ds").first()["y"]
    assert first_value(lake.read(GOLD_SERIES, version=1)) == 777.0
    assert first_value(lake.read(GOLD_SERIES, version=0)) != 777.0
    assert lake.read(bronze_table("csv")).count() == len(messy_rows()) + 1
    batch = lake.read(bronze_table("csv")).first()["_batch_id"]
    assert frames.holds_batch(bronze_table("csv"), batch) and not frames.holds_batch(bronze_table("csv"), "0" * 32)



def test_replacing_a_run_rewrites_only_its_own_files_and_keeps_every_other_run(spark, tmp_path):
    import pyarrow as pa
    from pyspark.sql import functions as F

    schema = pa.schema([("run_id", pa.string()), ("entity_id", pa.string()), ("v", pa.float64())])
    lake = SparkLake(spark, tmp_path / "lake")

    def run(run_id: str, entities: int, value: float) -> None:
        rows = pd.DataFrame({"run_id": run_id, "entity_id": [f"e{i}" for i in range(entities)], "v": value})
        lake.replace_run("gold/models", spark.createDataFrame(rows), schema, ("run_id", "entity_id"), run_id)

    def files() -> dict[str, set[str]]:
        found = (lake.read("gold/models").select("run_id", F.input_file_name().alias("file")).distinct().toPandas())
        return {r: set(group["file"]) for r, group in found.groupby("run_id")}

    for name in ("a", "b", "c"):
        run(name, 50, 1.0)
    before = files()
    run("d", 50, 1.0)
    run("b", 30, 2.0)                   # b retried with fewer entities: its own rows replaced
    after = files()
    # Other runs' files are neither rewritten nor shared (a MERGE copied them all, every run).
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert not after["b"] & before["b"] and not after["d"] & (after["a"] | after["b"] | after["c"])
    table = lake.read("gold/models").toPandas()
    assert table.groupby("run_id").size().to_dict() == {"a": 50, "b": 30, "c": 50, "d": 50}
    assert set(table[table["run_id"] == "b"]["v"]) == {2.0} and set(table[table["run_id"] != "b"]["v"]) == {1.0}
    local = DeltaRsLake(tmp_path / "lake").read("gold/models")          # delta-rs agrees
    assert local.groupby("run_id").size().to_dict() == {"a": 50, "b": 30, "c": 50, "d": 50}
    with pytest.raises(Exception, match="(?i)replaceWhere|does not conform|DELTA_REPLACE_WHERE"):
        rows = pd.DataFrame({"run_id": ["x"], "entity_id": ["e0"], "v": [0.0]})    # a row of another run
        lake.replace_run("gold/models", spark.createDataFrame(rows), schema, ("run_id", "entity_id"), "a")


def test_an_insert_merge_also_matches_the_few_batch_ids_of_its_rows_as_literals():
    """Delta skips the bronze files of other batches by their statistics only when the MERGE
    condition names the batch ids as literals; keys with many values, or not strings, are joined only."""
    from engine.lake import insert_predicate
    rows = pd.DataFrame({"_batch_id": ["a", "a", "b'c"], "_row": [0, 1, 0]})
    assert insert_predicate(rows, ["_batch_id", "_row"]) == (
        "t._batch_id IN ('a', 'b''c') AND t._batch_id = s._batch_id AND t._row = s._row")
    many = pd.DataFrame({"key": [f"k{i}" for i in range(65)]})
    assert insert_predicate(many, ["key"]) == "t.key = s.key"
