"""The Spark backend: retries the task of a dead Python worker, stages large frames, sizes per-entity
tasks by the rows they hold."""
from __future__ import annotations

import pytest

from engine.backends.local import LocalBackend
from engine.backends.spark import SparkBackend
from engine.training.job import tag_with_plan
from tests.engine.backends.test_local import CONFIG, die_on_first_attempt, planned


@pytest.mark.spark
def test_spark_retries_the_task_of_a_dead_python_worker(spark):
    gold, extents, plan, spec = planned()
    frame = spark.createDataFrame(tag_with_plan(LocalBackend(CONFIG.lake), gold, extents, plan, spec))
    results = SparkBackend(spark, task=die_on_first_attempt).train(frame, plan, spec).toPandas()
    assert sorted(results["entity_id"]) == [f"entity_{i}" for i in range(4)]
    attempts = results.set_index("entity_id")["attempt"]
    assert attempts["entity_0"] >= 1
    assert (results["status"] == "ok").all()


@pytest.mark.spark
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_large_frame_reaches_spark_through_staged_files_with_the_types_create_data_frame_gives(
        spark, tmp_path, s3_server, monkeypatch, where):
    """A bronze batch above STAGE_ROWS goes to Spark as Parquet files on the lake's own store (no
    6.7M rows through the driver's JVM heap): the table ends up exactly as the small path writes it
    (naive and UTC timestamps, strings, a column without any value, integers), and the staging
    files are gone."""
    import pandas as pd

    from engine.backends import spark as spark_backend
    from engine.config import LakeConfig, StorageConfig
    from engine.lake import DeltaRsLake
    from engine.storage import LakeStore

    rows = 2_500
    frame = pd.DataFrame({"entity_id": [f"e{i % 7}" for i in range(rows)],
                          "ds": pd.date_range("2024-01-01", periods=rows, freq="h"),       # naive
                          "value": [str(i * 0.5) for i in range(rows)], "empty": [None] * rows,
                          "_ingested_at": pd.Series(pd.Timestamp("2024-02-01 12:00:00.123456", tz="UTC"),
                                                    index=range(rows), dtype="datetime64[us, UTC]"),
                          "_row": range(rows)})

    def lake(name: str) -> LakeConfig:
        if where == "local":
            return LakeConfig(root=str(tmp_path / name))
        return LakeConfig(root=s3_server.new_root(name), storage=StorageConfig(**s3_server.storage()))

    small, staged = lake("small"), lake("staged")
    assert SparkBackend(spark, small).insert_new("bronze/x", frame, ["_row"]) == rows
    monkeypatch.setattr(spark_backend, "STAGE_ROWS", 1_000)          # three staged files
    backend = SparkBackend(spark, staged)
    put, staged_files = LakeStore.put_object, []
    monkeypatch.setattr(LakeStore, "put_object",
                        lambda store, name, data: staged_files.append(name) or put(store, name, data))
    assert backend.insert_new("bronze/x", frame, ["_row"]) == rows
    assert [name.rsplit("/", 1)[1] for name in staged_files] == [f"part-{i:05d}.parquet" for i in range(3)]
    assert backend.insert_new("bronze/x", frame.iloc[:1_500], ["_row"]) == 0      # a MERGE: nothing new
    one, two = (backend.lake.read("bronze/x") for backend in (SparkBackend(spark, small), backend))
    assert one.schema == two.schema
    assert one.orderBy("_row").collect() == two.orderBy("_row").collect()
    assert DeltaRsLake(staged).read("bronze/x").shape == (rows, 6)
    leftovers = [p for p in (tmp_path / "staged" / "_staging").rglob("*") if p.is_file()] if where == "local" else \
        [m for chunk in backend.lake.store._object_store().list("_staging/") for m in chunk]
    assert leftovers == []


@pytest.mark.spark
def test_a_per_entity_step_of_known_size_gets_a_task_per_task_rows_with_the_same_result(spark, monkeypatch):
    """100,000 entities' gold (67M rows) in spark.shuffle_partitions=4 tasks made 17M-row cached
    partitions that ran local mode's JVM out of memory: a step whose row count is known gets at
    least one task per TASK_ROWS rows, in one shuffle, with the rows the plain step gives."""
    import pandas as pd
    import pyarrow as pa

    from engine.backends import spark as spark_backend

    monkeypatch.setattr(spark_backend, "TASK_ROWS", 100)
    frame = spark.createDataFrame(pd.DataFrame({"entity_id": [f"e{i % 50}" for i in range(1_000)],
                                                "y": [float(i) for i in range(1_000)]}))
    schema = pa.schema([("entity_id", pa.string()), ("rows", pa.int64()), ("total", pa.float64())])

    def per_entity(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"entity_id": [rows["entity_id"].iloc[0]], "rows": [len(rows)],
                             "total": [rows["y"].sum()]})

    backend = SparkBackend(spark)
    plain = backend.apply_by(frame, "entity_id", per_entity, schema)
    sized = backend.apply_by(frame, "entity_id", per_entity, schema, rows=1_000)
    assert sized.rdd.getNumPartitions() == 10 > plain.rdd.getNumPartitions()
    final = sized._jdf.queryExecution().executedPlan().toString().split("Initial Plan")[0]
    assert final.count("Exchange") == 1
    expected = plain.toPandas().sort_values("entity_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(sized.toPandas().sort_values("entity_id").reset_index(drop=True), expected)
    assert expected["rows"].tolist() == [20] * 50
    # A size that fits the configured partitions changes nothing.
    assert backend.apply_by(frame, "entity_id", per_entity, schema, rows=150).rdd.getNumPartitions() \
        == plain.rdd.getNumPartitions()
